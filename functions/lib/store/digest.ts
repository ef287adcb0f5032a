import { createHash } from 'node:crypto';
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
