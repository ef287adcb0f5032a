import { adminReceiptsRoute } from './lib/routes/admin-receipts.js';
import { deps } from './lib/runtime.js';

/** `GET /admin/erasures` (operator API, admin tokens) — API Gateway HTTP API (payload v2) entry point. */
export const handler = adminReceiptsRoute(deps);
