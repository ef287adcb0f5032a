import * as z from 'zod/mini';
import { ADMIN_PATHS, ERRORS } from '../contract.js';
import { HttpError } from '../errors.js';
import { header, httpHandler, type HttpResult, type LambdaHttpHandler } from '../http.js';
import { conversationKey } from '../ids.js';
import { acceptable, etagMatches } from '../negotiation.js';
import { StoreError } from '../store/errors.js';
import { answerRun, type HydrateResult } from '../store/hydrate.js';
import { readRun } from '../store/listing.js';
import type { RunRecord } from '../store/schema.js';
import { idParam, intParam, MISSING_READS, parseQuery, verifyAdmin } from './admin-common.js';
import { handlerOptions, type RouteDeps } from './deps.js';
import { bytesAnswer, snapshotHeaders } from './get-snapshot.js';

const query = z.strictObject({
  agentId: idParam(),
  conversationId: idParam(),
  runId: intParam(1, Number.MAX_SAFE_INTEGER),
});

/** The run's terminal status, on every answer about it. */
export const HEADER_TERMINAL_STATUS = 'x-snapshot-terminal-status';

/**
 * `GET /admin/run?agentId=&conversationId=&runId=` — one stored run's bytes, whatever its status or
 * generation, answered as hydrate answers (store/hydrate.ts `answerRun`): `200` NDJSON (gzip when accepted),
 * `304` on a matching If-None-Match, `307` to a presigned URL past the inline limit, `406` when too large
 * inline and gzip is refused; `404 not_found` when the organization has no such run. Every 200/307 writes
 * an audit log line `{audit: "read_run", actor, organizationId, agentId, conversationId, runId}`.
 */
export function adminRunRoute(deps: RouteDeps): LambdaHttpHandler {
  return httpHandler(`GET ${ADMIN_PATHS.run}`, deps.logger, async (event, ctx) => {
    const admin = await verifyAdmin(deps, event, ctx);
    const q = parseQuery(event, query);
    const runId = Number(q.runId);
    const scope = { organizationId: admin.organizationId, agentId: q.agentId, conversationId: q.conversationId };
    Object.assign(ctx.fields, { agentId: q.agentId, conversationId: q.conversationId, runId });
    const pk = conversationKey(scope);
    const ifNoneMatch = header(event, 'if-none-match');
    const opts = { matches: (sha256: string) => etagMatches(ifNoneMatch, sha256), accept: acceptable(header(event, 'accept-encoding')), signal: ctx.signal };

    let run = await readRun(deps.store, pk, runId, ctx.signal);
    let result: HydrateResult | 'gone' = 'gone';
    for (let attempt = 1; run; attempt++) {
      result = await answerRun(deps.store, pk, run, opts);
      if (result !== 'gone') break;
      // Its object went away after the record was read: a clear, retention or erasure removes objects
      // first, then the record. The record gone too → 404. Still the same: a chain may have been compacted
      // under the read (its layout is read again, a few times); otherwise the data is lost (500).
      const again = await readRun(deps.store, pk, runId, ctx.signal);
      const same = again !== undefined && again.s3Key === run.s3Key;
      if (same && (again.chainId === undefined || attempt >= MISSING_READS)) throw new StoreError('INTEGRITY', `run ${runId} names stored bytes that are missing`);
      if (attempt >= MISSING_READS) throw new StoreError('CONTENDED', `run ${runId} changed under every read; retry`);
      run = again;
    }
    if (!run || result === 'gone') throw new HttpError(ERRORS.notFound);
    return answer(deps, ctx.fields, run, result, { actor: admin.actor, organizationId: admin.organizationId, agentId: q.agentId, conversationId: q.conversationId });
  }, handlerOptions(deps));
}

function answer(
  deps: RouteDeps,
  fields: Record<string, unknown>,
  run: RunRecord,
  result: HydrateResult,
  who: { actor: string | undefined; organizationId: string; agentId: string; conversationId: string },
): HttpResult {
  const extra = { [HEADER_TERMINAL_STATUS]: run.status, 'cache-control': 'private, no-store' };
  const audit = () => deps.logger.info('audit', { audit: 'read_run', actor: who.actor ?? null, organizationId: who.organizationId, agentId: who.agentId, conversationId: who.conversationId, runId: run.runId });
  switch (result.kind) {
    case 'not-modified':
      return { statusCode: 304, headers: { ...snapshotHeaders(result.meta, result.generation), ...extra } };
    case 'not-acceptable':
      throw new HttpError(ERRORS.notAcceptable);
    case 'redirect':
      audit();
      fields['redirect'] = true;
      return { statusCode: 307, headers: { ...snapshotHeaders(result.meta, result.generation), ...extra, location: result.url } };
    case 'body': {
      audit();
      const res = bytesAnswer(200, result);
      return { ...res, headers: { ...res.headers, ...extra } };
    }
    case 'none':
    case 'delta':
      // answerRun never answers these (a stored run always has bytes; it serves no deltas).
      throw new Error(`unexpected hydrate answer ${result.kind} for a stored run`);
  }
}
