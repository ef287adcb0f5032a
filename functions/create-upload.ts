import { createUploadRoute } from './lib/routes/create-upload.js';
import { deps } from './lib/runtime.js';

/** `POST /worker/transcript/snapshot/uploads` — presigned upload for snapshots past the direct-POST limit. */
export const handler = createUploadRoute(deps);
