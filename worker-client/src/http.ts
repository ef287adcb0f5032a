import { RETRYABLE_STATUSES, TranscriptStoreError } from './errors.js';
import type { ClientEvent, ClientLogger, ConnectionOptions, Operation, TransferProgress, TransportOptions } from './types.js';

/** Same path existing workers concatenate onto their gateway URL (docs/DESIGN.md § HTTP contract). */
export const SNAPSHOT_PATH = '/worker/transcript/snapshot';

const DEFAULTS = {
  retries: 4,
  backoffBaseMs: 250,
  backoffMaxMs: 8_000,
  timeoutMs: { GET: 30_000, DELETE: 30_000, POST: 60_000, PUT: 60_000 },
  deadlineMs: { GET: 120_000, DELETE: 120_000, POST: 180_000, PUT: 180_000 },
} as const;

/** `PUT` only appears on sub-calls of a write (presigned uploads), which share the write's deadline. */
export type Method = 'GET' | 'POST' | 'DELETE' | 'PUT';

export type Log = (level: ClientEvent['level'], event: string, fields?: Record<string, unknown>) => void;

export function makeLog(logger: ClientLogger | undefined, op: Operation): Log {
  if (!logger) return () => {};
  return (level, event, fields) => {
    const ev: ClientEvent = { level, event, op, ...fields };
    try {
      if (typeof logger === 'function') logger(ev);
      else logger[level]?.(ev);
    } catch {
      // A broken logger must never break a hydrate or a write.
    }
  };
}

/** Reports progress of the current phase (a no-op without `onProgress`). */
export type Progress = (phase: TransferProgress['phase'], bytes: number, totalBytes: number | undefined) => void;

/** Wraps `onProgress` so that a throwing callback never breaks a transfer. */
export function makeProgress(onProgress: TransportOptions['onProgress'], op: Operation): Progress {
  if (typeof onProgress !== 'function') return () => {};
  return (phase, bytes, totalBytes) => {
    try {
      onProgress({ op, phase, bytes, totalBytes });
    } catch {
      // A broken progress display must never break a hydrate or a write.
    }
  };
}

export interface CallContext {
  op: Operation;
  /** The reset generation a write echoes (`x-snapshot-generation`), when the client knows it. */
  generation?: number | undefined;
  /**
   * Set when an earlier request of this call, carrying the same run's content (an append write that
   * then fell back to a full write), may have committed without us seeing the answer: the first
   * attempt of `runWithRetries` then starts with `ambiguousBefore` already true.
   */
  priorAmbiguous?: boolean | undefined;
  method: Method;
  url: string;
  token: string;
  fetch: typeof globalThis.fetch;
  log: Log;
  progress: Progress;
  timeoutMs: number;
  retries: number;
  deadlineMs: number;
  deadlineAt: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
  signal: AbortSignal | undefined;
}

export function nonNegative(name: string, v: number | undefined, fallback: number): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
    throw new TranscriptStoreError('invalid_argument', `${name} must be a finite number ≥ 0`);
  }
  return v;
}

/** Validates options and freezes the per-call settings. Throws `invalid_argument`. */
export function makeContext(op: Operation, method: Method, opts: ConnectionOptions & TransportOptions): CallContext {
  const log = makeLog(opts.logger, op);
  if (typeof opts.gatewayUrl !== 'string' || opts.gatewayUrl.length === 0) {
    throw new TranscriptStoreError('invalid_argument', 'gatewayUrl is required');
  }
  // Plain concatenation, exactly like existing workers (a base path such as `/lobu` is kept).
  const url = `${opts.gatewayUrl}${SNAPSHOT_PATH}`;
  try {
    new URL(url);
  } catch {
    throw new TranscriptStoreError('invalid_argument', 'gatewayUrl is not a valid URL');
  }
  if (typeof opts.workerToken !== 'string' || opts.workerToken.length === 0) {
    throw new TranscriptStoreError('invalid_argument', 'workerToken is required');
  }
  const f = opts.fetch ?? globalThis.fetch;
  if (typeof f !== 'function') {
    throw new TranscriptStoreError('invalid_argument', 'no fetch implementation (Node ≥ 20 provides one)');
  }
  const timeoutMs = nonNegative('timeoutMs', opts.timeoutMs, DEFAULTS.timeoutMs[method]);
  const deadlineMs = nonNegative('deadlineMs', opts.deadlineMs, DEFAULTS.deadlineMs[method]);
  const retries = Math.floor(nonNegative('retries', opts.retries, DEFAULTS.retries));
  return {
    op,
    method,
    url,
    token: opts.workerToken,
    fetch: f,
    log,
    progress: makeProgress(opts.onProgress, op),
    timeoutMs,
    retries,
    deadlineMs,
    deadlineAt: Date.now() + deadlineMs,
    backoffBaseMs: nonNegative('backoffBaseMs', opts.backoffBaseMs, DEFAULTS.backoffBaseMs),
    backoffMaxMs: nonNegative('backoffMaxMs', opts.backoffMaxMs, DEFAULTS.backoffMaxMs),
    signal: opts.signal,
  };
}

/** URL without credentials or query string, for logs (presigned URLs carry signatures in the query). */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.origin}${u.pathname}`;
  } catch {
    return '<invalid url>';
  }
}

/** `Retry-After` as delta-seconds or an HTTP-date, in ms; undefined when absent or malformed. */
export function parseRetryAfter(value: string | null, now = Date.now()): number | undefined {
  if (value === null) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const date = Date.parse(v);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, date - now);
}

/**
 * Reads a body up to `limit` bytes, then cancels the rest: the bytes read (at most `limit`) and whether
 * the body went on past them. Network errors propagate.
 */
export async function readUpTo(res: Response, limit: number): Promise<{ bytes: Buffer; truncated: boolean }> {
  if (!res.body) return { bytes: Buffer.alloc(0), truncated: false };
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.byteLength;
      if (size > limit) break;
    }
  } finally {
    reader.cancel().catch(() => {});
  }
  return { bytes: Buffer.concat(chunks).subarray(0, limit), truncated: size > limit };
}

/** Reads at most `limit` bytes of a body as text (error bodies are small JSON; never trust their size). */
export async function readSmallBody(res: Response, limit = 16_384): Promise<string> {
  return (await readUpTo(res, limit)).bytes.toString('utf8');
}

/** Releases a response body we do not read, so the connection returns to the pool. */
export function discard(res: Response): void {
  res.body?.cancel().catch(() => {});
}

interface ServerError {
  error?: string;
  code?: string;
}

export async function readServerError(res: Response): Promise<ServerError> {
  try {
    const text = await readSmallBody(res);
    const parsed: unknown = JSON.parse(text);
    if (parsed && typeof parsed === 'object') {
      const o = parsed as Record<string, unknown>;
      return {
        ...(typeof o.error === 'string' ? { error: o.error.slice(0, 200) } : {}),
        ...(typeof o.code === 'string' ? { code: o.code.slice(0, 100) } : {}),
      };
    }
  } catch {
    // Not JSON (a proxy's HTML page, a cut body): the status alone decides.
  }
  return {};
}

/** Maps a non-success response to a typed error (consumes the body). */
export async function httpError(ctx: CallContext, res: Response): Promise<TranscriptStoreError> {
  const body = await readServerError(res);
  const status = res.status;
  const code = status === 429 ? 'throttled' : status >= 500 ? 'http_5xx' : 'http_4xx';
  const retryAfterMs = RETRYABLE_STATUSES.has(status) ? parseRetryAfter(res.headers.get('retry-after')) : undefined;
  const detail = body.error ? `: ${body.error}` : '';
  return new TranscriptStoreError(code, `${ctx.op} failed: HTTP ${status}${detail}`, {
    status,
    ...(body.code !== undefined ? { serverCode: body.code } : {}),
    ...(retryAfterMs !== undefined ? { retryAfterMs } : {}),
  });
}

export interface AttemptInfo {
  /** 1-based. */
  attempt: number;
  /** Aborts on per-attempt timeout, overall deadline, or the caller's signal. Covers body reads. */
  signal: AbortSignal;
  /**
   * True when an earlier attempt of this call may have reached the server and committed without us
   * seeing the answer (network error, timeout, or a 5xx).
   */
  ambiguousBefore: boolean;
}

type AbortWhy = 'timeout' | 'deadline' | 'aborted';

function abortedError(ctx: CallContext, cause?: unknown): TranscriptStoreError {
  return new TranscriptStoreError('aborted', `${ctx.op} aborted by caller`, { cause });
}

function deadlineError(ctx: CallContext, attempts: number, last: TranscriptStoreError | undefined): TranscriptStoreError {
  const lastPart = last ? ` (last error: ${last.message})` : '';
  return new TranscriptStoreError(
    'deadline',
    `${ctx.op} gave up: deadline of ${ctx.deadlineMs} ms reached after ${attempts} attempt(s)${lastPart}`,
    { attempts, ...(last?.status !== undefined ? { status: last.status } : {}), ...(last ? { cause: last } : {}) },
  );
}

/** `host[:port]` of a URL, for messages (never the path or query: presigned URLs carry signatures). */
export function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return '<invalid url>';
  }
}

interface SystemErrorLike {
  code?: unknown;
  errno?: unknown;
  syscall?: unknown;
  message?: unknown;
  cause?: unknown;
  errors?: unknown;
}

/**
 * What went wrong on the wire, as `<errno name> (<syscall>)`, e.g. `ECONNREFUSED (connect)`,
 * `ENOTFOUND (getaddrinfo)`, `UND_ERR_SOCKET`, or the innermost message when there is no code
 * (`bad port`). Looks through undici's `TypeError('fetch failed', {cause})`, node:http's own system
 * errors and the `AggregateError` of a multi-address connect.
 */
export function networkDetail(e: unknown): string {
  let err = e as SystemErrorLike | undefined;
  for (let depth = 0; err && typeof err === 'object' && depth < 5; depth++) {
    // undici's TypeError('fetch failed') wraps the real error in `cause`: look inside it first.
    const wrapper = (err as unknown) instanceof TypeError && err.cause !== undefined;
    if (typeof err.code === 'string' && !wrapper) {
      const syscall = typeof err.syscall === 'string' ? ` (${err.syscall})` : '';
      return `${err.code}${syscall}`;
    }
    const next: unknown = err.cause ?? (Array.isArray(err.errors) ? err.errors[0] : undefined);
    if (!next || typeof next !== 'object') break;
    err = next as SystemErrorLike;
  }
  const message = err && typeof err.message === 'string' ? err.message : '';
  return message.length > 0 ? message.slice(0, 200) : 'unknown error';
}

/**
 * The typed `network` error for a failure talking to `url`: names the host (`host:port`, never the
 * path or query) and the errno name, e.g. `hydrate failed: network error talking to gw.example:8443:
 * ECONNREFUSED (connect)`; `step` (e.g. `upload PUT`) is put before it.
 */
export function networkError(op: string, url: string, e: unknown, step?: string): TranscriptStoreError {
  const where = step ? `${step}: ` : '';
  return new TranscriptStoreError('network', `${op} failed: ${where}network error talking to ${hostOf(url)}: ${networkDetail(e)}`, { cause: e });
}

function classify(ctx: CallContext, e: unknown, why: AbortWhy | undefined): TranscriptStoreError {
  if (why === 'aborted') return abortedError(ctx, e);
  if (why === 'timeout') {
    return new TranscriptStoreError('timeout', `${ctx.op} attempt to ${hostOf(ctx.url)} timed out after ${ctx.timeoutMs} ms`, { cause: e });
  }
  if (why === 'deadline') return deadlineError(ctx, 0, e instanceof TranscriptStoreError ? e : undefined);
  if (e instanceof TranscriptStoreError) return e;
  // undici: TypeError('fetch failed', {cause: ECONNREFUSED…}) or TypeError('terminated') mid-body.
  return networkError(ctx.op, ctx.url, e);
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Runs `attemptFn` until it returns, throws a non-retryable error, the retry budget is spent, or
 * the deadline passes. Backoff is "full jitter" (uniform in [0, min(max, base·2ⁿ⁻¹)]); a
 * `Retry-After` on 429/503 raises the wait to at least that value. A wait that would end past the
 * deadline is not started: the call fails with `deadline` right away instead of sleeping in vain.
 */
export async function runWithRetries<T>(
  ctx: CallContext,
  attemptFn: (info: AttemptInfo) => Promise<T>,
): Promise<{ value: T; attempts: number }> {
  let ambiguous = ctx.priorAmbiguous === true;
  let last: TranscriptStoreError | undefined;
  for (let attempt = 1; ; attempt++) {
    if (ctx.signal?.aborted) {
      const err = abortedError(ctx, ctx.signal.reason);
      err.attempts = attempt - 1;
      throw err;
    }
    const remaining = ctx.deadlineAt - Date.now();
    if (remaining <= 0) throw deadlineError(ctx, attempt - 1, last);

    const controller = new AbortController();
    let why: AbortWhy | undefined;
    const bindingIsDeadline = remaining < ctx.timeoutMs;
    const timer = setTimeout(
      () => {
        why = bindingIsDeadline ? 'deadline' : 'timeout';
        controller.abort();
      },
      Math.min(ctx.timeoutMs, remaining),
    );
    const onCallerAbort = () => {
      why = 'aborted';
      controller.abort();
    };
    ctx.signal?.addEventListener('abort', onCallerAbort, { once: true });

    let err: TranscriptStoreError;
    try {
      ctx.log('debug', 'attempt', { attempt, method: ctx.method, url: redactUrl(ctx.url) });
      const value = await attemptFn({ attempt, signal: controller.signal, ambiguousBefore: ambiguous });
      return { value, attempts: attempt };
    } catch (e) {
      err = classify(ctx, e, why);
    } finally {
      clearTimeout(timer);
      ctx.signal?.removeEventListener('abort', onCallerAbort);
    }

    err.attempts = attempt;
    if (err.code === 'deadline') {
      const d = deadlineError(ctx, attempt, last ?? (err.cause instanceof TranscriptStoreError ? err.cause : undefined));
      ctx.log('warn', 'give_up', { attempt, code: d.code });
      throw d;
    }
    if (!err.retryable) throw err;
    if (err.code === 'network' || err.code === 'timeout' || err.code === 'http_5xx') ambiguous = true;
    last = err;
    if (attempt > ctx.retries) {
      ctx.log('warn', 'give_up', { attempt, code: err.code, status: err.status });
      throw err;
    }
    const ceiling = Math.min(ctx.backoffMaxMs, ctx.backoffBaseMs * 2 ** (attempt - 1));
    const delay = Math.max(Math.random() * ceiling, err.retryAfterMs ?? 0);
    if (Date.now() + delay >= ctx.deadlineAt) {
      const d = deadlineError(ctx, attempt, err);
      ctx.log('warn', 'give_up', { attempt, code: d.code, status: err.status, wouldWaitMs: Math.round(delay) });
      throw d;
    }
    ctx.log('info', 'retry', {
      attempt,
      code: err.code,
      status: err.status,
      delayMs: Math.round(delay),
      ...(err.retryAfterMs !== undefined ? { retryAfterMs: err.retryAfterMs } : {}),
    });
    try {
      await sleep(delay, ctx.signal);
    } catch (e) {
      const a = abortedError(ctx, e);
      a.attempts = attempt;
      throw a;
    }
  }
}

/** Authorization, plus the echoed reset generation on the service's write routes. */
export function authHeaders(ctx: CallContext): Record<string, string> {
  return { authorization: `Bearer ${ctx.token}`, ...(ctx.generation !== undefined && { 'x-snapshot-generation': String(ctx.generation) }) };
}
