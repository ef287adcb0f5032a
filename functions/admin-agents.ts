import { adminAgentsRoute } from './lib/routes/admin-agents.js';
import { deps } from './lib/runtime.js';

/** `GET /admin/agents` (operator API, admin tokens) — API Gateway HTTP API (payload v2) entry point. */
export const handler = adminAgentsRoute(deps);
