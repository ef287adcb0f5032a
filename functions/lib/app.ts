import type { Logger } from '@aws-lambda-powertools/logger';
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { S3Client } from '@aws-sdk/client-s3';
import { createVerifier, type SecretLoader, type TokenScope, type Verifier } from './auth.js';
import { storeLimits, type Config } from './config.js';
import { ERRORS, HEADER_RUN_ID, HEADER_SHA256, NDJSON_CONTENT_TYPE } from './contract.js';
import { HttpError } from './errors.js';
import { header, httpHandler, json, type HttpResult, type LambdaHttpHandler } from './http.js';
import { acceptable, SnapshotStore, type SnapshotMeta, type WriteResult } from './store.js';
import { decodeRequestBody, parsePostBody, parseUploadRequest } from './validation.js';

export interface AppDeps {
  readonly store: SnapshotStore;
  readonly verify: Verifier;
  readonly logger: Logger;
  readonly maxSnapshotBytes: number;
  /** Storage deadline per request (default 25 s; API Gateway cuts at 30 s). */
  readonly requestDeadlineMs?: number;
}

export interface Routes {
  readonly getSnapshot: LambdaHttpHandler;
  readonly postSnapshot: LambdaHttpHandler;
  readonly deleteSnapshot: LambdaHttpHandler;
  readonly createUpload: LambdaHttpHandler;
}

function snapshotHeaders(meta: SnapshotMeta): Record<string, string> {
  return {
    [HEADER_RUN_ID]: String(meta.runId),
    [HEADER_SHA256]: meta.sha256,
    etag: `"${meta.sha256}"`,
    'cache-control': 'private, no-cache',
    vary: 'accept-encoding',
  };
}

function scopeFields(scope: TokenScope): Record<string, unknown> {
  return { organizationId: scope.organizationId, agentId: scope.agentId, conversationId: scope.conversationId, runId: scope.runId };
}

/** Maps a store write outcome to the contract's answer. */
function writeResponse(result: WriteResult): HttpResult {
  switch (result.kind) {
    case 'duplicate':
      throw new HttpError(ERRORS.alreadyExists);
    case 'fenced':
      throw new HttpError(ERRORS.resetFenced);
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

/** Thin handlers: parse → authorize → one store call → map the result. */
export function createRoutes(deps: AppDeps): Routes {
  const { store, verify, logger } = deps;
  const options = { deadlineMs: deps.requestDeadlineMs ?? 25_000 };
  // A gzip request body may decode to at most this much JSON: the snapshot limit with worst-case
  // JSON escaping (a control character becomes \u00XX, six bytes), plus room for the other fields.
  const maxDecodedBody = deps.maxSnapshotBytes * 6 + 64 * 1024;

  const getSnapshot = httpHandler('GET /worker/transcript/snapshot', logger, async (event, ctx) => {
    const scope = await verify(header(event, 'authorization'));
    ctx.fields = scopeFields(scope);
    const result = await store.hydrate(scope, {
      ifNoneMatch: header(event, 'if-none-match'),
      accept: acceptable(header(event, 'accept-encoding')),
      signal: ctx.signal,
    });
    switch (result.kind) {
      case 'none':
        throw new HttpError(ERRORS.noSnapshot);
      case 'not-modified':
        return { statusCode: 304, headers: snapshotHeaders(result.meta) };
      case 'not-acceptable':
        throw new HttpError(ERRORS.notAcceptable);
      case 'redirect':
        ctx.fields['snapshotRunId'] = result.meta.runId;
        ctx.fields['redirect'] = true;
        // Existing workers follow this transparently; fetch drops Authorization on the cross-origin hop.
        return { statusCode: 307, headers: { ...snapshotHeaders(result.meta), location: result.url } };
      case 'body':
        ctx.fields['snapshotRunId'] = result.meta.runId;
        return {
          statusCode: 200,
          headers: {
            'content-type': NDJSON_CONTENT_TYPE,
            ...snapshotHeaders(result.meta),
            ...(result.encoding === 'gzip' && { 'content-encoding': 'gzip' }),
          },
          // Base64 so the bytes pass through API Gateway exactly, whatever they are.
          isBase64Encoded: true,
          body: result.body.toString('base64'),
        };
    }
  }, options);

  const postSnapshot = httpHandler('POST /worker/transcript/snapshot', logger, async (event, ctx) => {
    const scope = await verify(header(event, 'authorization'));
    ctx.fields = scopeFields(scope);
    const text = await decodeRequestBody(event.body, event.isBase64Encoded, header(event, 'content-encoding'), maxDecodedBody);
    const body = parsePostBody(text, deps.maxSnapshotBytes);
    const runId = body.kind === 'inline' ? body.post.runId : body.commit.runId;
    if (scope.runId !== runId) throw new HttpError(ERRORS.runOutOfScope);
    if (body.kind === 'inline') {
      ctx.fields['terminalStatus'] = body.post.terminalStatus;
      ctx.fields['snapshotBytes'] = body.post.snapshot.length;
      return writeResponse(
        await store.write(scope, { runId, status: body.post.terminalStatus, body: body.post.snapshot }, { signal: ctx.signal }),
      );
    }
    ctx.fields['terminalStatus'] = body.commit.terminalStatus;
    ctx.fields['upload'] = true;
    return writeResponse(
      await store.commitUpload(
        scope,
        { runId, status: body.commit.terminalStatus, uploadId: body.commit.uploadId, parts: body.commit.parts },
        { signal: ctx.signal },
      ),
    );
  }, options);

  const deleteSnapshot = httpHandler('DELETE /worker/transcript/snapshot', logger, async (event, ctx) => {
    const scope = await verify(header(event, 'authorization'));
    ctx.fields = scopeFields(scope);
    const { deleted } = await store.clear(scope, { signal: ctx.signal });
    ctx.fields['deleted'] = deleted;
    return json(200, { deleted });
  }, options);

  const createUpload = httpHandler('POST /worker/transcript/snapshot/uploads', logger, async (event, ctx) => {
    const scope = await verify(header(event, 'authorization'));
    ctx.fields = scopeFields(scope);
    const text = await decodeRequestBody(event.body, event.isBase64Encoded, header(event, 'content-encoding'), 64 * 1024);
    const req = parseUploadRequest(text, store.limits.maxUploadBytes);
    if (scope.runId !== req.runId) throw new HttpError(ERRORS.runOutOfScope);
    ctx.fields['uploadBytes'] = req.bytes;
    const ticket = await store.createUpload(scope, { runId: req.runId, bytes: req.bytes, encoding: req.contentEncoding }, { signal: ctx.signal });
    return json(200, ticket);
  }, options);

  return { getSnapshot, postSnapshot, deleteSnapshot, createUpload };
}

/** The whole service from a config and SDK clients: used by the Lambda runtime and the local server alike. */
export function createApp(
  config: Config,
  clients: { s3: S3Client; ddb: DynamoDBClient },
  logger: Logger,
  loadSecret?: SecretLoader,
): { store: SnapshotStore; routes: Routes } {
  const store = new SnapshotStore({
    ...clients,
    bucket: config.bucketName,
    table: config.tableName,
    limits: storeLimits(config),
    onCleanupError: (what, err) => logger.warn('cleanup failed', { what, error: String(err) }),
  });
  const routes = createRoutes({
    store,
    verify: createVerifier(config, loadSecret),
    logger,
    maxSnapshotBytes: config.maxSnapshotBytes,
    requestDeadlineMs: config.requestDeadlineMs,
  });
  return { store, routes };
}
