/** Terminal status of a worker run (same union as the module workers use today). */
export type TerminalStatus = 'completed' | 'failed' | 'timeout' | 'cancelled';

export type Operation = 'hydrate' | 'write' | 'clear';

/**
 * A structured event. `event` is stable; other fields depend on it. Never contains the token,
 * the request body or query strings (presigned URLs carry credentials in their query).
 */
export interface ClientEvent {
  level: 'debug' | 'info' | 'warn' | 'error';
  event: string;
  op: Operation;
  [field: string]: unknown;
}

/**
 * Either a function receiving every event, or an object with level methods (`console`, pino, a
 * Powertools logger…) which is called as `logger[level](event)`. Absent → the client is silent.
 */
export type ClientLogger =
  | ((event: ClientEvent) => void)
  | {
      debug?: (event: ClientEvent) => void;
      info?: (event: ClientEvent) => void;
      warn?: (event: ClientEvent) => void;
      error?: (event: ClientEvent) => void;
    };

/**
 * How far a long transfer has got, for progress displays (the CLI draws its progress line from it).
 * Reported once per chunk (at most 1 MiB, usually 16–64 KiB) while the bytes move, in three phases:
 *
 * - `download`: a hydrate's full body (200, also behind a 307), counted as file bytes (after `fetch`
 *   decodes gzip). `totalBytes` is known when the body is not content-encoded (its `content-length`)
 *   or the server sends `x-snapshot-bytes`; otherwise undefined.
 * - `prepare`: a presigned write's single pass over the session file (UTF-8 check, sha256, gzip into
 *   the temp file). `totalBytes` is the session file's size.
 * - `upload`: the presigned PUTs, bytes handed to the socket so far over all parts; `totalBytes` is the
 *   transfer size (the gzip copy's size unless `compress: false`).
 *
 * A retried download or PUT counts its bytes again from where that attempt started, so `bytes` can go
 * down. Small bodies handled whole (direct and append POSTs, `226` tails, clears) report nothing.
 */
export interface TransferProgress {
  op: Operation;
  phase: 'download' | 'prepare' | 'upload';
  /** Bytes done so far in this phase. */
  bytes: number;
  /** Bytes this phase will move, when known. */
  totalBytes: number | undefined;
}

/** Options every call accepts besides the connection pair. All optional. */
export interface TransportOptions {
  /** Per-attempt timeout. Default 30 000 ms (GET, DELETE) and 60 000 ms (POST), as workers use today. */
  timeoutMs?: number;
  /** Extra attempts after the first on retryable failures. Default 4 (5 attempts in total). */
  retries?: number;
  /** Overall budget for the call, retries and backoff included. Default 120 000 ms (GET, DELETE), 180 000 ms (POST). */
  deadlineMs?: number;
  /** First backoff ceiling; attempt n sleeps a uniform random time in [0, min(max, base·2ⁿ)]. Default 250 ms. */
  backoffBaseMs?: number;
  /** Backoff ceiling. Default 8 000 ms. A larger `Retry-After` still wins (bounded by the deadline). */
  backoffMaxMs?: number;
  /** Aborts the call (no retry); hydrate leaves the existing file untouched. */
  signal?: AbortSignal;
  logger?: ClientLogger;
  /** Replacement for the global `fetch` (tests, proxies, instrumentation). */
  fetch?: typeof globalThis.fetch;
  /**
   * Called synchronously as a long transfer moves (see `TransferProgress`). Keep it cheap: it runs once
   * per chunk. An exception it throws is ignored. Absent → nothing is counted.
   */
  onProgress?: (progress: TransferProgress) => void;
}

export interface ConnectionOptions {
  /** Gateway base URL; requests go to `${gatewayUrl}/worker/transcript/snapshot` (plain concatenation). */
  gatewayUrl: string;
  /** Worker JWT sent as `Authorization: Bearer <token>`. Never logged, never in errors. */
  workerToken: string;
}

export interface HydrateOptions extends ConnectionOptions, TransportOptions {
  /** Path of the session.jsonl to replace. Parent directories are created. */
  sessionFile: string;
}

export interface WriteSnapshotOptions extends ConnectionOptions, TransportOptions {
  sessionFile: string;
  terminalStatus: TerminalStatus;
  /** The run this worker claimed; must match the `runId` claim of the per-run token. */
  runId: number;
  /**
   * gzip what goes on the wire: the direct POST body (`Content-Encoding: gzip`) and the presigned
   * upload (stored gzip by the service). Default true. `false` sends the bytes as they are.
   */
  compress?: boolean;
  /**
   * Largest session file (bytes) sent inline with a direct POST; anything larger goes through a
   * presigned upload. Default 4 MiB (4,194,304), the service's default `MAX_SNAPSHOT_BYTES`. A 413
   * from a server with a smaller limit falls back to the presigned upload once.
   */
  directMaxBytes?: number;
  /**
   * Where the compressed copy of a large file is written before it is uploaded. Default: the session
   * file's directory (falling back to `os.tmpdir()` when that is not writable). Always deleted.
   */
  tempDir?: string;
  /** Parts of a multipart upload sent at the same time. Default 4. */
  partConcurrency?: number;
}

/** How a written snapshot travelled. */
export interface WriteTransfer {
  /**
   * `direct`: the whole file inline in the POST; `presigned`: PUT to storage, then a commit POST;
   * `append`: only the bytes after the snapshot the service already holds (`appendJsonl`, see the
   * README's "Incremental sync"). `bytes` is the whole file's length in every case.
   */
  transport: 'direct' | 'presigned' | 'append';
  /**
   * Content coding of the request body on the wire (and at rest, for presigned uploads): `br` for an
   * append (brotli), `gzip` for a direct or presigned write, `identity` with `compress: false`.
   */
  encoding: 'gzip' | 'br' | 'identity';
  /** Bytes sent in the successful request body (direct, append) or PUT to storage (presigned). */
  wireBytes: number;
  /** Number of PUTs (1 for a single upload, the part count for multipart); 0 for direct. */
  parts: number;
}

export type ClearSnapshotsOptions = ConnectionOptions & TransportOptions;

/** Detailed outcome of a hydrate (see `hydrateSnapshot`). */
export type HydrateResult =
  | {
      status: 'hydrated';
      /** `x-snapshot-run-id` of the served snapshot, when the server sent it. */
      runId: number | undefined;
      bytes: number;
      sha256: string;
      /** Whether the server announced a digest that was checked before the file was replaced. */
      verified: boolean;
      /** True when the body came from a redirect (307 to presigned storage, for large snapshots). */
      redirected: boolean;
      /**
       * Body bytes on the wire (the response's `content-length`: the compressed size when it was
       * gzip-encoded); undefined when the response did not say. For a delta, the tail's wire size.
       */
      wireBytes: number | undefined;
      attempts: number;
      /**
       * Present when the file was rebuilt from what it already held instead of downloaded whole
       * (README "Incremental sync"): the first `baseBytes` bytes were kept and `appendedBytes` bytes
       * received (`226 IM Used`; 0 when a `304` for the held snapshot dropped bytes the service never
       * stored). `bytes` and `sha256` describe the whole new file, verified before it replaced the old.
       */
      delta?: { baseBytes: number; appendedBytes: number };
      /** The conversation's reset generation (`x-snapshot-generation`), echoed by the next write. */
      generation?: number;
    }
  | { status: 'not_modified'; sha256: string; attempts: number; runId?: number; generation?: number }
  | { status: 'not_found'; attempts: number; generation?: number };

export type FailureReason =
  | 'network'
  | 'timeout'
  | 'deadline'
  | 'aborted'
  | 'throttled'
  | 'http_5xx'
  | 'http_4xx'
  | 'bad_request'
  | 'unauthorized'
  | 'forbidden'
  | 'too_large'
  | 'io'
  | 'not_utf8'
  | 'invalid_argument';

export interface FailedResult {
  status: 'failed';
  reason: FailureReason;
  /** Human-readable, token-free. */
  message: string;
  /** HTTP status of the last response, if any. */
  httpStatus?: number;
  /** `code` from the server's JSON error body, if any. */
  serverCode?: string;
  attempts: number;
}

export type WriteSnapshotResult =
  | ({
      status: 'written';
      /** `id` from the server's 200 body; absent when the write was confirmed by a 409 after a retry. */
      id?: number;
      bytes: number;
      attempts: number;
      /**
       * True when an earlier attempt got no usable answer (network error, timeout, 5xx) and a later
       * attempt was told the run already has a snapshot: that snapshot is this call's own write.
       */
      afterRetry: boolean;
      /** sha256 (hex) of the file bytes, as the server measured them (or as computed locally). */
      sha256?: string;
    } & WriteTransfer)
  | ({ status: 'duplicate'; bytes: number; attempts: number } & WriteTransfer)
  | {
      status: 'skipped';
      /**
       * not_completed: terminalStatus ≠ completed (never served, so never sent);
       * missing_file / empty_file: nothing to upload;
       * reset: the conversation was cleared after this run's token was issued (409 reset_fenced).
       */
      reason: 'not_completed' | 'missing_file' | 'empty_file' | 'reset';
      attempts: number;
    }
  | FailedResult;

export type ClearSnapshotsResult = { status: 'cleared'; deleted: number; attempts: number } | FailedResult;
