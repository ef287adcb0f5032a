/**
 * One error class with a stable machine `code`, in the style of jose's error codes: callers branch
 * on `err.code`, never on the message. Messages and fields never contain the worker token.
 */

export type TranscriptStoreErrorCode =
  /** Connection refused/reset, DNS failure, body cut off mid-stream. Retried. */
  | 'network'
  /** One attempt exceeded its per-attempt timeout. Retried. */
  | 'timeout'
  /** 5xx after the retry budget was spent (or a 5xx that is never retried, such as 501). */
  | 'http_5xx'
  /** 429 Too Many Requests after the retry budget was spent. */
  | 'throttled'
  /** A 4xx other than 404 (hydrate) / 409 (write) / 429. Never retried. */
  | 'http_4xx'
  /** The downloaded bytes did not match the digest the server announced. Retried. */
  | 'integrity'
  /** The caller's `signal` aborted the call. Never retried. */
  | 'aborted'
  /** The overall `deadlineMs` ran out (during an attempt, or no time left for the next one). */
  | 'deadline'
  /** Local filesystem failure (mkdir, open, write, fsync, rename). */
  | 'io'
  /** Invalid options passed by the caller (bad URL, missing token). */
  | 'invalid_argument';

export interface TranscriptStoreErrorInit {
  status?: number;
  /** The `code` field of the server's JSON error body, when it sent one. */
  serverCode?: string;
  attempts?: number;
  retryAfterMs?: number;
  cause?: unknown;
}

export class TranscriptStoreError extends Error {
  override readonly name = 'TranscriptStoreError';
  readonly code: TranscriptStoreErrorCode;
  /** HTTP status of the last response, when there was one. */
  readonly status: number | undefined;
  readonly serverCode: string | undefined;
  /** Number of HTTP attempts made before giving up (0 when nothing was sent). */
  attempts: number;
  /** Set on retryable HTTP errors that carried `Retry-After`. */
  readonly retryAfterMs: number | undefined;

  constructor(code: TranscriptStoreErrorCode, message: string, init: TranscriptStoreErrorInit = {}) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.code = code;
    this.status = init.status;
    this.serverCode = init.serverCode;
    this.attempts = init.attempts ?? 0;
    this.retryAfterMs = init.retryAfterMs;
  }

  /** Whether another attempt of the same request may succeed. */
  get retryable(): boolean {
    return (
      this.code === 'network' ||
      this.code === 'timeout' ||
      this.code === 'integrity' ||
      this.code === 'throttled' ||
      (this.code === 'http_5xx' && this.status !== undefined && RETRYABLE_STATUSES.has(this.status))
    );
  }

  toJSON(): Record<string, unknown> {
    return {
      name: this.name,
      code: this.code,
      message: this.message,
      status: this.status,
      serverCode: this.serverCode,
      attempts: this.attempts,
    };
  }
}

/** Statuses worth another attempt: throttling and transient gateway/storage failures. */
export const RETRYABLE_STATUSES: ReadonlySet<number> = new Set([429, 500, 502, 503, 504]);

export function isTranscriptStoreError(e: unknown): e is TranscriptStoreError {
  return e instanceof TranscriptStoreError;
}
