import { deleteSnapshotRoute } from './lib/routes/delete-snapshot.js';
import { deps } from './lib/runtime.js';

/** `DELETE /worker/transcript/snapshot` — API Gateway HTTP API (payload v2) entry point. */
export const handler = deleteSnapshotRoute(deps);
