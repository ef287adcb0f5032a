import { createHash } from 'node:crypto';
import * as z from 'zod/mini';
import { ADMIN_PAGE_LIMITS, ADMIN_PATHS, ERRORS, LINES_PAGE_TEXT_BYTES } from '../contract.js';
import { HttpError } from '../errors.js';
import { httpHandler, json, type LambdaHttpHandler } from '../http.js';
import { conversationKey } from '../ids.js';
import { StoreError } from '../store/errors.js';
import { readLines, START, type LinePosition, type LinesPage, type ResumePoint } from '../store/lines.js';
import { readHeadSummary, readRun } from '../store/listing.js';
import type { RunRecord } from '../store/schema.js';
import { cursorParam, idParam, intOr, intParam, MISSING_READS, openCursor, parseQuery, sealCursor, verifyAdmin } from './admin-common.js';
import { handlerOptions, type RouteDeps } from './deps.js';

const query = z.strictObject({
  agentId: idParam(),
  conversationId: idParam(),
  runId: z.optional(intParam(1, Number.MAX_SAFE_INTEGER)),
  limit: z.optional(intParam(1, ADMIN_PAGE_LIMITS.lines.max)),
  cursor: z.optional(cursorParam()),
});

/** Default number of lines per page of `GET /admin/lines` (the largest: `ADMIN_PAGE_LIMITS.lines.max`). */
export const DEFAULT_LINES_LIMIT = ADMIN_PAGE_LIMITS.lines.default;

/**
 * A lines cursor's contents: the run (id, sha256 and stored identity), where the next page starts and where it
 * can decode from.
 */
interface LinesCursor {
  readonly runId: number;
  readonly sha256: string;
  /** {@link storedIdentity} of the record the cursor was made for. */
  readonly stored: string;
  readonly position: LinePosition;
  readonly resume: ResumePoint;
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/**
 * `GET /admin/lines?agentId=&conversationId=&runId=&cursor=&limit=` — a run's JSONL lines by range:
 * `200 {runId, bytes, lines: [{line, offset, bytes, text, truncated}], nextCursor}` (`runId` defaults to the
 * run HEAD serves; `limit` 1–1000 lines, default 200; at most 1 MiB of text per page, a longer line is cut
 * and marked `truncated`). The run is streamed and decoded only as far as the page needs (store/lines.ts:
 * what each storage form costs). A cursor names its run, that run's sha256 and its stored form: a cursor from
 * another conversation, or for a run id that was written again since (after a reset, even with the same
 * bytes), is 400 invalid_cursor, and
 * so is a `runId` parameter other than the cursor's. `404 not_found`: no such run (or nothing published
 * when `runId` is omitted).
 */
export function adminLinesRoute(deps: RouteDeps): LambdaHttpHandler {
  return httpHandler(`GET ${ADMIN_PATHS.lines}`, deps.logger, async (event, ctx) => {
    const admin = await verifyAdmin(deps, event, ctx);
    const q = parseQuery(event, query);
    const scope = { organizationId: admin.organizationId, agentId: q.agentId, conversationId: q.conversationId };
    Object.assign(ctx.fields, { agentId: q.agentId, conversationId: q.conversationId });
    const pk = conversationKey(scope);
    const cursor = q.cursor === undefined ? undefined : await openCursor(deps, q.cursor, (p) => linesCursor(p, pk));
    if (cursor && q.runId !== undefined && Number(q.runId) !== cursor.runId) throw new HttpError(ERRORS.invalidCursor);

    const runId = cursor?.runId ?? (q.runId !== undefined ? Number(q.runId) : (await readHeadSummary(deps.store, pk, ctx.signal))?.latestRunId);
    if (runId === undefined) throw new HttpError(ERRORS.notFound);
    ctx.fields['runId'] = runId;
    let run = await readRun(deps.store, pk, runId, ctx.signal);
    if (!run) throw new HttpError(ERRORS.notFound);
    if (cursor && !fits(cursor, run)) throw new HttpError(ERRORS.invalidCursor);

    const position = cursor?.position ?? { line: 1, offset: 0 };
    const options = { limit: intOr(q.limit, DEFAULT_LINES_LIMIT), maxTextBytes: LINES_PAGE_TEXT_BYTES, signal: ctx.signal };
    let page: LinesPage | 'gone' = 'gone';
    for (let attempt = 1; ; attempt++) {
      page = await readLines(deps.store, pk, run, position, cursor?.resume ?? START, options);
      if (page !== 'gone') break;
      // Removed after the record was read (objects go first): the record gone too → 404. The same record:
      // a chain may have been compacted under the read (its layout is read again); else the data is lost.
      // A run id written again (after a reset) names other bytes: a cursor into the old ones is stale.
      const again: RunRecord | undefined = await readRun(deps.store, pk, runId, ctx.signal);
      if (!again) throw new HttpError(ERRORS.notFound);
      const rewritten = again.s3Key !== run.s3Key;
      if (rewritten && cursor) throw new HttpError(ERRORS.invalidCursor);
      if (attempt >= MISSING_READS || (!rewritten && again.chainId === undefined)) throw new StoreError('INTEGRITY', `run ${runId} names stored bytes that are missing`);
      run = again;
    }
    ctx.fields['listed'] = page.lines.length;
    const next = page.next;
    return json(200, {
      runId: run.runId,
      bytes: run.bytes,
      lines: page.lines,
      nextCursor: next
        ? await sealCursor(deps, {
            k: 'lines',
            p: pk,
            run: run.runId,
            sha: run.sha256,
            key: storedIdentity(run),
            line: next.line,
            offset: next.offset,
            rs: next.resume.stored,
            rd: next.resume.decoded,
          })
        : null,
    });
  }, handlerOptions(deps));
}

/** The cursor's contents when it is a lines cursor of the conversation `pk`, else undefined. */
function linesCursor(p: Record<string, unknown>, pk: string): LinesCursor | undefined {
  const { run, sha, key, line, offset, rs, rd } = p;
  if (p['k'] !== 'lines' || p['p'] !== pk) return undefined;
  if (!isCount(run) || run < 1 || typeof sha !== 'string' || typeof key !== 'string') return undefined;
  if (!isCount(line) || line < 1 || !isCount(offset) || !isCount(rs) || !isCount(rd) || rd > offset) return undefined;
  return { runId: run, sha256: sha, stored: key, position: { line, offset }, resume: { stored: rs, decoded: rd } };
}

/**
 * The identity of a run's stored form: 22 base64url characters of the sha256 of its `s3Key`, which is unique
 * to the request that stored it. The same bytes written again after a reset (same run id, same sha256) are
 * stored otherwise — a chain of other fragments, whose boundaries are not the cursor's resume point.
 */
function storedIdentity(run: RunRecord): string {
  return createHash('sha256').update(run.s3Key).digest('base64url').slice(0, 22);
}

/**
 * True when the cursor was made for this very record: its bytes (sha256) and their stored form (a run id
 * written again after a reset names other bytes, or the same bytes stored with other fragment boundaries).
 */
function fits(cursor: LinesCursor, run: RunRecord): boolean {
  return (
    cursor.sha256 === run.sha256 &&
    cursor.stored === storedIdentity(run) &&
    cursor.position.offset < run.bytes &&
    cursor.resume.stored <= run.storedBytes &&
    cursor.resume.decoded <= run.bytes
  );
}
