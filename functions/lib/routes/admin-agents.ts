import * as z from 'zod/mini';
import { ADMIN_PAGE_LIMITS, ADMIN_PATHS } from '../contract.js';
import { httpHandler, json, type LambdaHttpHandler } from '../http.js';
import { encodeId } from '../ids.js';
import { isAgentSegment, listAgents } from '../store/listing.js';
import { cursorParam, intOr, intParam, openCursor, parseQuery, sealCursor, verifyAdmin } from './admin-common.js';
import { handlerOptions, type RouteDeps } from './deps.js';

const query = z.strictObject({
  limit: z.optional(intParam(1, ADMIN_PAGE_LIMITS.agents.max)),
  cursor: z.optional(cursorParam()),
});

/** Default page size of `GET /admin/agents` (each agent costs a registry Query and its counters' Queries). */
export const DEFAULT_AGENTS_LIMIT = ADMIN_PAGE_LIMITS.agents.default;

/**
 * `GET /admin/agents?limit=&cursor=` — the organization's agents with their counts: `200 {agents: [{agentId,
 * conversations, runs, bytes}], nextCursor}` (`conversations`: listed conversations; `runs`, `bytes`: the sums
 * of their HEAD counters — approximate, and eventually consistent like the GSI they come from). Agents come
 * in registry order (by encoded agent id, not by activity). `limit` 1–100 (default 20).
 */
export function adminAgentsRoute(deps: RouteDeps): LambdaHttpHandler {
  return httpHandler(`GET ${ADMIN_PATHS.agents}`, deps.logger, async (event, ctx) => {
    const admin = await verifyAdmin(deps, event, ctx);
    const q = parseQuery(event, query);
    const org = encodeId(admin.organizationId);
    const after =
      q.cursor === undefined
        ? undefined
        : await openCursor(deps, q.cursor, (p) => (p['k'] === 'agents' && p['p'] === org && isAgentSegment(p['after']) ? p['after'] : undefined));
    const page = await listAgents(deps.store, admin.organizationId, { limit: intOr(q.limit, DEFAULT_AGENTS_LIMIT), after, signal: ctx.signal });
    ctx.fields['listed'] = page.items.length;
    return json(200, {
      agents: page.items,
      nextCursor: page.next ? await sealCursor(deps, { k: 'agents', p: org, after: page.next }) : null,
    });
  }, handlerOptions(deps));
}
