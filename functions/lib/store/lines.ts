import { createHash } from 'node:crypto';
import { Readable, pipeline } from 'node:stream';
import { createGunzip, createInflateRaw } from 'node:zlib';
import { paginateQuery } from '@aws-sdk/client-dynamodb';
import { GetObjectCommand, NoSuchKey } from '@aws-sdk/client-s3';
import { marshall } from '@aws-sdk/util-dynamodb';
import { readChain } from './chain.js';
import type { CallOptions, StoreContext } from './context.js';
import { StoreError } from './errors.js';
import { RUN_SK_PREFIX, type Extent, type RunRecord } from './schema.js';

/**
 * JSONL lines of a stored run by range, for the operator API (`GET /admin/lines`), without holding the
 * run in memory: the stored bytes are streamed from S3 and decoded as they arrive, and the read stops as
 * soon as the page is complete. Where a page can start depends on how the run is stored:
 *
 *   identity object   a ranged GetObject from the page's first byte: O(page) whatever the offset.
 *   gzip object       (direct POSTs of non-completed runs, gzip uploads) gzip cannot be entered in the
 *                     middle: every page inflates from the start and skips to its offset, O(offset) —
 *                     a page near the end of a 200 MB transcript inflates ~200 MB (≈ 1 s of CPU), and paging
 *                     through all of it costs O(size² / page).
 *   chain run         its stream is raw-deflate fragments, each the deflate of one append and decodable on
 *                     its own (chain.ts), so a page starts at the last fragment boundary at or before its
 *                     offset: ranged GetObjects of the chain objects from there. Boundaries are known from
 *                     the RUN records of the same chain (`storedBytes` → `bytes`: every run of a chain ends
 *                     on one); the cursor carries the one the next page starts from. Cost: O(distance
 *                     from that boundary + page) — one append's bytes for a transcript grown turn by turn;
 *                     a run promoted from one large object is one fragment, and costs like a gzip object.
 *
 * Pages are decoded, not digest-verified, except when a read happens to decode the run from its first byte
 * to its last (then the sha256 and length are checked, as a hydrate would): verifying a range would mean
 * reading everything. Decoding never goes past the recorded length, and a stream that ends early, decodes
 * to more bytes than recorded, or is not valid deflate/gzip is StoreError('INTEGRITY').
 */

/** Where a page starts: the line number (1-based) and the decoded byte offset of its first line. */
export interface LinePosition {
  readonly line: number;
  readonly offset: number;
}

/**
 * A point where decoding can begin: stored offset `stored` (a fragment boundary of the run's chain) decodes
 * from decoded offset `decoded`. Only chain runs have any besides {0, 0}.
 */
export interface ResumePoint {
  readonly stored: number;
  readonly decoded: number;
}

export const START: ResumePoint = Object.freeze({ stored: 0, decoded: 0 });

export interface LineEntry {
  /** 1-based line number. */
  readonly line: number;
  /** Byte offset of the line's first byte in the run's decoded bytes. */
  readonly offset: number;
  /** The line's length in bytes (UTF-8, without its `\n`). */
  readonly bytes: number;
  /** The line as text (UTF-8; invalid sequences become U+FFFD), cut when `truncated`. */
  readonly text: string;
  /** True when the line was longer than a page's text budget and `text` is only its beginning. */
  readonly truncated: boolean;
}

export interface LinesPage {
  readonly lines: LineEntry[];
  /** Where the next page starts, with the resume point it can decode from; undefined after the last line. */
  readonly next: (LinePosition & { readonly resume: ResumePoint }) | undefined;
}

export interface LinesOptions extends CallOptions {
  /** Most lines on the page (≥ 1). */
  readonly limit: number;
  /**
   * Most text on the page, measured as the JSON-encoded size of the lines' `text` (so a page answer stays
   * far below Lambda's 6 MB response limit whatever the text holds). A line alone larger than this is cut.
   */
  readonly maxTextBytes: number;
}

/**
 * One page of lines of `run` (a record of the conversation `pk`) starting at `position`, decoding from
 * `resume` (which must be a resume point of this run at or before `position.offset`; {@link START} always
 * is). Resolves with 'gone' when the run's object or chain is gone (a clear, retention or erasure deleted
 * it after the record was read: the caller reads the record again). Throws StoreError('INTEGRITY') for
 * stored bytes that do not decode to the record, SDK errors otherwise.
 */
export async function readLines(
  ctx: StoreContext,
  pk: string,
  run: RunRecord,
  position: LinePosition,
  resume: ResumePoint,
  opts: LinesOptions,
): Promise<LinesPage | 'gone'> {
  if (position.offset > run.bytes || resume.decoded > position.offset) throw new RangeError('position outside the run');
  const collector = new LineCollector(position, opts.limit, opts.maxTextBytes);
  if (position.offset < run.bytes) {
    const source = await decodedSource(ctx, pk, run, position.offset, resume, opts.signal);
    if (source === 'gone') return 'gone';
    const outcome = await feed(source, run, position.offset, collector);
    if (outcome === 'gone') return 'gone';
  }
  const page = collector.result(run.bytes);
  if (!page.next) return { lines: page.lines, next: undefined };
  const from = run.chainId === undefined ? START : await resumePointFor(ctx, pk, run, page.next.offset, resume, opts.signal);
  return { lines: page.lines, next: { ...page.next, resume: from } };
}

/** Decoded bytes of `run`, from decoded offset `start` on (`verify`: `start` is the run's first byte). */
interface DecodedSource {
  readonly stream: Readable;
  readonly start: number;
}

class Gone extends Error {
  override name = 'Gone';
}

async function decodedSource(
  ctx: StoreContext,
  pk: string,
  run: RunRecord,
  offset: number,
  resume: ResumePoint,
  abortSignal: AbortSignal | undefined,
): Promise<DecodedSource | 'gone'> {
  if (run.chainId !== undefined) {
    const chain = await readChain(ctx, pk, run.chainId, abortSignal);
    if (!chain) return 'gone';
    if (chain.end < run.storedBytes) throw new StoreError('INTEGRITY', `chain of run ${run.runId} holds ${chain.end} stored bytes, ${run.storedBytes} needed`);
    const stored = Readable.from(chainRange(ctx, chain.extents, resume.stored, run.storedBytes, abortSignal));
    return { stream: pipeline(stored, createInflateRaw(), () => {}), start: resume.decoded };
  }
  // An identity object is the decoded bytes themselves: start right at the page.
  const identity = run.encoding === 'identity';
  let body: Readable;
  try {
    const obj = await ctx.s3.send(
      new GetObjectCommand({ Bucket: ctx.bucket, Key: run.s3Key, ...(identity && offset > 0 && { Range: `bytes=${offset}-` }) }),
      { abortSignal },
    );
    body = obj.Body as Readable;
  } catch (err) {
    if (err instanceof NoSuchKey) return 'gone';
    throw err;
  }
  if (identity) return { stream: body, start: offset };
  return { stream: pipeline(body, createGunzip(), () => {}), start: 0 };
}

/**
 * The stored bytes [start, end) of a chain laid out as `extents`, streamed object by object with ranged
 * GetObjects, followed by an empty final deflate block (the fragments lack one). Throws Gone when an object
 * is missing (compaction replaced it since the layout was read, or a clear deleted it).
 */
async function* chainRange(ctx: StoreContext, extents: readonly Extent[], start: number, end: number, abortSignal?: AbortSignal): AsyncGenerator<Buffer> {
  let offset = 0;
  for (const extent of extents) {
    const from = Math.max(start, offset);
    const to = Math.min(end, offset + extent.length);
    offset += extent.length;
    if (from >= to) continue;
    let body: Readable;
    try {
      const obj = await ctx.s3.send(
        new GetObjectCommand({ Bucket: ctx.bucket, Key: extent.key, Range: `bytes=${from - (offset - extent.length)}-${to - (offset - extent.length) - 1}` }),
        { abortSignal },
      );
      body = obj.Body as Readable;
    } catch (err) {
      if (err instanceof NoSuchKey) throw new Gone(extent.key);
      throw err;
    }
    try {
      for await (const chunk of body) yield chunk as Buffer;
    } finally {
      body.destroy();
    }
  }
  yield Buffer.from([0x03, 0x00]); // the empty final block (chain.ts FINAL_BLOCK)
}

/**
 * Feeds the decoded bytes from `source` into `collector` until the page is complete or the run ends.
 * Checks the length (and, when decoding started at the run's first byte, the sha256) once the whole run was
 * decoded; never reads past the recorded length.
 */
async function feed(source: DecodedSource, run: RunRecord, offset: number, collector: LineCollector): Promise<'done' | 'gone'> {
  const hash = source.start === 0 ? createHash('sha256') : undefined;
  let position = source.start;
  try {
    for await (const raw of source.stream) {
      let chunk = raw as Buffer;
      if (position + chunk.length > run.bytes) throw new StoreError('INTEGRITY', `stored bytes of run ${run.runId} decode to more than ${run.bytes} bytes`);
      hash?.update(chunk);
      const skip = Math.max(0, offset - position);
      position += chunk.length;
      if (skip >= chunk.length) continue;
      chunk = chunk.subarray(skip);
      if (collector.push(chunk)) return 'done';
    }
  } catch (err) {
    if (err instanceof Gone) return 'gone';
    if (err instanceof StoreError) throw err;
    if ((err as { code?: string }).code?.startsWith('Z_')) throw new StoreError('INTEGRITY', `stored bytes of run ${run.runId} do not decode`, { cause: err });
    throw err;
  } finally {
    source.stream.destroy();
  }
  if (position !== run.bytes) throw new StoreError('INTEGRITY', `stored bytes of run ${run.runId} decode to ${position} bytes, not ${run.bytes}`);
  if (hash && hash.digest('hex') !== run.sha256) throw new StoreError('INTEGRITY', `stored bytes of run ${run.runId} do not match its record`);
  collector.end();
  return 'done';
}

/**
 * The best resume point for a page that starts at decoded offset `offset` of chain run `run`: the last
 * fragment boundary at or before it. Boundaries are where the runs of the same chain end (one Query of the
 * conversation's RUN records, filtered to the chain; a chain's runs are all prefixes of it).
 */
async function resumePointFor(
  ctx: StoreContext,
  pk: string,
  run: RunRecord,
  offset: number,
  current: ResumePoint,
  abortSignal?: AbortSignal,
): Promise<ResumePoint> {
  let best = current;
  const pages = paginateQuery(
    { client: ctx.ddb },
    {
      TableName: ctx.table,
      KeyConditionExpression: 'pk = :pk AND begins_with(sk, :run)',
      FilterExpression: 'chainId = :chain',
      ProjectionExpression: 'storedBytes, #b',
      ExpressionAttributeNames: { '#b': 'bytes' },
      ExpressionAttributeValues: marshall({ ':pk': pk, ':run': RUN_SK_PREFIX, ':chain': run.chainId }),
    },
    { abortSignal },
  );
  for await (const page of pages) {
    for (const item of page.Items ?? []) {
      const stored = Number(item['storedBytes']?.N);
      const decoded = Number(item['bytes']?.N);
      if (!Number.isSafeInteger(stored) || !Number.isSafeInteger(decoded)) continue;
      if (stored <= run.storedBytes && decoded <= offset && decoded <= run.bytes && stored > best.stored && decoded >= best.decoded) best = { stored, decoded };
    }
  }
  return best;
}

/**
 * Splits decoded bytes into lines for one page: fed chunks that start at `position.offset` (a line
 * start), it keeps at most `maxTextBytes` of any line and stops once the page holds `limit` lines or the next
 * line would push the page's text past `maxTextBytes` (a page always holds at least one line). Exported for
 * unit tests.
 */
export class LineCollector {
  private readonly lines: LineEntry[] = [];
  private textBytes = 0;
  private line: number;
  private lineStart: number;
  private kept: Buffer[] = [];
  private keptBytes = 0;
  private lineBytes = 0;
  private done = false;

  constructor(
    position: LinePosition,
    private readonly limit: number,
    private readonly maxTextBytes: number,
  ) {
    this.line = position.line;
    this.lineStart = position.offset;
  }

  /** Feeds the next decoded bytes; true once the page is complete (feed nothing more). */
  push(chunk: Buffer): boolean {
    let at = 0;
    while (at < chunk.length && !this.done) {
      const nl = chunk.indexOf(0x0a, at);
      const end = nl < 0 ? chunk.length : nl;
      this.keep(chunk.subarray(at, end));
      // The page already has lines and this one, unfinished, cannot fit any more: stop before it.
      if (this.lines.length > 0 && this.textBytes + this.keptBytes > this.maxTextBytes) {
        this.done = true;
        break;
      }
      if (nl < 0) break;
      this.finishLine(1);
      at = nl + 1;
    }
    return this.done;
  }

  /** The run ended: a last line without `\n` is a line too. */
  end(): void {
    if (!this.done && this.lineBytes > 0) this.finishLine(0);
  }

  /** The page, and where the next one starts (undefined when the run's `total` bytes are all listed). */
  result(total: number): { lines: LineEntry[]; next: LinePosition | undefined } {
    const next = this.lineStart < total ? { line: this.line, offset: this.lineStart } : undefined;
    return { lines: this.lines, next };
  }

  private keep(bytes: Buffer): void {
    this.lineBytes += bytes.length;
    const room = this.maxTextBytes - this.keptBytes;
    if (room > 0 && bytes.length > 0) {
      const part = bytes.subarray(0, room);
      this.kept.push(Buffer.from(part)); // a copy: the chunk's buffer is reused by the decoder
      this.keptBytes += part.length;
    }
  }

  private finishLine(terminator: number): void {
    const raw = Buffer.concat(this.kept, this.keptBytes);
    let truncated = this.lineBytes > raw.length;
    let text = (truncated ? raw.subarray(0, charBoundary(raw, raw.length)) : raw).toString('utf8');
    let size = encodedSize(text);
    if (size > this.maxTextBytes) {
      text = cutToEncodedSize(text, this.maxTextBytes);
      size = encodedSize(text);
      truncated = true;
    }
    if (this.lines.length > 0 && this.textBytes + size > this.maxTextBytes) {
      this.done = true;
      return;
    }
    this.lines.push({ line: this.line, offset: this.lineStart, bytes: this.lineBytes, text, truncated });
    this.textBytes += size;
    this.line += 1;
    this.lineStart += this.lineBytes + terminator;
    this.kept = [];
    this.keptBytes = 0;
    this.lineBytes = 0;
    if (this.lines.length >= this.limit) this.done = true;
  }
}

/** The largest n ≤ `end` such that `buf[0, n)` does not end inside a UTF-8 sequence. */
function charBoundary(buf: Buffer, end: number): number {
  let n = end;
  // Back off continuation bytes (10xxxxxx), then the lead byte of the sequence they belong to, if cut.
  let back = 0;
  while (n - back > 0 && (buf[n - back - 1]! & 0xc0) === 0x80 && back < 3) back++;
  if (n - back > 0) {
    const lead = buf[n - back - 1]!;
    const need = lead >= 0xf0 ? 3 : lead >= 0xe0 ? 2 : lead >= 0xc0 ? 1 : 0;
    if (need > back) n = n - back - 1;
  }
  return n;
}

/** Bytes `text` takes as a JSON string's contents (UTF-8, with JSON's escapes). */
function encodedSize(text: string): number {
  return Buffer.byteLength(JSON.stringify(text)) - 2;
}

/** Bytes one code point takes inside a JSON string (JSON.stringify's escapes; `units`: its UTF-16 length). */
function encodedCodePointSize(cp: number, units: number): number {
  if (cp === 0x22 || cp === 0x5c) return 2; // \" \\
  if (cp < 0x20) return [0x08, 0x09, 0x0a, 0x0c, 0x0d].includes(cp) ? 2 : 6; // \n … or \u00XX
  if (cp < 0x80) return 1;
  if (cp < 0x800) return 2;
  if (units === 1 && cp >= 0xd800 && cp <= 0xdfff) return 6; // a lone surrogate: \uDXXX
  return cp > 0xffff ? 4 : 3;
}

/** `text` cut at a code point boundary so that its JSON-encoded size is at most `max` (one linear pass). */
function cutToEncodedSize(text: string, max: number): string {
  let size = 0;
  for (let i = 0; i < text.length; ) {
    const cp = text.codePointAt(i)!;
    const units = cp > 0xffff ? 2 : 1;
    size += encodedCodePointSize(cp, units);
    if (size > max) return text.slice(0, i);
    i += units;
  }
  return text;
}
