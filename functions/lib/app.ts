import type { Logger } from '@aws-lambda-powertools/logger';
import type { TokenScope, Verifier } from './auth.js';
import { ERRORS, HEADER_RUN_ID, HEADER_SHA256, NDJSON_CONTENT_TYPE } from './contract.js';
import { HttpError } from './errors.js';
import { header, httpHandler, json, type LambdaHttpHandler } from './http.js';
import type { SnapshotMeta, SnapshotStore } from './store.js';
import { bodyText, parseSnapshotPost } from './validation.js';

export interface AppDeps {
  readonly store: SnapshotStore;
  readonly verify: Verifier;
  readonly logger: Logger;
  readonly maxSnapshotBytes: number;
}

export interface Routes {
  readonly getSnapshot: LambdaHttpHandler;
  readonly postSnapshot: LambdaHttpHandler;
  readonly deleteSnapshot: LambdaHttpHandler;
}

function snapshotHeaders(meta: SnapshotMeta): Record<string, string> {
  return {
    [HEADER_RUN_ID]: String(meta.runId),
    [HEADER_SHA256]: meta.sha256,
    etag: `"${meta.sha256}"`,
    'cache-control': 'private, no-cache',
  };
}

function scopeFields(scope: TokenScope): Record<string, unknown> {
  return { organizationId: scope.organizationId, agentId: scope.agentId, conversationId: scope.conversationId, runId: scope.runId };
}

/** Thin handlers: parse → authorize → one store call → map the result. */
export function createRoutes(deps: AppDeps): Routes {
  const { store, verify, logger } = deps;

  const getSnapshot = httpHandler('GET /worker/transcript/snapshot', logger, async (event, log) => {
    const scope = await verify(header(event, 'authorization'));
    log.fields = scopeFields(scope);
    const ifNoneMatch = header(event, 'if-none-match');
    const result = await store.hydrate(scope, ifNoneMatch === undefined ? {} : { ifNoneMatch });
    switch (result.kind) {
      case 'none':
        throw new HttpError(ERRORS.noSnapshot);
      case 'not-modified':
        return { statusCode: 304, headers: snapshotHeaders(result.meta) };
      case 'body':
        log.fields['snapshotRunId'] = result.meta.runId;
        return {
          statusCode: 200,
          headers: { 'content-type': NDJSON_CONTENT_TYPE, ...snapshotHeaders(result.meta) },
          // Stored bytes are valid UTF-8 (they were written from a well-formed string), so this is lossless.
          body: result.body.toString('utf8'),
        };
    }
  });

  const postSnapshot = httpHandler('POST /worker/transcript/snapshot', logger, async (event, log) => {
    const scope = await verify(header(event, 'authorization'));
    log.fields = scopeFields(scope);
    const input = parseSnapshotPost(bodyText(event.body, event.isBase64Encoded), deps.maxSnapshotBytes);
    if (scope.runId !== input.runId) throw new HttpError(ERRORS.runOutOfScope);
    log.fields['terminalStatus'] = input.terminalStatus;
    log.fields['snapshotBytes'] = input.snapshot.length;
    const result = await store.write(scope, { runId: input.runId, status: input.terminalStatus, body: input.snapshot });
    switch (result.kind) {
      case 'duplicate':
        throw new HttpError(ERRORS.alreadyExists);
      case 'fenced':
        throw new HttpError(ERRORS.resetFenced);
      case 'stored':
        // `id` is what existing workers read; it is the run id (unique within the conversation).
        return json(200, { id: result.meta.runId, runId: result.meta.runId, sha256: result.meta.sha256, bytes: result.meta.bytes, latest: result.latest });
    }
  });

  const deleteSnapshot = httpHandler('DELETE /worker/transcript/snapshot', logger, async (event, log) => {
    const scope = await verify(header(event, 'authorization'));
    log.fields = scopeFields(scope);
    const { deleted } = await store.clear(scope);
    log.fields['deleted'] = deleted;
    return json(200, { deleted });
  });

  return { getSnapshot, postSnapshot, deleteSnapshot };
}
