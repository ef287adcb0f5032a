import * as z from 'zod/mini';
import { ADMIN_PAGE_LIMITS, ADMIN_PATHS, ERRORS } from '../contract.js';
import { HttpError } from '../errors.js';
import { httpHandler, json, type LambdaHttpHandler } from '../http.js';
import { conversationKey } from '../ids.js';
import { isRunStartKey, listRuns, runState } from '../store/listing.js';
import { cursorParam, idParam, intOr, intParam, isoTime, objectField, openCursor, parseQuery, sealCursor, verifyAdmin } from './admin-common.js';
import { handlerOptions, type RouteDeps } from './deps.js';

const query = z.strictObject({
  agentId: idParam(),
  conversationId: idParam(),
  limit: z.optional(intParam(1, ADMIN_PAGE_LIMITS.runs.max)),
  cursor: z.optional(cursorParam()),
});

/** Default page size of `GET /admin/runs`. */
export const DEFAULT_RUNS_LIMIT = ADMIN_PAGE_LIMITS.runs.default;

/**
 * `GET /admin/runs?agentId=&conversationId=&limit=&cursor=` — one conversation's stored runs, highest run id
 * first: `200 {runs: [{runId, terminalStatus, bytes, storedBytes, createdAt, sha256, generation, state}],
 * nextCursor}` with `state` `latest` | `fenced` | `superseded` (store/listing.ts `runState`). One consistent
 * GetItem of HEAD and one Query of the conversation's partition per page. `404 not_found` when the
 * organization has no such conversation (no listed HEAD and no run: never written, or erased).
 */
export function adminRunsRoute(deps: RouteDeps): LambdaHttpHandler {
  return httpHandler(`GET ${ADMIN_PATHS.runs}`, deps.logger, async (event, ctx) => {
    const admin = await verifyAdmin(deps, event, ctx);
    const q = parseQuery(event, query);
    const scope = { organizationId: admin.organizationId, agentId: q.agentId, conversationId: q.conversationId };
    Object.assign(ctx.fields, { agentId: q.agentId, conversationId: q.conversationId });
    const pk = conversationKey(scope);
    const startKey =
      q.cursor === undefined
        ? undefined
        : await openCursor(deps, q.cursor, (p) => {
            const key = objectField(p, 'key');
            return p['k'] === 'runs' && key && isRunStartKey(pk, key) ? key : undefined;
          });
    const { head, page } = await listRuns(deps.store, scope, { limit: intOr(q.limit, DEFAULT_RUNS_LIMIT), startKey, signal: ctx.signal });
    // No such conversation: nothing listed and no run (an erased one keeps only an unlisted HEAD tombstone;
    // a cleared one stays listed, with no runs).
    if (!head?.listed && page.items.length === 0 && startKey === undefined) throw new HttpError(ERRORS.notFound);
    ctx.fields['listed'] = page.items.length;
    return json(200, {
      runs: page.items.map((r) => ({
        runId: r.runId,
        terminalStatus: r.status,
        bytes: r.bytes,
        storedBytes: r.storedBytes,
        createdAt: isoTime(r.createdAtMs),
        sha256: r.sha256,
        generation: r.generation,
        state: runState(r, head),
      })),
      nextCursor: page.next ? await sealCursor(deps, { k: 'runs', key: page.next }) : null,
    });
  }, handlerOptions(deps));
}
