import { adminConversationsRoute } from './lib/routes/admin-conversations.js';
import { deps } from './lib/runtime.js';

/** `GET /admin/conversations` (operator API, admin tokens) — API Gateway HTTP API (payload v2) entry point. */
export const handler = adminConversationsRoute(deps);
