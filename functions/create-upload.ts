import { routes } from './lib/runtime.js';

/** `POST /worker/transcript/snapshot/uploads` — presigned upload for snapshots past the direct-POST limit. */
export const handler = routes.createUpload;
