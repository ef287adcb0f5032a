import { ConditionalCheckFailedException, GetItemCommand, PutItemCommand, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { GetObjectCommand, HeadObjectCommand, NoSuchKey, NotFound, PutObjectCommand } from '@aws-sdk/client-s3';
import { gunzipSync } from 'node:zlib';
import { NDJSON_CONTENT_TYPE } from '../contract.js';
import type { StoreContext } from './context.js';
import { sha256Hex } from './digest.js';
import { StoreError } from './errors.js';
import { chainItem, chainKey, chainLayoutValues, fromChainItem, materializedObjectKey, type ChainRecord, type Extent, type RunRecord } from './schema.js';

/**
 * Chains: how completed runs that extend one another share their bytes (incremental sync).
 *
 * A chain is an append-only stream of gzip members (RFC 1952 §2.2: a gzip file is a series of members,
 * and their concatenation decodes to the concatenation of their contents). A run in a chain is a
 * prefix of it: its bytes are the first `storedBytes` stored bytes, decoded. Appending a turn adds one
 * member (the gzip of the appended bytes) at the end; the runs before it are untouched.
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

/** Objects of a chain read in parallel by one read. */
export const DEFAULT_CHAIN_MAX_EXTENTS = 3;
/** Compaction keeps each object at least this many times the size of everything after it. */
export const DEFAULT_CHAIN_MERGE_RATIO = 4;

/**
 * Which objects an append merges: given the lengths of the chain's objects with the new member last,
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

/** Creates a CHAIN record; false when one with this id exists (ids are fresh uuids: only an SDK retry of our own put). */
export async function createChain(ctx: StoreContext, pk: string, chain: ChainRecord, abortSignal?: AbortSignal): Promise<void> {
  try {
    await ctx.ddb.send(
      new PutItemCommand({ TableName: ctx.table, Item: chainItem(pk, chain), ConditionExpression: 'attribute_not_exists(pk)' }),
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
        UpdateExpression: 'SET extents = :extents, chainEnd = :chainEnd, version = :version',
        ConditionExpression: 'version = :read_version AND chainEnd = :read_end',
        ExpressionAttributeValues: {
          ...chainLayoutValues(next.extents, next.end, read.version + 1),
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

/** Writes one object of a chain (gzip members, whole). */
export async function putChainObject(ctx: StoreContext, key: string, body: Buffer, abortSignal?: AbortSignal): Promise<Extent> {
  await ctx.s3.send(
    new PutObjectCommand({
      Bucket: ctx.bucket,
      Key: key,
      Body: body,
      ContentLength: body.length,
      ContentType: NDJSON_CONTENT_TYPE,
      ContentEncoding: 'gzip',
    }),
    { abortSignal },
  );
  return { key, length: body.length, sha256: sha256Hex(body) };
}

/**
 * One object holding the chain's first `end` stored bytes, for a presigned redirect (a URL names one
 * object). A chain of one object that is exactly that prefix is its own answer; otherwise the prefix
 * is copied once to a deterministic key under `materialized/` and reused by later reads of the same
 * run (the copy is a cache: the reconciler deletes it by age, a clear by generation).
 * GONE as for readChainRange.
 */
export async function materialize(
  ctx: StoreContext,
  pk: string,
  chain: { chainId: string; generation: number; end: number; extents: readonly Extent[] | undefined },
  abortSignal?: AbortSignal,
): Promise<string | typeof GONE> {
  const only = chain.extents?.length === 1 ? chain.extents[0]! : undefined;
  if (only && only.length === chain.end && (await exists(ctx, only.key, chain.end, abortSignal))) return only.key;
  const key = materializedObjectKey(pk, chain.generation, chain.chainId, chain.end);
  if (await exists(ctx, key, chain.end, abortSignal)) return key;
  const bytes = await readChainRange(ctx, pk, chain.chainId, { start: 0, end: chain.end }, chain.extents, abortSignal);
  if (bytes === GONE) return GONE;
  await putChainObject(ctx, key, bytes, abortSignal);
  return key;
}

async function exists(ctx: StoreContext, key: string, length: number, abortSignal?: AbortSignal): Promise<boolean> {
  try {
    const head = await ctx.s3.send(new HeadObjectCommand({ Bucket: ctx.bucket, Key: key }), { abortSignal });
    return head.ContentLength === length;
  } catch (err) {
    if (err instanceof NotFound || err instanceof NoSuchKey) return false;
    throw err;
  }
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
    stored = bytes;
  } else {
    try {
      const obj = await ctx.s3.send(new GetObjectCommand({ Bucket: ctx.bucket, Key: run.s3Key }), { abortSignal });
      stored = Buffer.from(await obj.Body!.transformToByteArray());
    } catch (err) {
      if (err instanceof NoSuchKey) return GONE;
      throw err;
    }
  }
  const plain = run.encoding === 'gzip' ? gunzipSync(stored, { maxOutputLength: run.bytes + 1 }) : stored;
  if (plain.length !== run.bytes || sha256Hex(plain) !== run.sha256) throw new StoreError('INTEGRITY', `stored bytes of run ${run.runId} do not match its record`);
  return plain;
}
