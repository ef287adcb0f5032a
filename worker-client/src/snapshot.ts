import { readFile, stat, unlink } from 'node:fs/promises';
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
import {
  appendBody,
  brotliBody,
  entityTag,
  HEADER_A_IM,
  HEADER_BASE_RUN_ID,
  HEADER_BYTES,
  HEADER_DELTA_BASE,
  HEADER_IM,
  type HeldBase,
  IM_APPEND,
  listsToken,
  MAX_DELTA_TAIL_BYTES,
  parseByteCount,
  type FileScan,
  prefixThenTail,
  readBodyUpTo,
  scanFile,
  STATUS_IM_USED,
  utf8OnItsOwn,
} from './append.js';
import { ensureDir, replaceFileAtomically, sha256OfFile, type StreamedFile } from './atomic-file.js';
import { TranscriptStoreError } from './errors.js';
import {
  type AttemptInfo,
  authHeaders,
  type CallContext,
  discard,
  httpError,
  makeContext,
  makeLog,
  networkError,
  nonNegative,
  readServerError,
  readSmallBody,
  redactUrl,
  runWithRetries,
} from './http.js';
import type {
  ClearSnapshotsOptions,
  ClearSnapshotsResult,
  FailedResult,
  FailureReason,
  HydrateOptions,
  HydrateResult,
  Operation,
  WriteSnapshotOptions,
  WriteSnapshotResult,
} from './types.js';
import { continuesState, forgetState, parseGeneration, readState, scopeOf, type SyncState, writeState } from './state.js';
import { createUpload, NotUtf8, type PreparedFile, prepareFile, putFile } from './upload.js';

const MAX_REDIRECTS = 5;
const HEX64 = /^[0-9a-f]{64}$/;

/**
 * Digests the server (or the storage it redirects to) may announce for the body. Only values that
 * are unambiguously a sha256 are taken: an S3 ETag is an MD5 (32 hex) and is ignored, not failed.
 */
function announcedDigests(res: Response): string[] {
  const out: string[] = [];
  const hex = res.headers.get('x-snapshot-sha256')?.trim().toLowerCase();
  if (hex && HEX64.test(hex)) out.push(hex);
  const etag = /^"([0-9a-fA-F]{64})"$/.exec(res.headers.get('etag')?.trim() ?? '');
  if (etag?.[1]) out.push(etag[1].toLowerCase());
  const meta = res.headers.get('x-amz-meta-sha256')?.trim().toLowerCase();
  if (meta && HEX64.test(meta)) out.push(meta);
  const b64 = res.headers.get('x-amz-checksum-sha256')?.trim();
  if (b64 && /^[A-Za-z0-9+/]{43}=$/.test(b64)) out.push(Buffer.from(b64, 'base64').toString('hex'));
  return out;
}

function parseRunId(v: string | null): number | undefined {
  if (v === null || !/^\d+$/.test(v.trim())) return undefined;
  const n = Number(v);
  return Number.isSafeInteger(n) ? n : undefined;
}

/**
 * Why a delta answer (or a 304 for the held snapshot) could not be used. Not an error: the attempt goes
 * on as a plain full GET, and the session file is untouched.
 */
class DeltaRejected extends Error {}

/**
 * Replaces `sessionFile` with its first `base.bytes` bytes followed by `tail` — atomically, streaming the
 * prefix — provided the result is exactly `expected` (length and sha256); otherwise leaves the file as it
 * was and returns a `DeltaRejected`. Failures writing the temp file are real `io` errors and throw.
 */
async function rebuildFromBase(
  sessionFile: string,
  base: HeldBase,
  tail: Uint8Array,
  expected: { bytes: number; sha256: string },
): Promise<StreamedFile | DeltaRejected> {
  try {
    return await replaceFileAtomically(sessionFile, prefixThenTail(sessionFile, base.bytes, tail), (sha256, bytes) => {
      if (bytes !== expected.bytes) throw new DeltaRejected(`rebuilt file has ${bytes} bytes, expected ${expected.bytes}`);
      if (sha256 !== expected.sha256) throw new DeltaRejected('rebuilt file does not match the announced sha256');
    });
  } catch (e) {
    if (e instanceof DeltaRejected) return e;
    if (e instanceof TranscriptStoreError) throw e;
    // Reading the held prefix failed (the file went away meanwhile): the service's full copy still works.
    return new DeltaRejected('held prefix could not be read');
  }
}

/**
 * One GET. With `base` (the client holds run `base.runId`'s snapshot as the first `base.bytes` bytes of
 * the file), it is a delta request (`A-IM: append`, `If-None-Match` of the held snapshot,
 * `x-snapshot-base-run-id`), and an answer that cannot be used comes back as `DeltaRejected`.
 */
async function hydrateAttempt(
  ctx: CallContext,
  info: AttemptInfo,
  sessionFile: string,
  localSha: string | undefined,
  base: HeldBase | undefined,
): Promise<HydrateResult | DeltaRejected> {
  // Which host the attempt was talking to when the wire failed: the gateway, or storage after a 307.
  const at = { url: ctx.url };
  try {
    return await hydrateExchange(ctx, info, sessionFile, localSha, base, at);
  } catch (e) {
    if (e instanceof TranscriptStoreError || info.signal.aborted) throw e;
    throw networkError(ctx.op, at.url, e);
  }
}

async function hydrateExchange(
  ctx: CallContext,
  info: AttemptInfo,
  sessionFile: string,
  localSha: string | undefined,
  base: HeldBase | undefined,
  at: { url: string },
): Promise<HydrateResult | DeltaRejected> {
  let url = ctx.url;
  // gzip is asked for explicitly: the service then sends it inline, and storage serves large snapshots
  // stored gzip. fetch decodes Content-Encoding itself, so the digest is checked on the decoded bytes.
  const headers: Record<string, string> = {
    ...authHeaders(ctx),
    accept: 'application/x-ndjson, */*;q=0.1',
    'accept-encoding': 'gzip',
  };
  if (base) {
    headers[HEADER_A_IM] = IM_APPEND;
    headers['if-none-match'] = `"${base.sha256}"`;
    headers[HEADER_BASE_RUN_ID] = String(base.runId);
  } else if (localSha) {
    headers['if-none-match'] = `"${localSha}"`;
  }
  const digests = new Set<string>();
  let runId: number | undefined;
  let generation: number | undefined;
  // The whole snapshot's length, when a hop announces it (`x-snapshot-bytes`): for progress only.
  let announcedBytes: number | undefined;
  let redirected = false;
  let res: Response;
  // Redirects are followed by hand so the digest announced by the gateway (on the 307 to a
  // presigned storage URL) is still checked against the body that finally arrives.
  for (let hop = 0; ; hop++) {
    res = await ctx.fetch(url, { method: 'GET', headers, redirect: 'manual', signal: info.signal });
    for (const d of announcedDigests(res)) digests.add(d);
    runId ??= parseRunId(res.headers.get('x-snapshot-run-id'));
    generation ??= parseGeneration(res.headers.get('x-snapshot-generation'));
    announcedBytes ??= parseByteCount(res.headers.get(HEADER_BYTES));
    const location = res.headers.get('location');
    if (![301, 302, 303, 307, 308].includes(res.status) || !location) break;
    discard(res);
    if (hop >= MAX_REDIRECTS) {
      throw new TranscriptStoreError('http_4xx', `hydrate failed: more than ${MAX_REDIRECTS} redirects`, {
        status: res.status,
      });
    }
    const next = new URL(location, url);
    if (next.origin !== new URL(url).origin) {
      // Same as fetch's own behaviour: credentials never follow a cross-origin redirect. Storage
      // answers in full, so the delta headers stay behind too.
      delete headers.authorization;
      delete headers['if-none-match'];
      delete headers[HEADER_A_IM];
      delete headers[HEADER_BASE_RUN_ID];
    }
    ctx.log('debug', 'redirect', { status: res.status, to: redactUrl(next.href) });
    url = next.href;
    at.url = url;
    redirected = true;
  }

  if (res.status === 404) {
    const body = await readServerError(res);
    ctx.log('info', 'not_found', { attempt: info.attempt, serverCode: body.code });
    return { status: 'not_found', attempts: info.attempt, ...(generation !== undefined && { generation }) };
  }
  if (res.status === 304 && base) {
    discard(res);
    // The held snapshot is the latest. A 304 that names another one is not an answer to our question.
    if (digests.size > 0 && !digests.has(base.sha256)) return new DeltaRejected('304 names another snapshot than the held one');
    if (localSha === base.sha256) {
      ctx.log('info', 'not_modified', { attempt: info.attempt, sha256: localSha });
      return { status: 'not_modified', sha256: localSha, attempts: info.attempt, runId: runId ?? base.runId, ...(generation !== undefined && { generation }) };
    }
    // The file holds more than the service stored (a local run that was never written): the
    // service's content wins, as a full hydrate would have it — the file becomes the held prefix.
    return deltaHydrated(ctx, info, sessionFile, base, Buffer.alloc(0), {
      bytes: base.bytes,
      sha256: base.sha256,
      runId: runId ?? base.runId,
      generation,
      redirected,
      wireBytes: undefined,
    });
  }
  if (res.status === 304 && localSha) {
    discard(res);
    ctx.log('info', 'not_modified', { attempt: info.attempt, sha256: localSha });
    return { status: 'not_modified', sha256: localSha, attempts: info.attempt, ...(runId !== undefined && { runId }), ...(generation !== undefined && { generation }) };
  }
  if (res.status === STATUS_IM_USED && base) {
    const reject = (why: string) => {
      discard(res);
      return new DeltaRejected(why);
    };
    if (!listsToken(res.headers.get(HEADER_IM), IM_APPEND)) return reject('226 without IM: append');
    if (entityTag(res.headers.get(HEADER_DELTA_BASE)) !== base.sha256) return reject('226 for another base (Delta-Base)');
    const total = parseByteCount(res.headers.get(HEADER_BYTES));
    const wholeSha = res.headers.get('x-snapshot-sha256')?.trim().toLowerCase();
    if (total === undefined || total < base.bytes) return reject('226 without a usable x-snapshot-bytes');
    if (total - base.bytes > MAX_DELTA_TAIL_BYTES) return reject('226 tail too large to hold in memory');
    if (!wholeSha || !HEX64.test(wholeSha)) return reject('226 without x-snapshot-sha256');
    // Every digest announced (ETag included) must name the same new snapshot.
    if ([...digests].some((d) => d !== wholeSha)) return reject('226 announces two different digests');
    const tail = await readBodyUpTo(res, total - base.bytes);
    if (tail === undefined) return new DeltaRejected('226 body longer than x-snapshot-bytes allows');
    const rawLength = res.headers.get('content-length');
    return deltaHydrated(ctx, info, sessionFile, base, tail, {
      bytes: total,
      sha256: wholeSha,
      runId,
      generation,
      redirected,
      wireBytes: rawLength !== null && /^\d+$/.test(rawLength) ? Number(rawLength) : undefined,
    });
  }
  if (res.status !== 200) throw await httpError(ctx, res);
  if (!res.body) throw new TranscriptStoreError('network', 'hydrate failed: response has no body', { status: 200 });

  const rawLength = res.headers.get('content-length');
  const wireBytes = rawLength !== null && /^\d+$/.test(rawLength) ? Number(rawLength) : undefined;
  // With a content coding, content-length is the encoded size; the decoded size is checked by the digest.
  const expectedBytes = res.headers.get('content-encoding') ? undefined : wireBytes;
  // Progress only: the size is never trusted for the file (the digest and content-length checks are).
  const totalBytes = announcedBytes ?? expectedBytes;
  // Only now: a 404, 304 or error must not even create the parent directory.
  await ensureDir(sessionFile);
  ctx.progress('download', 0, totalBytes);
  const written = await replaceFileAtomically(sessionFile, res.body, (sha256, bytes) => {
    if (expectedBytes !== undefined && bytes !== expectedBytes) {
      throw new TranscriptStoreError('integrity', `hydrate failed: body has ${bytes} bytes, expected ${expectedBytes}`, {
        status: 200,
      });
    }
    for (const d of digests) {
      if (d !== sha256) {
        throw new TranscriptStoreError('integrity', 'hydrate failed: body does not match the announced sha256', {
          status: 200,
        });
      }
    }
  }, (bytes) => ctx.progress('download', bytes, totalBytes));
  if (!written.dirSynced) ctx.log('warn', 'dir_fsync_unsupported', { file: sessionFile });
  ctx.log('info', 'hydrated', {
    attempt: info.attempt,
    bytes: written.bytes,
    sha256: written.sha256,
    runId,
    verified: digests.size > 0,
    redirected,
    wireBytes,
    file: sessionFile,
  });
  return {
    status: 'hydrated',
    runId,
    bytes: written.bytes,
    sha256: written.sha256,
    verified: digests.size > 0,
    redirected,
    wireBytes,
    attempts: info.attempt,
    ...(generation !== undefined && { generation }),
  };
}

/** The file rebuilt as held prefix + `tail` (a 226, or a 304 that drops unsynced local bytes), verified. */
async function deltaHydrated(
  ctx: CallContext,
  info: AttemptInfo,
  sessionFile: string,
  base: HeldBase,
  tail: Buffer,
  meta: { bytes: number; sha256: string; runId: number | undefined; generation: number | undefined; redirected: boolean; wireBytes: number | undefined },
): Promise<HydrateResult | DeltaRejected> {
  const written = await rebuildFromBase(sessionFile, base, tail, meta);
  if (written instanceof DeltaRejected) return written;
  if (!written.dirSynced) ctx.log('warn', 'dir_fsync_unsupported', { file: sessionFile });
  const delta = { baseBytes: base.bytes, appendedBytes: tail.length };
  ctx.log('info', 'hydrated', {
    attempt: info.attempt,
    bytes: written.bytes,
    sha256: written.sha256,
    runId: meta.runId,
    verified: true,
    redirected: meta.redirected,
    wireBytes: meta.wireBytes,
    file: sessionFile,
    delta,
  });
  return {
    status: 'hydrated',
    runId: meta.runId,
    bytes: written.bytes,
    sha256: written.sha256,
    verified: true,
    redirected: meta.redirected,
    wireBytes: meta.wireBytes,
    attempts: info.attempt,
    delta,
    ...(meta.generation !== undefined && { generation: meta.generation }),
  };
}

/**
 * What the session file holds, read once: its sha256 (for `If-None-Match`) and, when the saved state
 * names a stored snapshot the file still begins with, that snapshot as the base of a delta request.
 */
async function heldContent(sessionFile: string, previous: SyncState | undefined): Promise<{ localSha: string | undefined; base: HeldBase | undefined }> {
  const held = heldBaseOf(previous);
  if (!held) return { localSha: await sha256OfFile(sessionFile), base: undefined };
  const scan = await scanFile(sessionFile, held.bytes, 0).catch(() => undefined);
  return { localSha: scan?.sha256, base: scan?.baseSha256 === held.sha256 ? held : undefined };
}

/** The state's stored snapshot, when it names one completely (run id, a length > 0, a sha256). */
function heldBaseOf(state: SyncState | undefined): HeldBase | undefined {
  if (state?.runId === undefined || state.bytes === undefined || state.bytes <= 0 || state.sha256 === undefined) return undefined;
  return { runId: state.runId, bytes: state.bytes, sha256: state.sha256 };
}

/**
 * Downloads the latest completed snapshot into `sessionFile` and reports what happened.
 *
 * When the client's state file says `sessionFile` begins with a snapshot the service stored, only what
 * was appended since is asked for (`A-IM: append`; README "Incremental sync"). A delta answer is
 * verified whole (length and sha256 of held prefix + tail) before it replaces the file; one that does
 * not verify, or a service that answers in full, ends the same as a plain hydrate.
 *
 * Throws `TranscriptStoreError` on transport failure, 4xx (other than 404) and 5xx after retries.
 * On any throw the existing file is byte-for-byte what it was, and no temp file is left behind.
 */
export async function hydrateSnapshot(opts: HydrateOptions): Promise<HydrateResult> {
  const ctx = makeContext('hydrate', 'GET', opts);
  if (typeof opts.sessionFile !== 'string' || opts.sessionFile.length === 0) {
    throw new TranscriptStoreError('invalid_argument', 'sessionFile is required');
  }
  const previous = await readState(opts.sessionFile, scopeOf(ctx.url, ctx.token));
  const { localSha, base } = await heldContent(opts.sessionFile, previous);
  let delta = base;
  try {
    const { value } = await runWithRetries(ctx, async (info) => {
      if (delta) {
        const r = await hydrateAttempt(ctx, info, opts.sessionFile, localSha, delta);
        if (!(r instanceof DeltaRejected)) return r;
        // Once, and for the rest of this call: a plain GET, which the service always answers in full.
        ctx.log('info', 'delta_rejected', { attempt: info.attempt, reason: r.message });
        delta = undefined;
      }
      const r = await hydrateAttempt(ctx, info, opts.sessionFile, localSha, undefined);
      if (r instanceof DeltaRejected) throw new TranscriptStoreError('http_5xx', `hydrate failed: ${r.message}`);
      return r;
    });
    await remember(ctx, opts.sessionFile, value, previous);
    return value;
  } catch (e) {
    if (e instanceof TranscriptStoreError) {
      ctx.log('error', 'failed', { code: e.code, status: e.status, serverCode: e.serverCode, attempts: e.attempts });
    }
    throw e;
  }
}

/**
 * Saves what a hydrate learned (state.ts): the generation to echo on the next write, and what the file
 * holds. A 404 after a reset leaves the local file as it is (drop-in behaviour); while that file still
 * holds the pre-reset history, the pre-reset state is kept, so a write of it echoes the old generation
 * and is fenced — the old history never comes back. A file the worker rewrites is new history.
 */
async function remember(ctx: CallContext, sessionFile: string, r: HydrateResult, previous: SyncState | undefined): Promise<void> {
  const scope = scopeOf(ctx.url, ctx.token);
  if (scope === undefined || r.generation === undefined) return;
  if (
    r.status === 'not_found' &&
    previous !== undefined &&
    previous.generation < r.generation &&
    previous.sha256 !== undefined &&
    (await continuesState(sessionFile, previous))
  ) {
    ctx.log('info', 'reset_since_hydrate', { generation: r.generation, previous: previous.generation });
    return;
  }
  const held =
    r.status === 'hydrated'
      ? { runId: r.runId, bytes: r.bytes, sha256: r.sha256 }
      : r.status === 'not_modified'
        ? { runId: r.runId, sha256: r.sha256, bytes: await stat(sessionFile).then((s) => s.size, () => undefined) }
        : {};
  if (!(await writeState(sessionFile, { scope, generation: r.generation, ...held }))) {
    // Never leave an older state behind to be echoed: without one, the service falls back to the token's iat.
    await forgetState(sessionFile);
    ctx.log('warn', 'state_not_saved', { file: sessionFile });
  }
}

/**
 * Drop-in for the worker module's `hydrateFromSnapshot`: `true` when `sessionFile` now holds the
 * latest completed snapshot (written now, or already identical locally → 304), `false` when the
 * conversation has none (404; the file is left untouched). Throws `TranscriptStoreError` otherwise.
 */
export async function hydrateFromSnapshot(opts: HydrateOptions): Promise<boolean> {
  const r = await hydrateSnapshot(opts);
  return r.status !== 'not_found';
}

const REASON_BY_STATUS: Record<number, FailureReason> = {
  400: 'bad_request',
  401: 'unauthorized',
  403: 'forbidden',
  413: 'too_large',
};

function toFailure(e: unknown, op: Operation): FailedResult {
  if (e instanceof TranscriptStoreError) {
    let reason: FailureReason;
    switch (e.code) {
      case 'http_4xx':
        reason = (e.status !== undefined && REASON_BY_STATUS[e.status]) || 'http_4xx';
        break;
      case 'integrity':
        reason = 'network';
        break;
      default:
        reason = e.code;
    }
    return {
      status: 'failed',
      reason,
      message: e.message,
      ...(e.status !== undefined ? { httpStatus: e.status } : {}),
      ...(e.serverCode !== undefined ? { serverCode: e.serverCode } : {}),
      attempts: e.attempts,
    };
  }
  // Should be unreachable; kept so the never-throws promise holds even for a bug.
  return { status: 'failed', reason: 'io', message: `${op} failed unexpectedly`, attempts: 0 };
}

async function jsonBody(res: Response): Promise<Record<string, unknown>> {
  try {
    const v: unknown = JSON.parse(await readSmallBody(res));
    return v && typeof v === 'object' ? (v as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

async function jsonField(res: Response, field: string): Promise<number | undefined> {
  const v = (await jsonBody(res))[field];
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const gzipAsync = promisify(gzip);

/** The service's default MAX_SNAPSHOT_BYTES: the largest snapshot a direct POST may carry. */
export const DEFAULT_DIRECT_MAX_BYTES = 4 * 1024 * 1024;

/** Lambda's synchronous request payload limit (6,291,456 bytes): it counts the whole serialized event. */
export const LAMBDA_EVENT_LIMIT_BYTES = 6 * 1024 * 1024;
/**
 * Room kept in the event for everything but the body: headers (the token, at most API Gateway's
 * 10 KiB of headers) and API Gateway's request context (~1.5 KiB), with margin.
 */
export const EVENT_OVERHEAD_BYTES = 32 * 1024;

/**
 * Estimated size (bytes) of the Lambda event API Gateway builds around a POST body: a binary (here:
 * gzip) body is base64-encoded (4 bytes per 3, rounded up); a text body is embedded as a JSON string,
 * i.e. escaped once more (`"` and `\` double, control characters become `\n` or `\u00XX`), which can
 * double a quote-heavy transcript that is already JSON-escaped inside the body. Plus
 * {@link EVENT_OVERHEAD_BYTES} for headers and context.
 */
export function estimateEventBytes(payload: string | Uint8Array): number {
  const body = typeof payload === 'string' ? Buffer.byteLength(JSON.stringify(payload)) : 4 * Math.ceil(payload.byteLength / 3);
  return body + EVENT_OVERHEAD_BYTES;
}
const DEFAULT_PART_CONCURRENCY = 4;

const notUtf8 = (attempts: number): WriteSnapshotResult => ({
  status: 'failed',
  reason: 'not_utf8',
  message: 'session file is not valid UTF-8; refusing to upload a lossy copy',
  attempts,
});

/**
 * Reads the session file into the POST body. The file's bytes and their decoded text are only
 * referenced inside this function, so once it returns the JSON body is the one copy kept for retries.
 */
async function prepareBody(opts: WriteSnapshotOptions): Promise<{ body: string; bytes: number } | WriteSnapshotResult> {
  let raw: Buffer;
  try {
    raw = await readFile(opts.sessionFile);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { status: 'skipped', reason: 'missing_file', attempts: 0 };
    throw new TranscriptStoreError('io', `read session file failed${code ? ` (${code})` : ''}`, { cause: e });
  }
  const bytes = raw.byteLength;
  if (bytes === 0) return { status: 'skipped', reason: 'empty_file', attempts: 0 };
  // The body must be the file's bytes exactly. JSON can only carry text, so a file that is not
  // valid UTF-8 is refused rather than "repaired" with U+FFFD. ignoreBOM keeps a leading BOM.
  let text: string;
  try {
    text = utf8.decode(raw);
  } catch {
    return notUtf8(0);
  }
  return { body: JSON.stringify({ terminalStatus: opts.terminalStatus, snapshotJsonl: text, runId: opts.runId }), bytes };
}

type Transfer = Pick<Extract<WriteSnapshotResult, { status: 'written' }>, 'transport' | 'encoding' | 'wireBytes' | 'parts'>;

/**
 * Maps the answer to a snapshot POST (direct or commit) to a result; throws for anything else.
 * 409 snapshot_exists after an attempt that got no answer is this call's own earlier write.
 */
async function writeAnswer(
  ctx: CallContext,
  res: Response,
  info: AttemptInfo,
  bytes: number,
  transfer: Transfer,
  localSha?: string,
): Promise<WriteSnapshotResult> {
  if (res.status >= 200 && res.status < 300) {
    const body = await jsonBody(res);
    const id = typeof body.id === 'number' && Number.isFinite(body.id) ? body.id : undefined;
    const serverSha = typeof body.sha256 === 'string' && HEX64.test(body.sha256) ? body.sha256 : undefined;
    if (serverSha && localSha && serverSha !== localSha) {
      // The service measured what landed; a difference means the file changed while it was read.
      ctx.log('warn', 'sha256_mismatch', { local: localSha, server: serverSha });
    }
    const sha256 = serverSha ?? localSha;
    return {
      status: 'written',
      ...(id !== undefined ? { id } : {}),
      bytes,
      attempts: info.attempt,
      afterRetry: false,
      ...(sha256 !== undefined ? { sha256 } : {}),
      ...transfer,
    };
  }
  if (res.status === 409) {
    const err = await readServerError(res);
    if (err.code === 'reset_fenced') return { status: 'skipped', reason: 'reset', attempts: info.attempt };
    // Same request, retried: if an earlier attempt may have committed, the stored snapshot is ours.
    if (info.ambiguousBefore) return { status: 'written', bytes, attempts: info.attempt, afterRetry: true, ...transfer };
    return { status: 'duplicate', bytes, attempts: info.attempt, ...transfer };
  }
  throw await httpError(ctx, res);
}

function withAttempts(r: WriteSnapshotResult, before: number): WriteSnapshotResult {
  return before === 0 ? r : { ...r, attempts: r.attempts + before };
}

/**
 * Marker: the direct POST is too large — refused by the server (413), or not sent because its Lambda
 * event would exceed the 6 MB limit. The caller tries the presigned path.
 */
interface TooLargeForDirect {
  tooLarge: { attempts: number; status?: number; serverCode?: string; eventBytes?: number };
}

/**
 * Direct POST. With compression, the JSON body is gzipped (`Content-Encoding: gzip`); a server that
 * cannot decode it (415, or 400 invalid_json for a body we know is valid JSON) gets it once more
 * uncompressed.
 */
async function writeDirect(ctx: CallContext, opts: WriteSnapshotOptions, compress: boolean): Promise<WriteSnapshotResult | TooLargeForDirect> {
  const prepared = await prepareBody(opts);
  if ('status' in prepared) return prepared;
  const { bytes } = prepared;
  // One copy kept for retries: the gzip of the JSON, or the JSON itself.
  const payload: string | Buffer = compress ? await gzipAsync(Buffer.from(prepared.body, 'utf8')) : prepared.body;
  const wireBytes = typeof payload === 'string' ? Buffer.byteLength(payload) : payload.byteLength;
  const transfer: Transfer = { transport: 'direct', encoding: compress ? 'gzip' : 'identity', wireBytes, parts: 0 };
  // Lambda would refuse this POST before the service sees it (outside the contract on AWS): don't send it.
  const eventBytes = estimateEventBytes(payload);
  if (eventBytes > LAMBDA_EVENT_LIMIT_BYTES) return { tooLarge: { attempts: 0, eventBytes } };
  try {
    const { value } = await runWithRetries(ctx, async (info) => {
      const res = await ctx.fetch(ctx.url, {
        method: 'POST',
        headers: { ...authHeaders(ctx), 'content-type': 'application/json', ...(compress ? { 'content-encoding': 'gzip' } : {}) },
        body: payload,
        signal: info.signal,
      });
      return writeAnswer(ctx, res, info, bytes, transfer);
    });
    return value;
  } catch (e) {
    if (!(e instanceof TranscriptStoreError) || e.code !== 'http_4xx') throw e;
    if (e.status === 413) return { tooLarge: { attempts: e.attempts, status: e.status, ...(e.serverCode !== undefined ? { serverCode: e.serverCode } : {}) } };
    if (compress && (e.status === 415 || (e.status === 400 && e.serverCode === 'invalid_json'))) {
      ctx.log('info', 'fallback_identity', { status: e.status, serverCode: e.serverCode });
      const again = await writeDirect(ctx, opts, false);
      return 'status' in again ? withAttempts(again, e.attempts) : again;
    }
    throw e;
  }
}

/** Aborts when the call's deadline passes or the caller aborts; for the local (non-HTTP) steps. */
function localStepSignal(ctx: CallContext): { signal: AbortSignal; why: () => 'deadline' | 'aborted' | undefined; done: () => void } {
  const controller = new AbortController();
  let why: 'deadline' | 'aborted' | undefined;
  const timer = setTimeout(() => {
    why = 'deadline';
    controller.abort();
  }, Math.max(0, ctx.deadlineAt - Date.now()));
  const onAbort = () => {
    why = 'aborted';
    controller.abort();
  };
  if (ctx.signal?.aborted) onAbort();
  else ctx.signal?.addEventListener('abort', onAbort, { once: true });
  return {
    signal: controller.signal,
    why: () => why,
    done: () => {
      clearTimeout(timer);
      ctx.signal?.removeEventListener('abort', onAbort);
    },
  };
}

/**
 * Presigned upload (see upload.ts): stream the file through gzip into a temp file, create the
 * upload, PUT, commit. The temp file is deleted whatever happens. `before` = attempts already made.
 */
async function writePresigned(
  ctx: CallContext,
  opts: WriteSnapshotOptions,
  compress: boolean,
  partConcurrency: number,
  before: number,
): Promise<WriteSnapshotResult> {
  let total = before;
  const step = async <T extends { attempts: number }>(fn: () => Promise<T>): Promise<T> => {
    try {
      const r = await fn();
      total += r.attempts;
      return r;
    } catch (e) {
      if (e instanceof TranscriptStoreError) e.attempts += total;
      throw e;
    }
  };

  let file: PreparedFile | undefined;
  try {
    const started = Date.now();
    const local = localStepSignal(ctx);
    try {
      file = await prepareFile(opts.sessionFile, compress, opts.tempDir, local.signal, (bytes, totalBytes) => ctx.progress('prepare', bytes, totalBytes));
    } catch (e) {
      if (e instanceof NotUtf8) return notUtf8(total);
      if (e instanceof TranscriptStoreError) throw e;
      const why = local.why();
      if (why === 'aborted') throw new TranscriptStoreError('aborted', 'write aborted by caller', { cause: e, attempts: total });
      if (why === 'deadline') {
        throw new TranscriptStoreError('deadline', `write gave up: deadline of ${ctx.deadlineMs} ms reached while compressing`, { cause: e, attempts: total });
      }
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return { status: 'skipped', reason: 'missing_file', attempts: total };
      throw new TranscriptStoreError('io', `read session file failed${code ? ` (${code})` : ''}`, { cause: e, attempts: total });
    } finally {
      local.done();
    }
    if (file.bytes === 0) return { status: 'skipped', reason: 'empty_file', attempts: total };
    ctx.log('info', 'upload_prepared', {
      bytes: file.bytes,
      wireBytes: file.transferBytes,
      encoding: file.encoding,
      ms: Date.now() - started,
    });

    const prepared = file;
    const { ticket } = await step(() => createUpload(ctx, opts.runId, prepared));
    ctx.log('info', 'upload_created', { parts: ticket.parts?.length ?? 1, wireBytes: prepared.transferBytes });
    const put = await step(() => putFile(ctx, ticket, prepared, partConcurrency));

    const transfer: Transfer = { transport: 'presigned', encoding: prepared.encoding, wireBytes: prepared.transferBytes, parts: put.puts };
    const body = JSON.stringify({
      terminalStatus: opts.terminalStatus,
      runId: opts.runId,
      uploadId: ticket.uploadId,
      ...(put.parts ? { parts: put.parts } : {}),
    });
    const { value } = await step(() =>
      runWithRetries(ctx, async (info) => {
        const res = await ctx.fetch(ctx.url, {
          method: 'POST',
          headers: { ...authHeaders(ctx), 'content-type': 'application/json' },
          body,
          signal: info.signal,
        });
        return writeAnswer(ctx, res, info, prepared.bytes, transfer, prepared.sha256);
      }),
    );
    return { ...value, attempts: total };
  } finally {
    if (file?.temp) await unlink(file.temp).catch(() => {});
  }
}

/**
 * Marker: the append was not stored, and the same run goes out as a full write. `base_mismatch` (412):
 * the service does not hold the base as a completed run of the current generation, or its length or
 * digest differ; `sha256_mismatch` (400): base + appended bytes is not what we said; `unsupported`
 * (415, 400 `invalid_json`/`missing_snapshot`): a service that predates appends or cannot decode `br`;
 * `too_large` (413).
 */
interface AppendFallback {
  fallback: {
    reason: 'base_mismatch' | 'sha256_mismatch' | 'unsupported' | 'too_large';
    status: number;
    serverCode?: string;
    attempts: number;
    /** An earlier attempt of the append may have committed (see `CallContext.priorAmbiguous`). */
    ambiguous: boolean;
  };
}

function fallbackReason(status: number, serverCode: string | undefined): AppendFallback['fallback']['reason'] | undefined {
  if (status === 412) return 'base_mismatch';
  if (status === 400 && serverCode === 'sha256_mismatch') return 'sha256_mismatch';
  if (status === 415 || (status === 400 && (serverCode === 'invalid_json' || serverCode === 'missing_snapshot'))) return 'unsupported';
  if (status === 413) return 'too_large';
  return undefined;
}

/**
 * Append write: `POST …/snapshot` with only the bytes after the held base (README "Incremental sync"),
 * brotli-coded (`Content-Encoding: br`) unless `compress: false`. Retries, 409 and every other answer
 * are handled as for a direct write. Returns undefined, without sending, when the request would not fit
 * a Lambda event; an `AppendFallback` when the service wants the whole file instead.
 */
async function writeAppend(
  ctx: CallContext,
  opts: WriteSnapshotOptions,
  base: HeldBase,
  appended: { text: string; bytes: number; sha256: string },
  compress: boolean,
): Promise<WriteSnapshotResult | AppendFallback | undefined> {
  const json = appendBody({ runId: opts.runId, terminalStatus: opts.terminalStatus, appendJsonl: appended.text, base, sha256: appended.sha256 });
  // One copy kept for retries: the brotli of the JSON, or the JSON itself.
  const payload: string | Buffer = compress ? await brotliBody(Buffer.from(json, 'utf8')) : json;
  const eventBytes = estimateEventBytes(payload);
  if (eventBytes > LAMBDA_EVENT_LIMIT_BYTES) {
    ctx.log('debug', 'append_skipped', { reason: 'event_too_large', eventBytes });
    return undefined;
  }
  const wireBytes = typeof payload === 'string' ? Buffer.byteLength(payload) : payload.byteLength;
  const transfer: Transfer = { transport: 'append', encoding: compress ? 'br' : 'identity', wireBytes, parts: 0 };
  const { value } = await runWithRetries(ctx, async (info): Promise<WriteSnapshotResult | AppendFallback> => {
    const res = await ctx.fetch(ctx.url, {
      method: 'POST',
      headers: { ...authHeaders(ctx), 'content-type': 'application/json', ...(compress ? { 'content-encoding': 'br' } : {}) },
      body: payload,
      signal: info.signal,
    });
    if ([400, 412, 413, 415].includes(res.status)) {
      const err = await httpError(ctx, res);
      const reason = fallbackReason(res.status, err.serverCode);
      if (reason === undefined) throw err;
      return {
        fallback: {
          reason,
          status: res.status,
          ...(err.serverCode !== undefined ? { serverCode: err.serverCode } : {}),
          attempts: info.attempt,
          ambiguous: info.ambiguousBefore,
        },
      };
    }
    return writeAnswer(ctx, res, info, appended.bytes, transfer, appended.sha256);
  });
  return value;
}

/**
 * Drop-in for the worker module's `writeSnapshot`. Never throws (it runs in a worker's dying
 * breath); the result says what happened. Only `completed` runs are uploaded.
 *
 * When the client's state file says the service stores the beginning of this file (the snapshot this
 * worker hydrated or last wrote) and the file only grew since, only the appended bytes are sent
 * (`appendJsonl`, brotli-coded; README "Incremental sync"), with `transport: 'append'` in the result.
 * A service that wants the whole file instead (412 `base_mismatch`, 400 `sha256_mismatch`, or one that
 * predates appends) gets it in the same call; that is not an error.
 *
 * Otherwise, files up to `directMaxBytes` go inline in one POST (gzip-compressed unless `compress:
 * false`); larger ones through a presigned upload, streamed from disk so memory stays flat at any size.
 */
export async function writeSnapshot(opts: WriteSnapshotOptions): Promise<WriteSnapshotResult> {
  const log = makeLog(opts.logger, 'write');
  const done = (r: WriteSnapshotResult): WriteSnapshotResult => {
    const { status, ...rest } = r;
    log(status === 'failed' ? 'error' : 'info', status, rest);
    return r;
  };
  try {
    if (opts.terminalStatus !== 'completed') return done({ status: 'skipped', reason: 'not_completed', attempts: 0 });
    const ctx = makeContext('write', 'POST', opts);
    if (!Number.isSafeInteger(opts.runId) || opts.runId <= 0) {
      throw new TranscriptStoreError('invalid_argument', 'runId must be a positive integer');
    }
    const compress = opts.compress ?? true;
    const directMaxBytes = nonNegative('directMaxBytes', opts.directMaxBytes, DEFAULT_DIRECT_MAX_BYTES);
    const partConcurrency = Math.max(1, Math.floor(nonNegative('partConcurrency', opts.partConcurrency, DEFAULT_PART_CONCURRENCY)));
    // Echo the reset generation of the hydrate this run started from: a reset since then fences it.
    const scope = scopeOf(ctx.url, ctx.token);
    const saved = typeof opts.sessionFile === 'string' ? await readState(opts.sessionFile, scope) : undefined;
    // When the state names a stored snapshot, one read of the file tells whether the file still begins
    // with it, and yields what was appended since (kept only up to directMaxBytes: appends go inline).
    const held = heldBaseOf(saved);
    let scan: FileScan | undefined;
    let state: SyncState | undefined;
    if (held) {
      scan = await scanFile(opts.sessionFile, held.bytes, directMaxBytes).catch(() => undefined);
      state = scan?.baseSha256 === held.sha256 ? saved : undefined;
    } else {
      state = saved && (await continuesState(opts.sessionFile, saved)) ? saved : undefined;
    }
    ctx.generation = state?.generation;
    const finish = async (r: WriteSnapshotResult): Promise<WriteSnapshotResult> => {
      if (r.status === 'written' && scope !== undefined && state !== undefined) {
        await writeState(opts.sessionFile, { scope, generation: state.generation, runId: opts.runId, bytes: r.bytes, sha256: r.sha256 });
      }
      return done(r);
    };
    if (typeof opts.sessionFile !== 'string' || opts.sessionFile.length === 0) {
      throw new TranscriptStoreError('invalid_argument', 'sessionFile is required');
    }

    let size: number;
    try {
      size = (await stat(opts.sessionFile)).size;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return done({ status: 'skipped', reason: 'missing_file', attempts: 0 });
      throw new TranscriptStoreError('io', `stat session file failed${code ? ` (${code})` : ''}`, { cause: e });
    }

    // Incremental: only what this run appended to the snapshot the service already holds.
    let before = 0;
    if (held && state !== undefined && scan?.tail !== undefined && scan.size > held.bytes) {
      const text = utf8OnItsOwn(scan.tail);
      if (text === undefined) {
        log('debug', 'append_skipped', { reason: 'not_utf8_on_its_own', baseBytes: held.bytes });
      } else {
        const appended = await writeAppend(ctx, opts, held, { text, bytes: scan.size, sha256: scan.sha256 }, compress);
        if (appended && 'status' in appended) return finish(appended);
        if (appended) {
          // Not an error: the service wants the whole file. Same run, same content, so a 409 after an
          // append that may have landed is this call's own write, as after any retry.
          log('info', 'append_fallback', { ...appended.fallback });
          before = appended.fallback.attempts;
          ctx.priorAmbiguous = appended.fallback.ambiguous;
        }
      }
    }

    if (size <= directMaxBytes) {
      const direct = await writeDirect(ctx, opts, compress);
      if ('status' in direct) return finish(withAttempts(direct, before));
      // The server's limit is below ours, or the request would exceed Lambda's event limit: go the
      // way that has no such limit, once.
      log('info', 'fallback_presigned', { bytes: size, ...direct.tooLarge });
      return finish(await writePresigned(ctx, opts, compress, partConcurrency, before + direct.tooLarge.attempts));
    }
    return finish(await writePresigned(ctx, opts, compress, partConcurrency, before));
  } catch (e) {
    return done(toFailure(e, 'write'));
  }
}

/**
 * Drop-in for the worker module's `clearSnapshots`: deletes every snapshot of the token's
 * conversation. Never throws; idempotent (`deleted: 0` the second time), so it is retried freely.
 */
export async function clearSnapshots(opts: ClearSnapshotsOptions): Promise<ClearSnapshotsResult> {
  const log = makeLog(opts.logger, 'clear');
  const done = (r: ClearSnapshotsResult): ClearSnapshotsResult => {
    const { status, ...rest } = r;
    log(r.status === 'failed' ? 'error' : 'info', status, rest);
    return r;
  };
  try {
    const ctx = makeContext('clear', 'DELETE', opts);
    const { value } = await runWithRetries(ctx, async (info): Promise<ClearSnapshotsResult> => {
      const res = await ctx.fetch(ctx.url, { method: 'DELETE', headers: authHeaders(ctx), signal: info.signal });
      if (res.status >= 200 && res.status < 300) {
        return { status: 'cleared', deleted: (await jsonField(res, 'deleted')) ?? 0, attempts: info.attempt };
      }
      throw await httpError(ctx, res);
    });
    return done(value);
  } catch (e) {
    return done(toFailure(e, 'clear'));
  }
}
