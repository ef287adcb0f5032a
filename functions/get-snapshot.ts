import { routes } from './lib/runtime.js';

/** `GET /worker/transcript/snapshot` — API Gateway HTTP API (payload v2) entry point. */
export const handler = routes.getSnapshot;
