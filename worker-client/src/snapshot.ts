import { readFile, stat, unlink } from 'node:fs/promises';
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
import { ensureDir, replaceFileAtomically, sha256OfFile } from './atomic-file.js';
import { TranscriptStoreError } from './errors.js';
import {
  type AttemptInfo,
  authHeaders,
  type CallContext,
  discard,
  httpError,
  makeContext,
  makeLog,
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

async function hydrateAttempt(
  ctx: CallContext,
  info: AttemptInfo,
  sessionFile: string,
  localSha: string | undefined,
): Promise<HydrateResult> {
  let url = ctx.url;
  // gzip is asked for explicitly: the service then sends it inline, and storage serves large snapshots
  // stored gzip. fetch decodes Content-Encoding itself, so the digest is checked on the decoded bytes.
  const headers: Record<string, string> = {
    ...authHeaders(ctx),
    accept: 'application/x-ndjson, */*;q=0.1',
    'accept-encoding': 'gzip',
  };
  if (localSha) headers['if-none-match'] = `"${localSha}"`;
  const digests = new Set<string>();
  let runId: number | undefined;
  let generation: number | undefined;
  let redirected = false;
  let res: Response;
  // Redirects are followed by hand so the digest announced by the gateway (on the 307 to a
  // presigned storage URL) is still checked against the body that finally arrives.
  for (let hop = 0; ; hop++) {
    res = await ctx.fetch(url, { method: 'GET', headers, redirect: 'manual', signal: info.signal });
    for (const d of announcedDigests(res)) digests.add(d);
    runId ??= parseRunId(res.headers.get('x-snapshot-run-id'));
    generation ??= parseGeneration(res.headers.get('x-snapshot-generation'));
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
      // Same as fetch's own behaviour: credentials never follow a cross-origin redirect.
      delete headers.authorization;
      delete headers['if-none-match'];
    }
    ctx.log('debug', 'redirect', { status: res.status, to: redactUrl(next.href) });
    url = next.href;
    redirected = true;
  }

  if (res.status === 404) {
    const body = await readServerError(res);
    ctx.log('info', 'not_found', { attempt: info.attempt, serverCode: body.code });
    return { status: 'not_found', attempts: info.attempt, ...(generation !== undefined && { generation }) };
  }
  if (res.status === 304 && localSha) {
    discard(res);
    ctx.log('info', 'not_modified', { attempt: info.attempt, sha256: localSha });
    return { status: 'not_modified', sha256: localSha, attempts: info.attempt, ...(runId !== undefined && { runId }), ...(generation !== undefined && { generation }) };
  }
  if (res.status !== 200) throw await httpError(ctx, res);
  if (!res.body) throw new TranscriptStoreError('network', 'hydrate failed: response has no body', { status: 200 });

  const rawLength = res.headers.get('content-length');
  const wireBytes = rawLength !== null && /^\d+$/.test(rawLength) ? Number(rawLength) : undefined;
  // With a content coding, content-length is the encoded size; the decoded size is checked by the digest.
  const expectedBytes = res.headers.get('content-encoding') ? undefined : wireBytes;
  // Only now: a 404, 304 or error must not even create the parent directory.
  await ensureDir(sessionFile);
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
  });
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

/**
 * Downloads the latest completed snapshot into `sessionFile` and reports what happened.
 * Throws `TranscriptStoreError` on transport failure, 4xx (other than 404) and 5xx after retries.
 * On any throw the existing file is byte-for-byte what it was, and no temp file is left behind.
 */
export async function hydrateSnapshot(opts: HydrateOptions): Promise<HydrateResult> {
  const ctx = makeContext('hydrate', 'GET', opts);
  if (typeof opts.sessionFile !== 'string' || opts.sessionFile.length === 0) {
    throw new TranscriptStoreError('invalid_argument', 'sessionFile is required');
  }
  const localSha = await sha256OfFile(opts.sessionFile);
  const previous = await readState(opts.sessionFile, scopeOf(ctx.url, ctx.token));
  try {
    const { value } = await runWithRetries(ctx, (info) => hydrateAttempt(ctx, info, opts.sessionFile, localSha));
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
      file = await prepareFile(opts.sessionFile, compress, opts.tempDir, local.signal);
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
 * Drop-in for the worker module's `writeSnapshot`. Never throws (it runs in a worker's dying
 * breath); the result says what happened. Only `completed` runs are uploaded.
 *
 * Files up to `directMaxBytes` go inline in one POST (gzip-compressed unless `compress: false`);
 * larger ones through a presigned upload, streamed from disk so memory stays flat at any size.
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
    // Echo the reset generation of the hydrate this run started from: a reset since then fences it.
    const scope = scopeOf(ctx.url, ctx.token);
    const saved = typeof opts.sessionFile === 'string' ? await readState(opts.sessionFile, scope) : undefined;
    const state = saved && (await continuesState(opts.sessionFile, saved)) ? saved : undefined;
    ctx.generation = state?.generation;
    const finish = async (r: WriteSnapshotResult): Promise<WriteSnapshotResult> => {
      if (r.status === 'written' && scope !== undefined && state !== undefined) {
        await writeState(opts.sessionFile, { scope, generation: state.generation, runId: opts.runId, bytes: r.bytes, sha256: r.sha256 });
      }
      return done(r);
    };
    const compress = opts.compress ?? true;
    const directMaxBytes = nonNegative('directMaxBytes', opts.directMaxBytes, DEFAULT_DIRECT_MAX_BYTES);
    const partConcurrency = Math.max(1, Math.floor(nonNegative('partConcurrency', opts.partConcurrency, DEFAULT_PART_CONCURRENCY)));
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

    if (size <= directMaxBytes) {
      const direct = await writeDirect(ctx, opts, compress);
      if ('status' in direct) return finish(direct);
      // The server's limit is below ours, or the request would exceed Lambda's event limit: go the
      // way that has no such limit, once.
      log('info', 'fallback_presigned', { bytes: size, ...direct.tooLarge });
      return finish(await writePresigned(ctx, opts, compress, partConcurrency, direct.tooLarge.attempts));
    }
    return finish(await writePresigned(ctx, opts, compress, partConcurrency, 0));
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
