import { ConditionalCheckFailedException, GetItemCommand, PutItemCommand, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { GetObjectCommand, HeadObjectCommand, NoSuchKey, NotFound, PutObjectCommand } from '@aws-sdk/client-s3';
import { promisify } from 'node:util';
import { constants as zlibConstants, deflateRaw as deflateRawCb, gunzipSync, inflateRaw as inflateRawCb } from 'node:zlib';
import { NDJSON_CONTENT_TYPE } from '../contract.js';
import type { StoreContext } from './context.js';
import { sha256Hex } from './digest.js';
import { StoreError } from './errors.js';
import { chainItem, chainKey, chainLayoutValues, fromChainItem, materializedObjectKey, type ChainRecord, type Extent, type RunRecord } from './schema.js';

const deflateRaw = promisify(deflateRawCb);
const inflateRaw = promisify(inflateRawCb);

/**
 * Chains: how completed runs that extend one another share their bytes (incremental sync).
 *
 * A chain is an append-only stream of raw DEFLATE fragments (RFC 1951): each is the deflate of one
 * append's bytes, ended with a sync flush (an empty stored block), so it ends on a byte boundary with no
 * final block, and any concatenation of fragments is a valid deflate stream that lacks only its end. A
 * run in a chain is a prefix of it: its bytes are the first `storedBytes` stored bytes. Serving it wraps
 * them as ONE gzip member (RFC 1952: a 10-byte header, the fragments, an empty final block, then the
 * run's CRC-32 and length, both kept with the run) — no recompression, and a single member, because some
 * decoders (curl's, for one) stop after the first member of a multi-member gzip body. Appending a turn
 * adds one fragment at the end; the runs before it are untouched.
 *
 * The stream lives in a few objects (the CHAIN record's `extents`, in order). Compaction concatenates
 * the last few objects into one — bytes copied as they are, never recompressed — so every offset
 * stays valid and every run of the chain still reads the same bytes: only the CHAIN record changes.
 * The objects it replaced are deleted at once; a reader that still holds the old layout (HEAD's cached
 * copy) finds one missing and reads the CHAIN record again.
 *
 * Objects are never shared between chains: a chain's objects are deleted with it (clear) or when
 * compaction replaces them, and nothing else refers to them.
 */

/** The gzip member header (RFC 1952 §2.3): deflate, no flags, no mtime, no extra flags, OS unknown. */
const GZIP_HEADER = Buffer.from([0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff]);
/** An empty final block with fixed Huffman codes (RFC 1951 §3.2.6): BFINAL=1, BTYPE=01, end-of-block. */
const FINAL_BLOCK = Buffer.from([0x03, 0x00]);

/** The deflate fragment of `data`: byte-aligned, without a final block, concatenable with any other. */
export function fragmentOf(data: Uint8Array): Promise<Buffer> {
  return deflateRaw(data, { finishFlush: zlibConstants.Z_SYNC_FLUSH });
}

/** Fragments wrapped as one gzip member whose content has CRC-32 `crc32` and length `bytes`. */
export function wrapGzip(fragments: Buffer, crc32: number, bytes: number): Buffer {
  const trailer = Buffer.alloc(8);
  trailer.writeUInt32LE(crc32 >>> 0, 0);
  trailer.writeUInt32LE(bytes % 2 ** 32, 4); // ISIZE: the length modulo 2^32
  return Buffer.concat([GZIP_HEADER, fragments, FINAL_BLOCK, trailer]);
}

/**
 * The bytes `fragments` decode to, bounded by and checked against `bytes`. Throws StoreError('INTEGRITY')
 * when they do not decode to exactly that many bytes.
 */
export async function inflateFragments(fragments: Buffer, bytes: number, what: string): Promise<Buffer> {
  let plain: Buffer;
  try {
    plain = await inflateRaw(Buffer.concat([fragments, FINAL_BLOCK]), { maxOutputLength: bytes + 1 });
  } catch (err) {
    throw new StoreError('INTEGRITY', `stored bytes for ${what} are not valid deflate`, { cause: err });
  }
  if (plain.length !== bytes) throw new StoreError('INTEGRITY', `stored bytes for ${what} decode to ${plain.length} bytes, not ${bytes}`);
  return plain;
}

/** Most objects of a chain one read touches (in parallel); compaction merges past it (`CHAIN_MAX_EXTENTS`). */
export const DEFAULT_CHAIN_MAX_EXTENTS = 3;
/** Compaction keeps each object at least this many times the size of everything after it. */
export const DEFAULT_CHAIN_MERGE_RATIO = 16;

/**
 * Which objects an append merges: given the lengths of the chain's objects with the new fragment last,
 * the index from which all objects are concatenated into one, or -1 to merge nothing.
 *
 * Nothing is merged while there are at most `maxExtents` objects. Past that, the shortest tail whose
 * total is at most 1/`ratio` of the object before it (a geometric layout: small recent objects are
 * merged often and cheaply, the large old ones rarely), else everything. So a read touches at most
 * `maxExtents` objects, and an append copies O(appended × ratio × log(total/appended)) bytes
 * amortized — independent of the transcript's size in the common case.
 */
export function planCompaction(lengths: readonly number[], maxExtents: number, ratio: number): number {
  const n = lengths.length;
  if (n <= Math.max(1, maxExtents)) return -1;
  let tail = lengths[n - 1]!;
  for (let i = n - 2; i >= 1; i--) {
    tail += lengths[i]!;
    if (lengths[i - 1]! >= ratio * tail) return i;
  }
  return 0;
}

/** The CHAIN record (consistent read), or undefined when it is gone (a clear). */
export async function readChain(ctx: StoreContext, pk: string, chainId: string, abortSignal?: AbortSignal): Promise<ChainRecord | undefined> {
  const res = await ctx.ddb.send(new GetItemCommand({ TableName: ctx.table, Key: chainKey(pk, chainId), ConsistentRead: true }), { abortSignal });
  return res.Item ? fromChainItem(res.Item) : undefined;
}

/** Creates a CHAIN record (stamped `updatedAtMs` = now); false when one with this id exists (ids are fresh uuids: only an SDK retry of our own put). */
export async function createChain(ctx: StoreContext, pk: string, chain: ChainRecord, abortSignal?: AbortSignal): Promise<void> {
  try {
    await ctx.ddb.send(
      new PutItemCommand({ TableName: ctx.table, Item: chainItem(pk, { ...chain, updatedAtMs: ctx.now() }), ConditionExpression: 'attribute_not_exists(pk)' }),
      { abortSignal },
    );
  } catch (err) {
    // Our own first attempt landed and the SDK retried after a lost response: the record is ours.
    if (!(err instanceof ConditionalCheckFailedException)) throw err;
  }
}

/**
 * Replaces the layout of a chain whose version and end are still the ones read. False when the chain
 * moved (another append extended it, or a clear deleted it).
 */
export async function updateChain(
  ctx: StoreContext,
  pk: string,
  read: ChainRecord,
  next: { extents: readonly Extent[]; end: number },
  abortSignal?: AbortSignal,
): Promise<boolean> {
  try {
    await ctx.ddb.send(
      new UpdateItemCommand({
        TableName: ctx.table,
        Key: chainKey(pk, read.chainId),
        UpdateExpression: 'SET extents = :extents, chainEnd = :chainEnd, version = :version, updatedAtMs = :updatedAtMs',
        ConditionExpression: 'version = :read_version AND chainEnd = :read_end',
        ExpressionAttributeValues: {
          ...chainLayoutValues(next.extents, next.end, read.version + 1, ctx.now()),
          ':read_version': { N: String(read.version) },
          ':read_end': { N: String(read.end) },
        },
      }),
      { abortSignal },
    );
    return true;
  } catch (err) {
    if (err instanceof ConditionalCheckFailedException) return false;
    throw err;
  }
}

/** Marks a read that found an object of the layout missing: the layout is stale (or the data lost). */
export const GONE = Symbol('gone');

/**
 * The stored bytes [start, end) of a chain laid out as `extents`, verified: every object that overlaps
 * the range is read whole (in parallel) and checked against its recorded length and sha256 (I1), then
 * cut. Returns GONE when an object is missing; throws StoreError('INTEGRITY') when one does not match.
 */
export async function readStoredRange(
  ctx: StoreContext,
  extents: readonly Extent[],
  start: number,
  end: number,
  abortSignal?: AbortSignal,
): Promise<Buffer | typeof GONE> {
  const wanted: { extent: Extent; offset: number }[] = [];
  let offset = 0;
  for (const extent of extents) {
    if (offset + extent.length > start && offset < end) wanted.push({ extent, offset });
    offset += extent.length;
  }
  if (offset < end) throw new StoreError('INTEGRITY', `chain layout holds ${offset} stored bytes, ${end} needed`);
  const parts = await Promise.all(wanted.map(({ extent }) => readExtent(ctx, extent, abortSignal)));
  if (parts.some((p) => p === GONE)) return GONE;
  const first = wanted[0]?.offset ?? start;
  return Buffer.concat(parts as Buffer[]).subarray(start - first, end - first);
}

async function readExtent(ctx: StoreContext, extent: Extent, abortSignal?: AbortSignal): Promise<Buffer | typeof GONE> {
  let raw: Buffer;
  try {
    const obj = await ctx.s3.send(new GetObjectCommand({ Bucket: ctx.bucket, Key: extent.key }), { abortSignal });
    raw = Buffer.from(await obj.Body!.transformToByteArray());
  } catch (err) {
    if (err instanceof NoSuchKey) return GONE;
    throw err;
  }
  if (raw.length !== extent.length || sha256Hex(raw) !== extent.sha256) {
    throw new StoreError('INTEGRITY', `chain object does not match its record (${raw.length} of ${extent.length} bytes)`);
  }
  return raw;
}

/**
 * The stored bytes [start, end) of chain `chainId`, laid out as `cached` (HEAD's copy) when given: a
 * missing object means compaction replaced it, so the CHAIN record is read and the read retried once.
 * GONE when the chain itself is gone or an object is missing in its current layout too.
 */
export async function readChainRange(
  ctx: StoreContext,
  pk: string,
  chainId: string,
  range: { start: number; end: number },
  cached: readonly Extent[] | undefined,
  abortSignal?: AbortSignal,
): Promise<Buffer | typeof GONE> {
  if (cached) {
    const bytes = await readStoredRange(ctx, cached, range.start, range.end, abortSignal);
    if (bytes !== GONE) return bytes;
  }
  const chain = await readChain(ctx, pk, chainId, abortSignal);
  if (!chain) return GONE;
  return readStoredRange(ctx, chain.extents, range.start, range.end, abortSignal);
}

/** Writes one object of a chain (whole deflate fragments: not a file on its own, never served as it is). */
export async function putChainObject(ctx: StoreContext, key: string, body: Buffer, abortSignal?: AbortSignal): Promise<Extent> {
  await ctx.s3.send(
    new PutObjectCommand({ Bucket: ctx.bucket, Key: key, Body: body, ContentLength: body.length, ContentType: 'application/octet-stream' }),
    { abortSignal },
  );
  return { key, length: body.length, sha256: sha256Hex(body) };
}

/**
 * One gzip object holding a chain run, for a presigned redirect (a URL names one object, and chain
 * objects are fragments, not files): the run's stored prefix wrapped as one gzip member, copied to a
 * deterministic key under `materialized/` and reused by later reads of the same run while it is younger
 * than one presign TTL (then written again, which renews its date). The reconciler deletes copies older
 * than its grace and twice the presign TTL, so a URL handed out always outlives its object's deletion
 * (a clear deletes them by generation, like everything else of the conversation). GONE as for
 * readChainRange.
 */
export async function materialize(
  ctx: StoreContext,
  pk: string,
  run: { chainId: string; generation: number; end: number; extents: readonly Extent[] | undefined; crc32: number; bytes: number },
  abortSignal?: AbortSignal,
): Promise<string | typeof GONE> {
  const key = materializedObjectKey(pk, run.generation, run.chainId, run.end);
  const size = GZIP_HEADER.length + run.end + FINAL_BLOCK.length + 8;
  const made = await madeAt(ctx, key, size, abortSignal);
  if (made !== undefined && made >= ctx.now() - ctx.limits.presignTtlSeconds * 1000) return key;
  const stored = await readChainRange(ctx, pk, run.chainId, { start: 0, end: run.end }, run.extents, abortSignal);
  if (stored === GONE) return GONE;
  const body = wrapGzip(stored, run.crc32, run.bytes);
  await ctx.s3.send(
    new PutObjectCommand({ Bucket: ctx.bucket, Key: key, Body: body, ContentLength: body.length, ContentType: NDJSON_CONTENT_TYPE, ContentEncoding: 'gzip' }),
    { abortSignal },
  );
  return key;
}

/** When the object `key` of `length` bytes was written (epoch ms), or undefined when there is none. */
async function madeAt(ctx: StoreContext, key: string, length: number, abortSignal?: AbortSignal): Promise<number | undefined> {
  try {
    const head = await ctx.s3.send(new HeadObjectCommand({ Bucket: ctx.bucket, Key: key }), { abortSignal });
    return head.ContentLength === length ? (head.LastModified?.getTime() ?? 0) : undefined;
  } catch (err) {
    if (err instanceof NotFound || err instanceof NoSuchKey) return undefined;
    throw err;
  }
}

/** Materialized copies older than this (ms) may be deleted: no URL handed out for them is still valid. */
export function materializedExpiryMs(ctx: StoreContext, graceSeconds: number): number {
  return Math.max(graceSeconds, 2 * ctx.limits.presignTtlSeconds + 60) * 1000;
}

/**
 * The decoded bytes of any stored run — a chain run (the chain's first `storedBytes` bytes) or a run
 * stored as one object — verified against its record. GONE when its chain or object is gone; throws
 * StoreError('INTEGRITY') when the bytes do not match. For tools, checkers and exports (memory holds
 * the whole run).
 */
export async function readRunBytes(ctx: StoreContext, pk: string, run: RunRecord, abortSignal?: AbortSignal): Promise<Buffer | typeof GONE> {
  let stored: Buffer;
  if (run.chainId !== undefined) {
    const bytes = await readChainRange(ctx, pk, run.chainId, { start: 0, end: run.storedBytes }, undefined, abortSignal);
    if (bytes === GONE) return GONE;
    const plain = await inflateFragments(bytes, run.bytes, `run ${run.runId}`);
    if (sha256Hex(plain) !== run.sha256) throw new StoreError('INTEGRITY', `stored bytes of run ${run.runId} do not match its record`);
    return plain;
  } else {
    try {
      const obj = await ctx.s3.send(new GetObjectCommand({ Bucket: ctx.bucket, Key: run.s3Key }), { abortSignal });
      stored = Buffer.from(await obj.Body!.transformToByteArray());
    } catch (err) {
      if (err instanceof NoSuchKey) return GONE;
      throw err;
    }
  }
  let plain: Buffer;
  try {
    plain = run.encoding === 'gzip' ? gunzipSync(stored, { maxOutputLength: run.bytes + 1 }) : stored;
  } catch (err) {
    throw new StoreError('INTEGRITY', `stored object of run ${run.runId} is not valid gzip`, { cause: err });
  }
  if (plain.length !== run.bytes || sha256Hex(plain) !== run.sha256) throw new StoreError('INTEGRITY', `stored bytes of run ${run.runId} do not match its record`);
  return plain;
}
