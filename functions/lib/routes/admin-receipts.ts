import * as z from 'zod/mini';
import { ADMIN_PATHS } from '../contract.js';
import { httpHandler, json, type LambdaHttpHandler } from '../http.js';
import { encodeId } from '../ids.js';
import { isReceiptId, listReceipts, RECEIPTS_DEFAULT_LIMIT, RECEIPTS_MAX_LIMIT } from '../store/erasure.js';
import { cursorParam, intOr, intParam, openCursor, parseQuery, sealCursor, verifyAdmin } from './admin-common.js';
import { receiptBody } from './admin-erase.js';
import { handlerOptions, type RouteDeps } from './deps.js';

const query = z.strictObject({
  limit: z.optional(intParam(1, RECEIPTS_MAX_LIMIT)),
  cursor: z.optional(cursorParam()),
});

/**
 * `GET /admin/erasures?limit=&cursor=` — the organization's erasure receipts, newest first (store/erasure.ts
 * `listReceipts`, one Query per page): `200 {erasures: [receipt…], nextCursor}`. `limit` 1–100 (default 50). The
 * cursor is sealed and bound to the organization like every admin cursor.
 */
export function adminReceiptsRoute(deps: RouteDeps): LambdaHttpHandler {
  return httpHandler(`GET ${ADMIN_PATHS.erasures}`, deps.logger, async (event, ctx) => {
    const admin = await verifyAdmin(deps, event, ctx);
    const q = parseQuery(event, query);
    const org = encodeId(admin.organizationId);
    const after =
      q.cursor === undefined
        ? undefined
        : await openCursor(deps, q.cursor, (p) => (p['k'] === 'erasures' && p['p'] === org && isReceiptId(p['after']) ? p['after'] : undefined));
    const page = await listReceipts(deps.store, admin.organizationId, { cursor: after, limit: intOr(q.limit, RECEIPTS_DEFAULT_LIMIT) }, { signal: ctx.signal });
    ctx.fields['listed'] = page.receipts.length;
    return json(200, {
      erasures: page.receipts.map(receiptBody),
      nextCursor: page.nextCursor === null ? null : await sealCursor(deps, { k: 'erasures', p: org, after: page.nextCursor }),
    });
  }, handlerOptions(deps));
}
