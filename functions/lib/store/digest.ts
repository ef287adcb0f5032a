import { createHash } from 'node:crypto';
import { crc32, createCRC32, createSHA256 } from 'hash-wasm';
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
 * The digests of a chain run's bytes whose running state can be saved and resumed (hash-wasm's
 * `save()`/`load()`): SHA-256 (the run's identity; 116-byte state in hash-wasm 4.x) and CRC-32 (the gzip
 * trailer a chain run is served with, RFC 1952 §2.3.1; 8-byte state). Appends continue them from the base
 * run's saved states over the appended bytes alone, so their cost never depends on the transcript's length.
 */
export interface ResumedDigest {
  /** sha256 (hex) of base + appended bytes. */
  readonly sha256: string;
  /** CRC-32 (unsigned) of base + appended bytes. */
  readonly crc32: number;
  /** The running states after them, for the next append. */
  readonly state: DigestState;
}

export interface DigestState {
  readonly sha256: Uint8Array;
  readonly crc32: Uint8Array;
}

/**
 * Continues the digests of the base (`state`, as saved after it; undefined: from the start) over `data`.
 * Undefined when a state cannot be loaded (written by another hash-wasm version, or corrupt): the caller
 * treats the base as one it cannot extend.
 */
export async function resumeDigests(state: DigestState | undefined, data: Uint8Array): Promise<ResumedDigest | undefined> {
  const sha = await createSHA256();
  const crc = await createCRC32();
  if (state === undefined) {
    sha.init();
    crc.init();
  } else {
    try {
      sha.load(state.sha256);
      crc.load(state.crc32);
    } catch {
      return undefined;
    }
  }
  sha.update(data);
  crc.update(data);
  const saved: DigestState = { sha256: sha.save(), crc32: crc.save() };
  return { state: saved, sha256: sha.digest('hex'), crc32: Number.parseInt(crc.digest('hex'), 16) >>> 0 };
}

/** CRC-32 (RFC 1952 §8) of `data`, unsigned. */
export async function crc32Of(data: Uint8Array): Promise<number> {
  return Number.parseInt(await crc32(data), 16) >>> 0;
}
