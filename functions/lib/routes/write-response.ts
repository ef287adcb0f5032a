import { ERRORS } from '../contract.js';
import { HttpError } from '../errors.js';
import { json, type HttpResult } from '../http.js';
import type { WriteResult } from '../store/write.js';

/** Maps a store write outcome (direct write or upload commit) to the contract's answer. */
export function writeResponse(result: WriteResult): HttpResult {
  switch (result.kind) {
    case 'duplicate':
      throw new HttpError(ERRORS.alreadyExists);
    case 'fenced':
      throw new HttpError(ERRORS.resetFenced);
    case 'base-mismatch':
      throw new HttpError(ERRORS.baseMismatch);
    case 'digest-mismatch':
      throw new HttpError(ERRORS.digestMismatch);
    case 'upload-not-found':
      throw new HttpError(ERRORS.uploadNotFound);
    case 'upload-invalid':
      throw new HttpError(ERRORS.uploadInvalid);
    case 'upload-too-large':
      throw new HttpError(ERRORS.tooLarge);
    case 'stored':
      // `id` is what existing workers read; it is the run id (unique within the conversation).
      return json(200, { id: result.meta.runId, runId: result.meta.runId, sha256: result.meta.sha256, bytes: result.meta.bytes, latest: result.latest });
  }
}
