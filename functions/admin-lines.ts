import { adminLinesRoute } from './lib/routes/admin-lines.js';
import { deps } from './lib/runtime.js';

/** `GET /admin/lines` (operator API, admin tokens) — API Gateway HTTP API (payload v2) entry point. */
export const handler = adminLinesRoute(deps);
