import * as z from 'zod/mini';
import { ADMIN_PATHS, ERRORS } from '../contract.js';
import { HttpError } from '../errors.js';
import { httpHandler, json, type LambdaHttpHandler } from '../http.js';
import { getReceipt } from '../store/erasure.js';
import { parseQuery, verifyAdmin } from './admin-common.js';
import { receiptBody } from './admin-erase.js';
import { handlerOptions, type RouteDeps } from './deps.js';

/**
 * `GET /admin/erasures/{receiptId}` — one erasure receipt of the token's organization (store/erasure.ts
 * `getReceipt`): `200 {receiptId, scope, state, reason, actor, conversations, runs, objects, bytes, startedAt,
 * completedAt}` (`completedAt` null while running; a running receipt's counts are the sums so far). `404
 * not_found` for a receipt id of another organization, or anything that is not a receipt id.
 */
export function adminReceiptRoute(deps: RouteDeps): LambdaHttpHandler {
  return httpHandler(`GET ${ADMIN_PATHS.erasure}`, deps.logger, async (event, ctx) => {
    const admin = await verifyAdmin(deps, event, ctx);
    parseQuery(event, z.strictObject({}));
    const receiptId = event.pathParameters?.['receiptId'] ?? '';
    const receipt = await getReceipt(deps.store, admin.organizationId, receiptId, { signal: ctx.signal });
    if (!receipt) throw new HttpError(ERRORS.notFound);
    ctx.fields['receiptId'] = receipt.receiptId;
    return json(200, receiptBody(receipt));
  }, handlerOptions(deps));
}
