import { adminReceiptRoute } from './lib/routes/admin-receipt.js';
import { deps } from './lib/runtime.js';

/** `GET /admin/erasures/{receiptId}` (operator API, admin tokens) — API Gateway HTTP API (payload v2) entry point. */
export const handler = adminReceiptRoute(deps);
