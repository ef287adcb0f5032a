import { ERRORS } from '../contract.js';
import { HttpError } from '../errors.js';
import { header, httpHandler, type LambdaHttpHandler } from '../http.js';
import { commitUpload } from '../store/uploads.js';
import { appendSnapshot, writeSnapshot } from '../store/write.js';
import { decodeRequestBody, parsePostBody } from '../validation.js';
import { echoedGeneration, handlerOptions, scopeFields, type RouteDeps } from './deps.js';
import { writeResponse } from './write-response.js';

/**
 * `POST /worker/transcript/snapshot` — store a finished run's snapshot, inline (`snapshotJsonl`), as
 * the bytes appended to a stored run (`appendJsonl` + `base` + `sha256`), or by committing a presigned
 * upload (`uploadId`). Checks run in the contract's order (validation.ts).
 */
export function postSnapshotRoute(deps: RouteDeps): LambdaHttpHandler {
  // A gzip request body may decode to at most this much JSON: the snapshot limit with worst-case
  // JSON escaping (a control character becomes \u00XX, six bytes), plus room for the other fields.
  const maxDecodedBody = deps.maxSnapshotBytes * 6 + 64 * 1024;
  return httpHandler('POST /worker/transcript/snapshot', deps.logger, async (event, ctx) => {
    const token = await deps.verify(header(event, 'authorization'));
    ctx.fields = scopeFields(token);
    const scope = { ...token, generation: echoedGeneration(event) };
    const text = await decodeRequestBody(event.body, event.isBase64Encoded, header(event, 'content-encoding'), maxDecodedBody);
    const body = parsePostBody(text, deps.maxSnapshotBytes);
    const runId = body.kind === 'inline' ? body.post.runId : body.kind === 'append' ? body.append.runId : body.commit.runId;
    if (scope.runId !== runId) throw new HttpError(ERRORS.runOutOfScope);
    if (body.kind === 'append') {
      const a = body.append;
      ctx.fields['terminalStatus'] = a.terminalStatus;
      ctx.fields['appendBytes'] = a.append.length;
      ctx.fields['baseRunId'] = a.base.runId;
      return writeResponse(
        await appendSnapshot(deps.store, scope, { runId, status: a.terminalStatus, base: a.base, append: a.append, sha256: a.sha256 }, { signal: ctx.signal }),
      );
    }
    if (body.kind === 'inline') {
      ctx.fields['terminalStatus'] = body.post.terminalStatus;
      ctx.fields['snapshotBytes'] = body.post.snapshot.length;
      return writeResponse(await writeSnapshot(deps.store, scope, { runId, status: body.post.terminalStatus, body: body.post.snapshot }, { signal: ctx.signal }));
    }
    ctx.fields['terminalStatus'] = body.commit.terminalStatus;
    ctx.fields['upload'] = true;
    return writeResponse(
      await commitUpload(
        deps.store,
        scope,
        { runId, status: body.commit.terminalStatus, uploadId: body.commit.uploadId, parts: body.commit.parts },
        { signal: ctx.signal },
      ),
    );
  }, handlerOptions(deps));
}
