/**
 * The presigned-upload path of `writeSnapshot`, for snapshots past the direct-POST limit:
 *
 *   session file ─read─▶ utf-8 check + sha256 ─▶ gzip ─▶ temp file      (learns the transfer size)
 *   POST …/snapshot/uploads {runId, bytes, contentEncoding}  ─▶ ticket    (single URL, or part URLs)
 *   PUT temp file (or each [start, end) slice of it) with an explicit Content-Length ─▶ ETags
 *   POST …/snapshot {terminalStatus, runId, uploadId, parts?}           (the service measures and commits)
 *   unlink temp file                                                    (always, whatever happened)
 *
 * Memory stays flat: the file is only ever streamed (64 KiB–1 MiB chunks), never held whole.
 * Every HTTP step runs through `runWithRetries` and shares the write's overall deadline; a part is
 * re-PUT on its own when it fails (the commit names the ETag of the part that finally landed).
 */
import { isUtf8 } from 'node:buffer';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { type FileHandle, open, stat, unlink } from 'node:fs/promises';
import { type ClientRequest, type IncomingMessage, request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { TranscriptStoreError } from './errors.js';
import { authHeaders, type CallContext, httpError, networkError, readSmallBody, redactUrl, runWithRetries } from './http.js';

const READ_CHUNK = 1024 * 1024;

export type Encoding = 'gzip' | 'identity';

export class NotUtf8 extends Error {}

/** Length of the incomplete UTF-8 sequence at the end of `b` (0–3 bytes), to carry into the next chunk. */
function incompleteTail(b: Buffer): number {
  for (let back = 1; back <= Math.min(3, b.length); back++) {
    const byte = b[b.length - back]!;
    if ((byte & 0xc0) === 0x80) continue; // continuation byte: keep looking for the lead
    const need = byte >= 0xf0 ? 4 : byte >= 0xe0 ? 3 : byte >= 0xc0 ? 2 : 1;
    return need > back ? back : 0;
  }
  return 0; // 1–3 trailing continuation bytes with no lead in reach: invalid, let isUtf8 say so
}

/**
 * Counts, hashes and checks UTF-8 validity of the bytes passing through, without keeping them and
 * without decoding them (`buffer.isUtf8` allocates nothing). A sequence split across two chunks is
 * carried over (at most 3 bytes). `onBytes` (optional) is told the running count after each chunk.
 */
export class Inspect extends Transform {
  bytes = 0;
  private readonly hash = createHash('sha256');
  private carry: Buffer = Buffer.alloc(0);
  digest = '';

  constructor(private readonly onBytes?: (bytes: number) => void) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    this.onBytes?.(this.bytes);
    this.hash.update(chunk);
    let body = chunk;
    if (this.carry.length > 0) {
      // Complete the carried sequence with the next few bytes and check just that piece.
      const take = Math.min(4, chunk.length);
      const joined = Buffer.concat([this.carry, chunk.subarray(0, take)]);
      const tail = incompleteTail(joined);
      if (tail === joined.length) {
        // A chunk too short to finish the sequence: keep carrying (never more than 3 bytes).
        this.carry = joined;
        cb(null, chunk);
        return;
      }
      const head = joined.subarray(0, joined.length - tail);
      // `head` must end exactly on a sequence boundary inside the taken bytes.
      const used = head.length - this.carry.length;
      if (used < 0 || !isUtf8(head)) {
        cb(new NotUtf8());
        return;
      }
      this.carry = Buffer.alloc(0);
      body = chunk.subarray(used);
    }
    const tail = incompleteTail(body);
    if (!isUtf8(body.subarray(0, body.length - tail))) {
      cb(new NotUtf8());
      return;
    }
    if (tail > 0) this.carry = Buffer.from(body.subarray(body.length - tail));
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    if (this.carry.length > 0) {
      cb(new NotUtf8());
      return;
    }
    this.digest = this.hash.digest('hex');
    cb();
  }
}

export interface PreparedFile {
  /** The file to PUT: the compressed temp file, or the session file itself (identity). */
  path: string;
  /** Set when `path` is a temp file the caller must delete. */
  temp: string | undefined;
  encoding: Encoding;
  /** Bytes to transfer (size of `path`). */
  transferBytes: number;
  /** Snapshot bytes (size of the session file as read). */
  bytes: number;
  sha256: string;
}

function tempName(dir: string, sessionFile: string): string {
  return join(dir, `.${basename(sessionFile)}.${process.pid}.${randomBytes(6).toString('hex')}.upload.gz.tmp`);
}

async function openTemp(sessionFile: string, tempDir: string | undefined): Promise<{ path: string; fh: FileHandle }> {
  const dirs = tempDir !== undefined ? [tempDir] : [dirname(sessionFile), tmpdir()];
  let lastErr: unknown;
  for (const dir of dirs) {
    const path = tempName(dir, sessionFile);
    try {
      return { path, fh: await open(path, 'wx', 0o600) };
    } catch (e) {
      lastErr = e;
    }
  }
  const code = (lastErr as NodeJS.ErrnoException | undefined)?.code;
  throw new TranscriptStoreError('io', `create upload temp file failed${code ? ` (${code})` : ''}`, { cause: lastErr });
}

/**
 * Reads the session file once, streaming: checks UTF-8, hashes, and (compress) gzips it into a temp
 * file. On any failure the temp file is already gone when this throws. Throws `NotUtf8`.
 * `onProgress` (optional) gets the bytes read so far and the file's size.
 */
export async function prepareFile(
  sessionFile: string,
  compress: boolean,
  tempDir: string | undefined,
  signal: AbortSignal,
  onProgress?: (bytes: number, totalBytes: number | undefined) => void,
): Promise<PreparedFile> {
  let inspect = new Inspect();
  if (onProgress) {
    const totalBytes = await stat(sessionFile).then((s) => s.size, () => undefined);
    onProgress(0, totalBytes);
    inspect = new Inspect((bytes) => onProgress(bytes, totalBytes));
  }
  const source = createReadStream(sessionFile, { highWaterMark: READ_CHUNK });
  if (!compress) {
    await pipeline(source, inspect, async function* (chunks: AsyncIterable<Buffer>) {
      for await (const _ of chunks) {
        // drain: the inspector keeps nothing
      }
    }, { signal });
    return { path: sessionFile, temp: undefined, encoding: 'identity', transferBytes: inspect.bytes, bytes: inspect.bytes, sha256: inspect.digest };
  }
  let temp: { path: string; fh: FileHandle } | undefined;
  try {
    temp = await openTemp(sessionFile, tempDir);
    const out = temp.fh.createWriteStream();
    await pipeline(source, inspect, createGzip(), out, { signal });
    const { size } = await stat(temp.path);
    return { path: temp.path, temp: temp.path, encoding: 'gzip', transferBytes: size, bytes: inspect.bytes, sha256: inspect.digest };
  } catch (e) {
    source.destroy();
    if (temp) {
      await temp.fh.close().catch(() => {});
      await unlink(temp.path).catch(() => {});
    }
    throw e;
  }
}

export interface Ticket {
  uploadId: string;
  url?: string;
  partBytes?: number;
  parts?: { partNumber: number; url: string }[];
}

function parseTicket(text: string): Ticket {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(text) as Record<string, unknown>;
  } catch {
    o = {};
  }
  const bad = () => new TranscriptStoreError('http_5xx', 'write failed: malformed upload ticket from the server', { status: 200 });
  if (typeof o.uploadId !== 'string' || o.uploadId.length === 0) throw bad();
  if (typeof o.url === 'string') return { uploadId: o.uploadId, url: o.url };
  const parts = o.parts;
  if (typeof o.partBytes !== 'number' || !(o.partBytes > 0) || !Array.isArray(parts) || parts.length === 0) throw bad();
  const out: { partNumber: number; url: string }[] = [];
  for (const p of parts as unknown[]) {
    const q = p as { partNumber?: unknown; url?: unknown };
    if (typeof q.partNumber !== 'number' || !Number.isSafeInteger(q.partNumber) || q.partNumber < 1 || typeof q.url !== 'string') throw bad();
    out.push({ partNumber: q.partNumber, url: q.url });
  }
  return { uploadId: o.uploadId, partBytes: o.partBytes, parts: out };
}

/** `${gatewayUrl}/worker/transcript/snapshot/uploads`, by the same plain concatenation. */
export function uploadsUrl(ctx: CallContext): string {
  return `${ctx.url}/uploads`;
}

export async function createUpload(
  ctx: CallContext,
  runId: number,
  file: PreparedFile,
): Promise<{ ticket: Ticket; attempts: number }> {
  const sub: CallContext = { ...ctx, url: uploadsUrl(ctx) };
  const body = JSON.stringify({ runId, bytes: file.transferBytes, contentEncoding: file.encoding });
  const { value, attempts } = await runWithRetries(sub, async (info) => {
    const res = await sub.fetch(sub.url, {
      method: 'POST',
      headers: { ...authHeaders(sub), 'content-type': 'application/json' },
      body,
      signal: info.signal,
    });
    if (res.status !== 200) throw await httpError(sub, res);
    return parseTicket(await readSmallBody(res, 4 * 1024 * 1024));
  });
  return { ticket: value, attempts };
}

function s3ErrorCode(xml: string): string | undefined {
  return /<Code>([^<]{1,100})<\/Code>/.exec(xml)?.[1];
}

/**
 * One PUT of `[start, start + length)` of `path` to a presigned URL, with an explicit Content-Length
 * (S3 refuses chunked transfer encoding on presigned PUTs). Resolves with the response's ETag.
 */
function putRange(
  url: string,
  path: string,
  start: number,
  length: number,
  signal: AbortSignal,
  onSent: (chunkBytes: number) => void,
): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const request = u.protocol === 'https:' ? httpsRequest : httpRequest;
    let settled = false;
    const fail = (e: unknown) => {
      if (settled) return;
      settled = true;
      req.destroy();
      body.destroy();
      reject(e);
    };
    const body = createReadStream(path, { start, end: start + length - 1, highWaterMark: READ_CHUNK });
    body.on('data', (c: string | Buffer) => onSent(c.length));
    const req: ClientRequest = request(u, {
      method: 'PUT',
      headers: { 'content-length': String(length) },
      signal,
    });
    req.on('error', (e: NodeJS.ErrnoException) => {
      if (signal.aborted) return fail(e); // classified by the retry loop as timeout/deadline/aborted
      fail(networkError('write', url, e, 'upload PUT'));
    });
    body.on('error', (e: NodeJS.ErrnoException) => {
      fail(new TranscriptStoreError('io', `read upload file failed${e.code ? ` (${e.code})` : ''}`, { cause: e }));
    });
    req.on('response', (res: IncomingMessage) => {
      const status = res.statusCode ?? 0;
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        if (size < 16_384) chunks.push(c);
        size += c.length;
      });
      res.on('error', (e) => fail(networkError('write', url, e, 'upload PUT response cut off')));
      res.on('end', () => {
        if (settled) return;
        if (status >= 200 && status < 300) {
          settled = true;
          const etag = res.headers.etag;
          resolve(typeof etag === 'string' ? etag : undefined);
          return;
        }
        const code = s3ErrorCode(Buffer.concat(chunks).toString('utf8'));
        const kind = status === 429 ? 'throttled' : status >= 500 ? 'http_5xx' : 'http_4xx';
        fail(
          new TranscriptStoreError(kind, `write failed: upload PUT answered HTTP ${status}${code ? ` (${code})` : ''}`, {
            status,
            ...(code !== undefined ? { serverCode: code } : {}),
          }),
        );
      });
    });
    body.pipe(req);
  });
}

/** Links a child controller to a parent signal (AbortSignal.any is Node ≥ 20.3). */
function linkedController(parent: AbortSignal | undefined): { controller: AbortController; unlink: () => void } {
  const controller = new AbortController();
  if (!parent) return { controller, unlink: () => {} };
  const onAbort = () => controller.abort(parent.reason);
  if (parent.aborted) controller.abort(parent.reason);
  else parent.addEventListener('abort', onAbort, { once: true });
  return { controller, unlink: () => parent.removeEventListener('abort', onAbort) };
}

/**
 * PUTs the file (single URL) or its parts (`partConcurrency` at a time), each through the retry loop.
 * Returns the parts list for the commit (multipart) and the number of HTTP attempts made.
 */
export async function putFile(
  ctx: CallContext,
  ticket: Ticket,
  file: PreparedFile,
  partConcurrency: number,
): Promise<{ parts: { partNumber: number; etag: string }[] | undefined; attempts: number; puts: number }> {
  // Bytes handed to the sockets so far over all parts; an attempt that is retried takes its count back.
  let sent = 0;
  ctx.progress('upload', 0, file.transferBytes);
  const counter = () => {
    let mine = 0;
    return {
      restart: () => {
        if (mine === 0) return;
        sent -= mine;
        mine = 0;
        ctx.progress('upload', sent, file.transferBytes);
      },
      add: (n: number) => {
        mine += n;
        sent += n;
        ctx.progress('upload', sent, file.transferBytes);
      },
    };
  };
  if (ticket.url) {
    const sub: CallContext = { ...ctx, method: 'PUT', url: ticket.url };
    const count = counter();
    const { attempts } = await runWithRetries(sub, (info) => {
      count.restart();
      return putRange(sub.url, file.path, 0, file.transferBytes, info.signal, count.add);
    });
    ctx.log('debug', 'uploaded', { url: redactUrl(ticket.url), bytes: file.transferBytes, attempts });
    return { parts: undefined, attempts, puts: 1 };
  }
  const partBytes = ticket.partBytes!;
  const wanted = ticket.parts!.filter((p) => (p.partNumber - 1) * partBytes < file.transferBytes);
  const expected = Math.ceil(file.transferBytes / partBytes);
  if (wanted.length !== expected || new Set(wanted.map((p) => p.partNumber)).size !== expected) {
    throw new TranscriptStoreError('http_5xx', 'write failed: the upload ticket does not cover the file', { status: 200 });
  }
  // First definitive failure stops the other parts (their aborts are not reported over it).
  const { controller, unlink: unlinkSignal } = linkedController(ctx.signal);
  const out: { partNumber: number; etag: string }[] = [];
  let attempts = 0;
  let firstError: unknown;
  let next = 0;
  const worker = async () => {
    while (next < wanted.length && firstError === undefined) {
      const p = wanted[next++]!;
      const start = (p.partNumber - 1) * partBytes;
      const length = Math.min(partBytes, file.transferBytes - start);
      const sub: CallContext = { ...ctx, method: 'PUT', url: p.url, signal: controller.signal };
      try {
        const count = counter();
        const r = await runWithRetries(sub, (info) => {
          count.restart();
          return putRange(p.url, file.path, start, length, info.signal, count.add);
        });
        attempts += r.attempts;
        if (!r.value) throw new TranscriptStoreError('http_5xx', `write failed: part ${p.partNumber} answered without an ETag`, { status: 200 });
        out.push({ partNumber: p.partNumber, etag: r.value });
        ctx.log('debug', 'part_uploaded', { partNumber: p.partNumber, bytes: length, attempts: r.attempts });
      } catch (e) {
        if (e instanceof TranscriptStoreError) attempts += e.attempts;
        if (firstError === undefined) {
          firstError = e;
          controller.abort();
        }
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.max(1, Math.min(partConcurrency, wanted.length)) }, worker));
  } finally {
    unlinkSignal();
  }
  if (firstError !== undefined) {
    if (firstError instanceof TranscriptStoreError) firstError.attempts = attempts;
    throw firstError;
  }
  out.sort((a, b) => a.partNumber - b.partNumber);
  return { parts: out, attempts, puts: wanted.length };
}
