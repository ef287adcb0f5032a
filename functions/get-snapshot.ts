import { getSnapshotRoute } from './lib/routes/get-snapshot.js';
import { deps } from './lib/runtime.js';

/** `GET /worker/transcript/snapshot` — API Gateway HTTP API (payload v2) entry point. */
export const handler = getSnapshotRoute(deps);
