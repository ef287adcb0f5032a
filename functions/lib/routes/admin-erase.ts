import * as z from 'zod/mini';
import { ADMIN_PATHS, ERRORS } from '../contract.js';
import { HttpError } from '../errors.js';
import { header, httpHandler, json, type LambdaHttpHandler } from '../http.js';
import { eraseScope, type ErasureReceipt } from '../store/erasure.js';
import { decodeRequestBody, parseErasureScope } from '../validation.js';
import { parseQuery, verifyAdmin } from './admin-common.js';
import { handlerOptions, type RouteDeps } from './deps.js';

/** An erasure POST stops starting new work this long before the request deadline, to answer in time. */
export const ERASURE_ANSWER_RESERVE_MS = 5_000;

/** Largest decoded erasure request body, in bytes, whatever its Content-Encoding (it holds two ids: 413 past it). */
const MAX_BODY_BYTES = 16 * 1024;

/** The receipt as the operator API answers it (store/erasure.ts `ErasureReceipt`). */
export function receiptBody(r: ErasureReceipt): ErasureReceipt {
  return {
    receiptId: r.receiptId,
    scope: r.scope,
    state: r.state,
    reason: r.reason,
    actor: r.actor,
    conversations: r.conversations,
    runs: r.runs,
    objects: r.objects,
    bytes: r.bytes,
    startedAt: r.startedAt,
    completedAt: r.completedAt,
  };
}

/**
 * `POST /admin/erasures` `{agentId?, conversationId?}` — erases a conversation (both ids), an agent (`agentId`)
 * or the token's whole organization (`{}`), or resumes the running erasure of the same scope (store/erasure.ts
 * `eraseScope`). It works until {@link ERASURE_ANSWER_RESERVE_MS} before the request deadline: `200` with the
 * completed receipt, or `202` with the running one and `Location: /admin/erasures/<receiptId>` (POST again to
 * resume; the CLI repeats until done) — at once, having done nothing, while another call holds the erasure's lease. Errors: 400 invalid_json (not a JSON object), 400 invalid_erasure_scope
 * (unknown fields, malformed ids, `conversationId` without `agentId`), 415 for an unknown Content-Encoding, 413
 * for a body that decodes to more than 16 KiB (identity or not). Every
 * answer with a receipt writes an audit log line `{audit: "erase", actor, organizationId, agentId?,
 * conversationId?, receiptId, state}`.
 */
export function adminEraseRoute(deps: RouteDeps): LambdaHttpHandler {
  return httpHandler(`POST ${ADMIN_PATHS.erasures}`, deps.logger, async (event, ctx) => {
    const admin = await verifyAdmin(deps, event, ctx);
    parseQuery(event, z.strictObject({}));
    const text = await decodeRequestBody(event.body, event.isBase64Encoded, header(event, 'content-encoding'), MAX_BODY_BYTES);
    // The same bound whatever the coding (decodeRequestBody bounds only what it inflates): an identity body
    // of a megabyte — `{}` padded with whitespace is the whole organization — is refused like a gzip one.
    if (text !== undefined && Buffer.byteLength(text, 'utf8') > MAX_BODY_BYTES) throw new HttpError(ERRORS.tooLarge);
    const scope = parseErasureScope(text);
    Object.assign(ctx.fields, scope);
    const receipt = await eraseScope(
      deps.store,
      { organizationId: admin.organizationId, ...scope },
      { actor: admin.actor, budgetMs: Math.max(1, ctx.remainingMs() - ERASURE_ANSWER_RESERVE_MS), signal: ctx.signal },
    );
    Object.assign(ctx.fields, { receiptId: receipt.receiptId, state: receipt.state });
    deps.logger.info('audit', {
      audit: 'erase',
      actor: admin.actor ?? null,
      organizationId: admin.organizationId,
      ...scope,
      receiptId: receipt.receiptId,
      state: receipt.state,
    });
    if (receipt.state === 'completed') return json(200, receiptBody(receipt));
    return json(202, receiptBody(receipt), { location: `${ADMIN_PATHS.erasures}/${receipt.receiptId}` });
  }, handlerOptions(deps));
}
