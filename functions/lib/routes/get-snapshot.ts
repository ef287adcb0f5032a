import { ERRORS, HEADER_GENERATION, HEADER_RUN_ID, HEADER_SHA256, NDJSON_CONTENT_TYPE } from '../contract.js';
import { HttpError } from '../errors.js';
import { header, httpHandler, type LambdaHttpHandler } from '../http.js';
import { acceptable, etagMatches } from '../negotiation.js';
import { hydrate } from '../store/hydrate.js';
import type { SnapshotMeta } from '../store/schema.js';
import { handlerOptions, scopeFields, type RouteDeps } from './deps.js';

/** Headers every answer about a stored snapshot carries (200, 304, 307). */
export function snapshotHeaders(meta: SnapshotMeta, generation: number): Record<string, string> {
  return {
    [HEADER_GENERATION]: String(generation),
    [HEADER_RUN_ID]: String(meta.runId),
    [HEADER_SHA256]: meta.sha256,
    etag: `"${meta.sha256}"`,
    'cache-control': 'private, no-cache',
    vary: 'accept-encoding',
  };
}

/**
 * `GET /worker/transcript/snapshot` — hydrate: 200 with the bytes (gzip if asked), 304 on a matching
 * If-None-Match, 307 to a presigned URL when too large to answer inline, 404 when nothing is stored,
 * 406 when too large inline and the client refuses gzip.
 */
export function getSnapshotRoute(deps: RouteDeps): LambdaHttpHandler {
  return httpHandler('GET /worker/transcript/snapshot', deps.logger, async (event, ctx) => {
    const scope = await deps.verify(header(event, 'authorization'));
    ctx.fields = scopeFields(scope);
    const ifNoneMatch = header(event, 'if-none-match');
    const result = await hydrate(deps.store, scope, {
      matches: (sha256) => etagMatches(ifNoneMatch, sha256),
      accept: acceptable(header(event, 'accept-encoding')),
      signal: ctx.signal,
    });
    switch (result.kind) {
      case 'none':
        throw new HttpError(ERRORS.noSnapshot, { headers: { [HEADER_GENERATION]: String(result.generation), 'cache-control': 'private, no-cache' } });
      case 'not-modified':
        return { statusCode: 304, headers: snapshotHeaders(result.meta, result.generation) };
      case 'not-acceptable':
        throw new HttpError(ERRORS.notAcceptable, { headers: { [HEADER_GENERATION]: String(result.generation) } });
      case 'redirect':
        ctx.fields['snapshotRunId'] = result.meta.runId;
        ctx.fields['redirect'] = true;
        // Existing workers follow this transparently; fetch drops Authorization on the cross-origin hop.
        return { statusCode: 307, headers: { ...snapshotHeaders(result.meta, result.generation), location: result.url } };
      case 'body':
        ctx.fields['snapshotRunId'] = result.meta.runId;
        return {
          statusCode: 200,
          headers: {
            'content-type': NDJSON_CONTENT_TYPE,
            ...snapshotHeaders(result.meta, result.generation),
            ...(result.encoding === 'gzip' && { 'content-encoding': 'gzip' }),
          },
          // Base64 so the bytes pass through API Gateway exactly, whatever they are.
          isBase64Encoded: true,
          body: result.body.toString('base64'),
        };
    }
  }, handlerOptions(deps));
}
