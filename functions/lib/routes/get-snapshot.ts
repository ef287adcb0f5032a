import { ERRORS, HEADER_BASE_RUN_ID, HEADER_BYTES, HEADER_GENERATION, HEADER_RUN_ID, HEADER_SHA256, IM_APPEND, NDJSON_CONTENT_TYPE } from '../contract.js';
import type { APIGatewayProxyEventV2 } from 'aws-lambda';
import { HttpError } from '../errors.js';
import { header, httpHandler, type HttpResult, type LambdaHttpHandler } from '../http.js';
import { acceptable, acceptsInstanceManipulation, etagMatches, heldSha256 } from '../negotiation.js';
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

/** A 200 or 226 carrying bytes: base64 so they pass through API Gateway exactly, whatever they are. */
export function bytesAnswer(
  statusCode: 200 | 226,
  result: { meta: SnapshotMeta; generation: number; body: Buffer; encoding: 'gzip' | 'identity' },
  extraHeaders: Record<string, string> = {},
): HttpResult {
  return {
    statusCode,
    headers: {
      'content-type': NDJSON_CONTENT_TYPE,
      ...snapshotHeaders(result.meta, result.generation),
      ...extraHeaders,
      ...(result.encoding === 'gzip' && { 'content-encoding': 'gzip' }),
    },
    isBase64Encoded: true,
    body: result.body.toString('base64'),
  };
}

/**
 * The run a delta hydrate builds on (RFC 3229): `A-IM: append`, the held run's sha256 in If-None-Match
 * and its id in `x-snapshot-base-run-id`. Undefined when the request asks for no delta (or names no
 * usable sha256: then the answer is simply whole). A malformed run id is 400 invalid_base_run_id.
 */
function deltaBase(event: APIGatewayProxyEventV2): { runId: number; sha256: string } | undefined {
  const rawRunId = header(event, HEADER_BASE_RUN_ID);
  if (!acceptsInstanceManipulation(header(event, 'a-im'), IM_APPEND)) return undefined;
  if (rawRunId === undefined) return undefined;
  const runId = /^\s*[1-9]\d{0,15}\s*$/.test(rawRunId) ? Number(rawRunId) : NaN;
  if (!Number.isSafeInteger(runId)) throw new HttpError(ERRORS.invalidBaseRunId);
  const sha256 = heldSha256(header(event, 'if-none-match'));
  return sha256 === undefined ? undefined : { runId, sha256 };
}

/**
 * `GET /worker/transcript/snapshot` — hydrate: 200 with the bytes (gzip if asked), 304 on a matching
 * If-None-Match, 226 IM Used with only the missing bytes for a client that holds an earlier run of the
 * same chain (RFC 3229, `A-IM: append`), 307 to a presigned URL when too large to answer inline, 404
 * when nothing is stored, 406 when too large inline and the client refuses gzip.
 */
export function getSnapshotRoute(deps: RouteDeps): LambdaHttpHandler {
  return httpHandler('GET /worker/transcript/snapshot', deps.logger, async (event, ctx) => {
    const scope = await deps.verify(header(event, 'authorization'));
    ctx.fields = scopeFields(scope);
    const ifNoneMatch = header(event, 'if-none-match');
    const base = deltaBase(event);
    const result = await hydrate(deps.store, scope, {
      matches: (sha256) => etagMatches(ifNoneMatch, sha256),
      accept: acceptable(header(event, 'accept-encoding')),
      base,
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
      case 'delta':
        ctx.fields['snapshotRunId'] = result.meta.runId;
        ctx.fields['baseRunId'] = base?.runId;
        ctx.fields['deltaBytes'] = result.body.length;
        // RFC 3229 §10.5.2 IM, §10.5.1 Delta-Base; the whole length lets the client check before hashing.
        return bytesAnswer(226, result, { im: IM_APPEND, 'delta-base': `"${result.baseSha256}"`, [HEADER_BYTES]: String(result.meta.bytes) });
      case 'body':
        ctx.fields['snapshotRunId'] = result.meta.runId;
        return bytesAnswer(200, result);
    }
  }, handlerOptions(deps));
}
