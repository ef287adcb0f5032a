import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { type FileHandle, mkdir, open, rename, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { TranscriptStoreError } from './errors.js';

/** Runs a filesystem step, turning any failure into a typed `io` error naming the step. */
export async function io<T>(step: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof TranscriptStoreError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new TranscriptStoreError('io', `${step} failed${code ? ` (${code})` : ''}`, { cause: e });
  }
}

/** `.${basename}.${pid}.${random}.tmp`, in the target's directory so rename(2) stays atomic. */
export function tempPathFor(target: string): string {
  return join(dirname(target), `.${basename(target)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
}

/** Hex sha256 of a file, streamed; undefined when it does not exist or cannot be read as a file. */
export async function sha256OfFile(path: string): Promise<string | undefined> {
  try {
    const hash = createHash('sha256');
    for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
    return hash.digest('hex');
  } catch {
    return undefined;
  }
}

export async function ensureDir(path: string): Promise<void> {
  await io('mkdir', () => mkdir(dirname(path), { recursive: true }));
}

async function writeAll(fh: FileHandle, chunk: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < chunk.byteLength) {
    const { bytesWritten } = await fh.write(chunk, offset, chunk.byteLength - offset);
    offset += bytesWritten;
  }
}

/** fsync on a directory makes the rename durable; some filesystems refuse it (EINVAL/EISDIR). */
async function fsyncDir(dir: string): Promise<boolean> {
  let fh: FileHandle | undefined;
  try {
    fh = await open(dir, 'r');
    await fh.sync();
    return true;
  } catch {
    return false;
  } finally {
    await fh?.close().catch(() => {});
  }
}

export interface StreamedFile {
  bytes: number;
  sha256: string;
  dirSynced: boolean;
}

/**
 * Replaces `target` with the bytes of `source`, atomically:
 *
 *   open temp (O_EXCL) → write+hash every chunk → verify(sha256, bytes) → fsync → close
 *     → rename(temp, target) → fsync(dir)
 *
 * Until the rename, `target` is untouched; a failure anywhere before it (body cut, digest
 * mismatch, disk full, abort) unlinks the temp file in `finally`. The rename is the single commit
 * point, so a reader (or a crash) sees the old file or the complete new one, never a torn one.
 * `verify` throws to reject the download. The existing file's permission bits are kept.
 * `onBytes` (optional) is told the running byte count after each chunk is written.
 */
export async function replaceFileAtomically(
  target: string,
  source: ReadableStream<Uint8Array>,
  verify: (sha256: string, bytes: number) => void,
  onBytes?: (bytes: number) => void,
): Promise<StreamedFile> {
  const tmp = tempPathFor(target);
  const oldMode = await stat(target).then(
    (s) => (s.isFile() ? s.mode & 0o7777 : undefined),
    () => undefined,
  );
  let fh: FileHandle | undefined;
  let renamed = false;
  const reader = source.getReader();
  try {
    fh = await io('open temp file', () => open(tmp, 'wx', 0o666));
    if (oldMode !== undefined) {
      const h = fh;
      await io('chmod temp file', () => h.chmod(oldMode));
    }
    const hash = createHash('sha256');
    let bytes = 0;
    for (;;) {
      // Network errors and aborts propagate untyped; the retry loop classifies them.
      const { done, value } = await reader.read();
      if (done) break;
      hash.update(value);
      bytes += value.byteLength;
      const h = fh;
      await io('write temp file', () => writeAll(h, value));
      onBytes?.(bytes);
    }
    const sha256 = hash.digest('hex');
    verify(sha256, bytes);
    const h = fh;
    await io('fsync temp file', () => h.sync());
    fh = undefined;
    await io('close temp file', () => h.close());
    await io('rename temp file', () => rename(tmp, target));
    renamed = true;
    const dirSynced = await fsyncDir(dirname(target));
    return { bytes, sha256, dirSynced };
  } finally {
    reader.cancel().catch(() => {});
    if (fh) await fh.close().catch(() => {});
    if (!renamed) await unlink(tmp).catch(() => {});
  }
}
