import { adminRunRoute } from './lib/routes/admin-run.js';
import { deps } from './lib/runtime.js';

/** `GET /admin/run` (operator API, admin tokens) — API Gateway HTTP API (payload v2) entry point. */
export const handler = adminRunRoute(deps);
