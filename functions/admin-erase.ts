import { adminEraseRoute } from './lib/routes/admin-erase.js';
import { deps } from './lib/runtime.js';

/** `POST /admin/erasures` (operator API, admin tokens) — API Gateway HTTP API (payload v2) entry point. */
export const handler = adminEraseRoute(deps);
