import * as z from 'zod/mini';
import { ADMIN_PAGE_LIMITS, ADMIN_PATHS } from '../contract.js';
import { httpHandler, json, type LambdaHttpHandler } from '../http.js';
import { conversationPartition, isConversationStartKey, listConversations } from '../store/listing.js';
import { cursorParam, idParam, intOr, intParam, isoTime, objectField, openCursor, parseQuery, sealCursor, verifyAdmin } from './admin-common.js';
import { handlerOptions, type RouteDeps } from './deps.js';

const query = z.strictObject({
  agentId: z.optional(idParam()),
  limit: z.optional(intParam(1, ADMIN_PAGE_LIMITS.conversations.max)),
  cursor: z.optional(cursorParam()),
});

/** Default page size of `GET /admin/conversations`. */
export const DEFAULT_CONVERSATIONS_LIMIT = ADMIN_PAGE_LIMITS.conversations.default;

/**
 * `GET /admin/conversations?agentId=&limit=&cursor=` — the token's organization's conversations (or one
 * agent's), newest activity first: `200 {conversations: [{agentId, conversationId, lastActivityAt,
 * latestRunId, latestBytes, runs, bytes}], nextCursor}`; one Query of the `ByOrganization` (or `ByAgent`)
 * GSI per page. `limit` 1–100 (default 50). `nextCursor` is null on the last page. A cursor is bound to the
 * listing, the organization and the agent filter it was handed out for (else 400 invalid_cursor).
 */
export function adminConversationsRoute(deps: RouteDeps): LambdaHttpHandler {
  return httpHandler(`GET ${ADMIN_PATHS.conversations}`, deps.logger, async (event, ctx) => {
    const admin = await verifyAdmin(deps, event, ctx);
    const q = parseQuery(event, query);
    const partition = conversationPartition(admin.organizationId, q.agentId);
    if (q.agentId !== undefined) ctx.fields['agentId'] = q.agentId;
    const startKey =
      q.cursor === undefined
        ? undefined
        : await openCursor(deps, q.cursor, (p) => {
            const key = objectField(p, 'key');
            return p['k'] === 'conversations' && p['p'] === partition.value && key && isConversationStartKey(partition, key) ? key : undefined;
          });
    const page = await listConversations(deps.store, partition, { limit: intOr(q.limit, DEFAULT_CONVERSATIONS_LIMIT), startKey, signal: ctx.signal });
    ctx.fields['listed'] = page.items.length;
    return json(200, {
      conversations: page.items.map((c) => ({
        agentId: c.agentId,
        conversationId: c.conversationId,
        lastActivityAt: isoTime(c.lastActivityAtMs),
        latestRunId: c.latestRunId ?? null,
        latestBytes: c.latestBytes ?? null,
        runs: c.runs,
        bytes: c.bytes,
      })),
      nextCursor: page.next ? await sealCursor(deps, { k: 'conversations', p: partition.value, key: page.next }) : null,
    });
  }, handlerOptions(deps));
}
