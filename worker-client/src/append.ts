/**
 * Incremental sync (issue 12): the pieces both sides of a turn share.
 *
 *   write:    the service already holds the first `state.bytes` bytes of the file (the run `state.runId`
 *             this client hydrated or wrote) → POST only what follows, as `appendJsonl`, brotli-coded.
 *   hydrate:  the client holds those bytes → ask for only what was appended since (RFC 3229:
 *             `A-IM: append`), answered `226 IM Used` with the tail, rebuilt here as prefix + tail,
 *             verified whole, and renamed into place atomically.
 *
 * Everything here is an optimisation: whenever a precondition does not hold, or an answer does not
 * verify, the caller does what it did before (a full write, a plain full GET).
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { promisify } from 'node:util';
import { brotliCompress, constants as zlibConstants } from 'node:zlib';
import { readUpTo } from './http.js';

/** Request header naming the instance-manipulation the client accepts (RFC 3229 §10.5.3). */
export const HEADER_A_IM = 'a-im';
/** Response header of a `226`: the instance-manipulations applied (RFC 3229 §10.5.2). */
export const HEADER_IM = 'im';
/** Response header of a `226`: the entity tag of the instance the delta applies to (RFC 3229 §10.5.1). */
export const HEADER_DELTA_BASE = 'delta-base';
/** Request header: the run whose snapshot the client holds (the delta's base). */
export const HEADER_BASE_RUN_ID = 'x-snapshot-base-run-id';
/** Response header of a `226`: byte length of the whole snapshot once the tail is appended. */
export const HEADER_BYTES = 'x-snapshot-bytes';
/** The only instance-manipulation this client asks for and accepts. */
export const IM_APPEND = 'append';
/** `226 IM Used`. */
export const STATUS_IM_USED = 226;

/**
 * Largest tail (bytes) a 226 may bring; it is held in memory. The service only sends tails that fit
 * inline (< ~4 MiB); a 226 announcing more is not used, and a plain GET (streamed) follows.
 */
export const MAX_DELTA_TAIL_BYTES = 64 * 1024 * 1024;

/** JSON bodies up to this size (bytes) are brotli-coded at quality 11, larger ones at quality 5. */
export const BROTLI_MAX_QUALITY_BYTES = 1024 * 1024;

/**
 * What the client holds of a snapshot the service stored: the first `bytes` bytes of the session file
 * are exactly run `runId`'s snapshot, whose sha256 is `sha256`. Taken from the state file (state.ts),
 * and only when the session file still begins with those bytes.
 */
export interface HeldBase {
  readonly runId: number;
  /** Byte length of the held snapshot, > 0. */
  readonly bytes: number;
  /** Lowercase hex sha256 of those bytes. */
  readonly sha256: string;
}

/** One streamed pass over a session file (see {@link scanFile}). */
export interface FileScan {
  /** Bytes read: the file's length at the time of the read. */
  readonly size: number;
  /** sha256 (hex) of the whole file. */
  readonly sha256: string;
  /** sha256 (hex) of the first `baseBytes` bytes; undefined when the file is shorter. */
  readonly baseSha256: string | undefined;
  /**
   * The bytes after the first `baseBytes` (possibly empty); undefined when the file is shorter than
   * `baseBytes` or when there are more than `keepTailUpTo` of them (they are then hashed, not kept).
   */
  readonly tail: Buffer | undefined;
}

const READ_CHUNK = 1024 * 1024;

/**
 * Reads `path` once, streaming (≤ 1 MiB chunks): the sha256 of the whole file and of its first
 * `baseBytes` bytes, and the bytes after them when there are at most `keepTailUpTo` (memory is bounded
 * by that, whatever the file's size). Throws the filesystem error (ENOENT, EISDIR…).
 */
export async function scanFile(path: string, baseBytes: number, keepTailUpTo: number): Promise<FileScan> {
  const hash = createHash('sha256');
  let size = 0;
  let baseSha256: string | undefined = baseBytes === 0 ? hash.copy().digest('hex') : undefined;
  const tail: Buffer[] = [];
  let tailBytes = 0;
  for await (const raw of createReadStream(path, { highWaterMark: READ_CHUNK })) {
    const chunk = raw as Buffer;
    let rest = chunk;
    if (size < baseBytes) {
      const head = chunk.subarray(0, Math.min(chunk.length, baseBytes - size));
      hash.update(head);
      if (size + head.length === baseBytes) baseSha256 = hash.copy().digest('hex');
      rest = chunk.subarray(head.length);
    }
    if (rest.length > 0) {
      hash.update(rest);
      tailBytes += rest.length;
      if (tailBytes <= keepTailUpTo) tail.push(Buffer.from(rest));
    }
    size += chunk.length;
  }
  return {
    size,
    sha256: hash.digest('hex'),
    baseSha256,
    tail: baseSha256 !== undefined && tailBytes <= keepTailUpTo ? Buffer.concat(tail) : undefined,
  };
}

const fatalUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * The appended bytes as text, when they are valid UTF-8 on their own (a boundary that splits a
 * character, or bytes that are not UTF-8, give undefined). `ignoreBOM` keeps a leading U+FEFF: the
 * text must encode back to exactly these bytes.
 */
export function utf8OnItsOwn(bytes: Uint8Array): string | undefined {
  try {
    return fatalUtf8.decode(bytes);
  } catch {
    return undefined;
  }
}

/** The append-write body (`POST …/snapshot`), fields in the contract's order. */
export function appendBody(opts: {
  runId: number;
  terminalStatus: string;
  appendJsonl: string;
  base: HeldBase;
  sha256: string;
}): string {
  return JSON.stringify({
    runId: opts.runId,
    terminalStatus: opts.terminalStatus,
    appendJsonl: opts.appendJsonl,
    base: { runId: opts.base.runId, bytes: opts.base.bytes, sha256: opts.base.sha256 },
    sha256: opts.sha256,
  });
}

const brotli = promisify(brotliCompress);

/**
 * Brotli for a request body (`Content-Encoding: br`): text mode, quality 11 up to
 * {@link BROTLI_MAX_QUALITY_BYTES} of input, quality 5 above (quality 11 costs ~1 s per MiB). Runs on the
 * libuv pool, so timers (deadline, abort) keep firing while it works.
 */
export function brotliBody(json: Buffer): Promise<Buffer> {
  return brotli(json, {
    params: {
      [zlibConstants.BROTLI_PARAM_MODE]: zlibConstants.BROTLI_MODE_TEXT,
      [zlibConstants.BROTLI_PARAM_QUALITY]: json.length <= BROTLI_MAX_QUALITY_BYTES ? 11 : 5,
      [zlibConstants.BROTLI_PARAM_SIZE_HINT]: json.length,
    },
  });
}

/** Whether a comma-separated header (`IM`) lists `token` (case-insensitive). */
export function listsToken(value: string | null, token: string): boolean {
  if (value === null) return false;
  return value.split(',').some((t) => t.trim().split(';')[0]?.trim().toLowerCase() === token);
}

/** The opaque tag of an entity-tag header value (`"x"`, `W/"x"`), lowercased; undefined if malformed. */
export function entityTag(value: string | null): string | undefined {
  const m = /^(?:W\/)?"([^"]*)"$/.exec(value?.trim() ?? '');
  return m?.[1]?.toLowerCase();
}

/** A plain non-negative safe integer header value (`x-snapshot-bytes`), or undefined. */
export function parseByteCount(value: string | null): number | undefined {
  if (value === null || !/^\d{1,16}$/.test(value.trim())) return undefined;
  const n = Number(value.trim());
  return Number.isSafeInteger(n) ? n : undefined;
}

/**
 * The first `prefixBytes` bytes of `path`, streamed, then `tail`: the content a 226 describes. Errors
 * reading the file propagate (the caller rejects the delta). Fewer bytes than `prefixBytes` (the file
 * shrank meanwhile) simply yield a shorter stream, which the caller's length check rejects.
 */
export function prefixThenTail(path: string, prefixBytes: number, tail: Uint8Array): ReadableStream<Uint8Array> {
  async function* chunks(): AsyncGenerator<Uint8Array> {
    if (prefixBytes > 0) {
      for await (const c of createReadStream(path, { start: 0, end: prefixBytes - 1, highWaterMark: READ_CHUNK })) yield c as Buffer;
    }
    if (tail.byteLength > 0) yield tail;
  }
  const it = chunks();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const { done, value } = await it.next();
      if (done) controller.close();
      else controller.enqueue(value);
    },
    async cancel() {
      await it.return(undefined);
    },
  });
}

/** Reads a whole response body, failing (undefined) past `limit` bytes; network errors propagate. */
export async function readBodyUpTo(res: Response, limit: number): Promise<Buffer | undefined> {
  const { bytes, truncated } = await readUpTo(res, limit);
  return truncated ? undefined : bytes;
}
