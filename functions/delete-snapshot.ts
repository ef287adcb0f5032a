import { routes } from './lib/runtime.js';

/** `DELETE /worker/transcript/snapshot` — API Gateway HTTP API (payload v2) entry point. */
export const handler = routes.deleteSnapshot;
