import { postSnapshotRoute } from './lib/routes/post-snapshot.js';
import { deps } from './lib/runtime.js';

/** `POST /worker/transcript/snapshot` — API Gateway HTTP API (payload v2) entry point. */
export const handler = postSnapshotRoute(deps);
