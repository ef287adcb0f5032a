import { ERRORS } from '../contract.js';
import { HttpError } from '../errors.js';
import { header, httpHandler, json, type LambdaHttpHandler } from '../http.js';
import { createUpload } from '../store/uploads.js';
import { decodeRequestBody, parseUploadRequest } from '../validation.js';
import { echoedGeneration, handlerOptions, scopeFields, type RouteDeps } from './deps.js';

/** `POST /worker/transcript/snapshot/uploads` — presigned upload URL(s) for a snapshot past the direct-POST limit. */
export function createUploadRoute(deps: RouteDeps): LambdaHttpHandler {
  return httpHandler('POST /worker/transcript/snapshot/uploads', deps.logger, async (event, ctx) => {
    const token = await deps.verify(header(event, 'authorization'));
    ctx.fields = scopeFields(token);
    const scope = { ...token, generation: echoedGeneration(event) };
    const text = await decodeRequestBody(event.body, event.isBase64Encoded, header(event, 'content-encoding'), 64 * 1024);
    const req = parseUploadRequest(text, deps.store.limits.maxUploadBytes);
    if (scope.runId !== req.runId) throw new HttpError(ERRORS.runOutOfScope);
    ctx.fields['uploadBytes'] = req.bytes;
    const ticket = await createUpload(deps.store, scope, { runId: req.runId, bytes: req.bytes, encoding: req.contentEncoding }, { signal: ctx.signal });
    return json(200, ticket);
  }, handlerOptions(deps));
}
