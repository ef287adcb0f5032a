import { adminRunsRoute } from './lib/routes/admin-runs.js';
import { deps } from './lib/runtime.js';

/** `GET /admin/runs` (operator API, admin tokens) — API Gateway HTTP API (payload v2) entry point. */
export const handler = adminRunsRoute(deps);
