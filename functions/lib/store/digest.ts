import { createHash } from 'node:crypto';
import { createSHA256 } from 'hash-wasm';
import { Transform, Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { StoreError, type StoreErrorCode } from './errors.js';

/** Lowercase hex sha256 of `data`. */
export function sha256Hex(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

export interface StreamDigest {
  /** sha256 (hex) of the decoded bytes. */
  readonly sha256: string;
  /** Number of decoded bytes. */
  readonly bytes: number;
  /** Number of bytes read from the source (before gunzip). */
  readonly storedBytes: number;
  /** sha256 (hex) of the bytes read from the source (before gunzip). */
  readonly storedSha256: string;
}

export interface StreamDigestOptions {
  /** Gunzip the source before hashing. */
  readonly gunzip: boolean;
  /** Most decoded bytes accepted; past it the digest fails with `overLimitCode`. */
  readonly limit: number;
  readonly overLimitCode: StoreErrorCode;
  /** Code of the StoreError thrown when the source is not valid gzip (only with `gunzip`). */
  readonly badGzipCode: StoreErrorCode;
  readonly signal?: AbortSignal | undefined;
}

/**
 * sha256 and length of a stream's bytes (and of the stored bytes as read) — gunzipped first when asked — without holding them: memory
 * stays flat at any size. Throws StoreError(`overLimitCode`) past `limit` decoded bytes and
 * StoreError(`badGzipCode`) for a source that is not gzip; rethrows source and abort errors as they are.
 */
export async function streamDigest(source: Readable, opts: StreamDigestOptions): Promise<StreamDigest> {
  const hash = createHash('sha256');
  const storedHash = createHash('sha256');
  let bytes = 0;
  let storedBytes = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _enc, done) {
      storedBytes += chunk.length;
      storedHash.update(chunk);
      done(null, chunk);
    },
  });
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      bytes += chunk.length;
      if (bytes > opts.limit) return done(new StoreError(opts.overLimitCode, `more than ${opts.limit} decoded bytes`));
      hash.update(chunk);
      done();
    },
  });
  const gunzip = opts.gunzip ? createGunzip() : undefined;
  let badGzip: unknown;
  gunzip?.on('error', (err) => {
    badGzip = err;
  });
  try {
    await pipeline([source, counter, ...(gunzip ? [gunzip] : []), sink], opts.signal ? { signal: opts.signal } : {});
  } catch (err) {
    if (err instanceof StoreError) throw err;
    if (badGzip !== undefined && err === badGzip) throw new StoreError(opts.badGzipCode, 'not valid gzip', { cause: err });
    throw err;
  }
  return { sha256: hash.digest('hex'), bytes, storedBytes, storedSha256: storedHash.digest('hex') };
}

/**
 * SHA-256 whose running state can be saved and resumed (hash-wasm's `save()`/`load()`; 116 bytes in
 * hash-wasm 4.x). Appends use it to compute the whole file's digest from the base run's saved state
 * and the appended bytes alone, so their cost never depends on the transcript's length.
 */
export interface ResumedDigest {
  /** sha256 (hex) of base + appended bytes. */
  readonly sha256: string;
  /** The running state after them, for the next append. */
  readonly state: Uint8Array;
}

/**
 * Continues the SHA-256 of the base (`state`, as saved after it) over `data`. Undefined when `state`
 * cannot be loaded (written by another hash-wasm version, or corrupt): the caller treats the base as
 * one it cannot extend.
 */
export async function resumeSha256(state: Uint8Array | undefined, data: Uint8Array): Promise<ResumedDigest | undefined> {
  const hasher = await createSHA256();
  if (state === undefined) hasher.init();
  else {
    try {
      hasher.load(state);
    } catch {
      return undefined;
    }
  }
  hasher.update(data);
  const saved = hasher.save();
  return { state: saved, sha256: hasher.digest('hex') };
}

/** A running SHA-256 fed chunk by chunk (streams), with its state saved at the end. */
export async function runningSha256(): Promise<{ update(data: Uint8Array): void; finish(): ResumedDigest }> {
  const hasher = await createSHA256();
  hasher.init();
  return {
    update: (data) => void hasher.update(data),
    finish: () => {
      const state = hasher.save();
      return { state, sha256: hasher.digest('hex') };
    },
  };
}
