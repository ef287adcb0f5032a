/**
 * Makes the embedded s3rver 3.7.1 survive any request. Local development and tests only.
 *
 * s3rver's filesystem store (node_modules/s3rver/lib/stores/filesystem.js) wires its streams with
 * `a.pipe(b).on('error', …).pipe(c)`: an error on the request stream, on a part's read stream or on
 * the file write stream has no listener, so it becomes an uncaughtException that kills the process
 * hosting the emulator — `npm start`, with every conversation in flight. Known triggers:
 * - CompleteMultipartUpload naming a part that was never uploaded (ENOENT on the part's read stream);
 * - a PUT racing a DELETE that removes the key's now-empty directory between s3rver's `mkdirp` and
 *   its open of the object file (ENOENT on the write stream), or a key segment longer than the file
 *   system allows (ENAMETOOLONG).
 *
 * {@link hardenS3rverStore} replaces the store methods that write data with versions built on
 * `stream.pipeline` (every stream's error rejects the call, which s3rver turns into an S3 error
 * response) and that write through a temporary file renamed into place, so a process killed mid-write
 * never leaves a torn object or metadata file behind. CompleteMultipartUpload checks its parts first
 * and answers like S3: 404 NoSuchUpload, 400 InvalidPart (missing part or ETag mismatch).
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, rmdir, unlink } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';

const require = createRequire(import.meta.url);

/** The parts of s3rver's FilesystemStore this module relies on (s3rver 3.7.1). */
interface FilesystemStore {
  rootDirectory: string;
  getBucketPath(bucket: string): string;
  getResourcePath(bucket: string, key: string | undefined, resource: string): string;
  putMetadata(bucket: string, key: string, metadata: Record<string, unknown>, md5?: string): Promise<void>;
  putObject(object: S3ObjectLike): Promise<{ size: number; md5: string }>;
  putPart(bucket: string, uploadId: string, partNumber: number | string, content: Readable): Promise<{ size: number; md5: string }>;
  putObjectMultipart(bucket: string, uploadId: string, parts: { number: number; etag: string }[]): Promise<{ size: number; md5: string }>;
  deleteObject(bucket: string, key: string): Promise<void>;
}
interface S3ObjectLike {
  bucket: string;
  key: string;
  content: Readable | Buffer;
  metadata: Record<string, unknown>;
}
type S3ErrorCtor = new (code: string, message: string, detail?: Record<string, unknown>) => Error;
type S3ObjectCtor = new (bucket: string, key: string, content: Readable | Buffer | null, metadata: Record<string, unknown>) => S3ObjectLike;

const HARDENED = Symbol.for('transcript-store.s3rver-hardened');
/**
 * Directory (inside each bucket's directory) for files being written. s3rver's listing only reports
 * files ending in `._S3rver_object`, so nothing in here is ever visible as an object; whatever a kill
 * left here is deleted at the next start (see repair.ts).
 */
export const TEMP_DIR = '._S3rver_tmp';

/**
 * Patches s3rver's FilesystemStore prototype (once per process; later calls do nothing). Call before
 * requests reach an s3rver instance; instances already created are patched too (shared prototype).
 * Throws if the installed s3rver does not have the expected shape (a version other than 3.7.x).
 */
export function hardenS3rverStore(): void {
  const Store = require('s3rver/lib/stores/filesystem') as { prototype: FilesystemStore & { [HARDENED]?: true } };
  const S3Error = require('s3rver/lib/models/error') as S3ErrorCtor;
  const S3Object = require('s3rver/lib/models/object') as S3ObjectCtor;
  const proto = Store.prototype;
  if (proto[HARDENED]) return;
  for (const name of ['getResourcePath', 'putObject', 'putPart', 'putObjectMultipart', 'putMetadata', 'deleteObject'] as const) {
    if (typeof proto[name] !== 'function') throw new Error(`s3rver FilesystemStore.${name} not found: hardening needs s3rver 3.7.x`);
  }

  /** Maps a file-system error to the S3 error s3rver should answer with. */
  const toS3Error = (err: unknown): Error => {
    if (err instanceof S3Error) return err;
    const code = (err as NodeJS.ErrnoException | undefined)?.code;
    if (code === 'ENAMETOOLONG') return new S3Error('KeyTooLongError', 'Your key is too long');
    if (code === 'ERR_STREAM_PREMATURE_CLOSE' || code === 'ECONNRESET' || code === 'ECONNABORTED') {
      return new S3Error('IncompleteBody', 'You did not provide the number of bytes specified by the Content-Length HTTP header');
    }
    return new S3Error('InternalError', 'We encountered an internal error. Please try again.');
  };

  /**
   * Streams `content` into the new file `tmp` (exclusive create); returns its size and md5 (hex). On
   * any error of either stream the temp file is removed and an S3 error is thrown.
   */
  const writeTemp = async (tmp: string, content: Readable | Buffer): Promise<{ size: number; md5: string }> => {
    const md5 = createHash('md5');
    let size = 0;
    const measure = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        md5.update(chunk);
        size += chunk.length;
        cb(null, chunk);
      },
    });
    let out: WriteStream;
    try {
      out = await openForWrite(tmp);
    } catch (err) {
      if (!Buffer.isBuffer(content)) content.resume(); // drain the request so the client gets the answer
      throw toS3Error(err);
    }
    try {
      await pipeline(Buffer.isBuffer(content) ? Readable.from([content]) : content, measure, out);
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      throw toS3Error(err);
    }
    return { size, md5: md5.digest('hex') };
  };

  /** A fresh temp file path in the bucket's temp directory (short names: keys may be long). */
  const tempPath = (store: FilesystemStore, bucket: string): string =>
    join(store.getBucketPath(bucket), TEMP_DIR, randomBytes(12).toString('hex'));

  /** Moves `tmp` to `path` (rename, creating the directory); removes `tmp` and throws an S3 error on failure. */
  const publish = async (tmp: string, path: string): Promise<void> => {
    try {
      await renameInto(tmp, path);
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      throw toS3Error(err);
    }
  };

  /**
   * Opens `path` for writing (exclusive), creating its directory; a concurrent DELETE may remove that
   * (empty) directory between the mkdir and the open, so that ENOENT is retried a few times. Opening
   * before any byte of the body is read keeps the body stream intact for the retry.
   */
  const openForWrite = async (path: string): Promise<WriteStream> => {
    for (let attempt = 0; ; attempt++) {
      await mkdir(dirname(path), { recursive: true });
      const ws = createWriteStream(path, { flags: 'wx' });
      try {
        await new Promise<void>((resolve, reject) => {
          ws.once('open', () => resolve());
          ws.once('error', reject);
        });
        return ws;
      } catch (err) {
        ws.destroy();
        if ((err as NodeJS.ErrnoException).code === 'ENOENT' && attempt < 5) continue;
        throw err;
      }
    }
  };

  /** rename(2), recreating the target directory once if a concurrent DELETE removed it. */
  const renameInto = async (from: string, to: string): Promise<void> => {
    try {
      await rename(from, to);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      await mkdir(dirname(to), { recursive: true });
      await rename(from, to);
    }
  };

  /** writeFile through a temp file + rename: readers (and a restart after kill -9) never see it torn. */
  const writeFileAtomically = async (store: FilesystemStore, bucket: string, path: string, data: string): Promise<void> => {
    const tmp = tempPath(store, bucket);
    await writeTemp(tmp, Buffer.from(data));
    await publish(tmp, path);
  };

  proto.putMetadata = async function putMetadata(this: FilesystemStore, bucket, key, metadata, md5) {
    // As s3rver's own (same files, same filtering), but each file written atomically.
    const json = filterMetadata(metadata);
    if (md5) await writeFileAtomically(this, bucket, this.getResourcePath(bucket, key, 'object.md5'), md5);
    await writeFileAtomically(this, bucket, this.getResourcePath(bucket, key, 'metadata.json'), JSON.stringify(json, null, 2));
  };

  proto.putObject = async function putObject(this: FilesystemStore, object) {
    const objectPath = this.getResourcePath(object.bucket, object.key, 'object');
    // Data first, under a temp name; then md5 + metadata; then the object appears under its name.
    // Listing only sees `._S3rver_object` files, so a half-written object is never visible.
    const tmp = tempPath(this, object.bucket);
    const { size, md5 } = await writeTemp(tmp, object.content);
    try {
      await this.putMetadata(object.bucket, object.key, object.metadata, md5);
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      throw toS3Error(err);
    }
    await publish(tmp, objectPath);
    return { size, md5 };
  };

  proto.putPart = async function putPart(this: FilesystemStore, bucket, uploadId, partNumber, content) {
    const partPath = join(this.getResourcePath(bucket, undefined, 'uploads'), uploadId, String(partNumber));
    const tmp = tempPath(this, bucket);
    const result = await writeTemp(tmp, content);
    await writeFileAtomically(this, bucket, `${partPath}.md5`, result.md5);
    await publish(tmp, partPath);
    return result;
  };

  proto.putObjectMultipart = async function putObjectMultipart(this: FilesystemStore, bucket, uploadId, parts) {
    const uploadDir = join(this.getResourcePath(bucket, undefined, 'uploads'), uploadId);
    let key: string;
    let metadata: Record<string, unknown>;
    try {
      [key, metadata] = await Promise.all([
        readFile(join(uploadDir, 'key'), 'utf8'),
        readFile(join(uploadDir, 'metadata'), 'utf8').then((t) => JSON.parse(t) as Record<string, unknown>),
      ]);
    } catch {
      throw new S3Error(
        'NoSuchUpload',
        'The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.',
        { UploadId: uploadId },
      );
    }
    const sorted = [...parts].sort((a, b) => a.number - b.number);
    for (const part of sorted) {
      const md5 = await readFile(join(uploadDir, `${part.number}.md5`), 'utf8').catch(() => undefined);
      if (!Number.isSafeInteger(part.number) || md5 === undefined || md5.trim() !== part.etag.replace(/"/g, '').trim()) {
        throw new S3Error(
          'InvalidPart',
          "One or more of the specified parts could not be found. The part may not have been uploaded, or the specified entity tag may not match the part's entity tag.",
          { UploadId: uploadId, PartNumber: part.number, ETag: part.etag },
        );
      }
    }
    async function* concatenated(): AsyncGenerator<Buffer> {
      for (const part of sorted) yield* createReadStream(join(uploadDir, String(part.number))) as AsyncIterable<Buffer>;
    }
    const result = await this.putObject(new S3Object(bucket, key, Readable.from(concatenated()), metadata));
    await rm(uploadDir, { recursive: true, force: true });
    return result;
  };

  proto.deleteObject = async function deleteObject(this: FilesystemStore, bucket, key) {
    await Promise.all(
      ['object', 'object.md5', 'metadata.json'].map((r) =>
        unlink(this.getResourcePath(bucket, key, r)).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== 'ENOENT') throw toS3Error(err);
        }),
      ),
    );
    // Remove now-empty parent directories, tolerating a concurrent PUT (ENOTEMPTY) or DELETE (ENOENT).
    const parts = key.split('/');
    parts.pop();
    const bucketPath = this.getBucketPath(bucket);
    while (parts.length) {
      const dir = join(bucketPath, ...parts);
      const entries = await readdir(dir).catch(() => undefined);
      if (entries === undefined || entries.length > 0) break;
      try {
        await rmdir(dir);
      } catch {
        break;
      }
      parts.pop();
    }
  };

  proto[HARDENED] = true;
}

/** The metadata s3rver persists: its allowed headers plus every `x-amz-meta-*` (as s3rver does). */
function filterMetadata(metadata: Record<string, unknown>): Record<string, unknown> {
  const S3Object = require('s3rver/lib/models/object') as { ALLOWED_METADATA: string[] };
  const out: Record<string, unknown> = {};
  for (const name of S3Object.ALLOWED_METADATA) if (metadata[name] !== undefined) out[name] = metadata[name];
  for (const [name, value] of Object.entries(metadata)) if (name.startsWith('x-amz-meta-')) out[name] = value;
  return out;
}
