import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { gunzip as gunzipCb } from 'node:zlib';
import { GetItemCommand } from '@aws-sdk/client-dynamodb';
import { batchGet } from './batch.js';
import { GONE, inflateFragments, materialize, readChainRange, wrapGzip } from './chain.js';
import { crc32Of } from './digest.js';
import { GetObjectCommand, HeadObjectCommand, NoSuchKey, NotFound } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { conversationKey, type ConversationScope } from '../ids.js';
import type { CallOptions, StoreContext } from './context.js';
import { sha256Hex, streamDigest } from './digest.js';
import { StoreError } from './errors.js';
import {
  fromRunItem,
  generationOfHeadItem,
  headKey,
  HEAD_SK,
  LATEST_PROJECTION,
  latestFromHeadItem,
  runKey,
  type Encoding,
  type Item,
  type LatestRecord,
  type RunRecord,
  type SnapshotMeta,
} from './schema.js';

/**
 * Hydrate (1 DynamoDB read + 1 S3 read): a consistent GetItem of HEAD, then a GetObject of the key it
 * names — or, for a snapshot too large for a Lambda response, a HeadObject (so a lost object is loud
 * there too) and a presigned GET URL instead of the read. The bytes are verified against the record
 * before they are served (I1).
 */

const gunzip = promisify(gunzipCb);

/** Encodings the client accepts, negotiated by the HTTP layer (negotiation.ts). */
export type { Acceptable } from '../negotiation.js';
import type { Acceptable } from '../negotiation.js';

export interface HydrateOptions extends CallOptions {
  /** True when the client already holds the snapshot with this sha256 (If-None-Match) → not-modified. */
  readonly matches?: ((sha256: string) => boolean) | undefined;
  readonly accept?: Acceptable | undefined;
  /**
   * The stored run the client holds (RFC 3229 `A-IM: append`): its id and sha256. When the latest run
   * extends it in the same chain and the missing bytes fit inline, the answer is a `delta`.
   */
  readonly base?: { readonly runId: number; readonly sha256: string } | undefined;
}

/**
 * Every answer carries the conversation's reset `generation` (fence.ts): a worker echoes it with its
 * write, so that a reset between its hydrate and its write fences the write whatever the clocks say.
 *
 * none            nothing published (404)
 * not-modified    the client holds it already (304)
 * body            the verified bytes, in `encoding` (200)
 * redirect        too large to answer inline: a presigned URL to the object in its stored encoding (307)
 * not-acceptable  too large inline, stored gzip, and the client refuses gzip (406)
 * delta           only the bytes after the client's base (`baseSha256`), in `encoding` (226 IM Used)
 */
export type HydrateResult =
  | { kind: 'none'; generation: number }
  | { kind: 'not-modified'; meta: SnapshotMeta; generation: number }
  | { kind: 'body'; meta: SnapshotMeta; generation: number; body: Buffer; encoding: Encoding }
  | { kind: 'redirect'; meta: SnapshotMeta; generation: number; url: string; encoding: Encoding }
  | { kind: 'not-acceptable'; meta: SnapshotMeta; generation: number }
  | { kind: 'delta'; meta: SnapshotMeta; generation: number; baseSha256: string; body: Buffer; encoding: Encoding };

/**
 * The latest completed snapshot of the conversation (1 DynamoDB read + at most 1 S3 read).
 *
 * Verification costs the STORED size, never the decoded size: the object's bytes are checked against
 * the sha256 of the stored bytes that the write recorded (records from before that existed are checked
 * by streaming them through gunzip). Throws StoreError('INTEGRITY') when the object does not match its
 * record, or when HEAD names an object that is gone (loss is loud: never a 404 that would let the next
 * run overwrite the history); SDK errors otherwise.
 */
export async function hydrate(ctx: StoreContext, scope: ConversationScope, opts: HydrateOptions = {}): Promise<HydrateResult> {
  const pk = conversationKey(scope);
  let missing: string | undefined;
  for (let attempt = 1; ; attempt++) {
    const { head: headItem, base } = await readHeadAndBase(ctx, pk, opts);
    const generation = generationOfHeadItem(headItem);
    const latest = latestFromHeadItem(headItem);
    if (!latest) return { kind: 'none', generation };
    // The object HEAD names is gone, twice in a row: the data is lost.
    if (latest.s3Key === missing) throw new StoreError('INTEGRITY', `HEAD names run ${latest.runId} but its object is missing`);
    const result = latest.chainId !== undefined ? await answerFromChain(ctx, pk, latest, latest.chainId, generation, base, opts) : await answer(ctx, latest, generation, opts);
    if (result !== 'gone') return result;
    // A clear (or a newer run's publish and a clear) between our two reads does that legitimately: read
    // HEAD again; only the same object missing again is loss. HEAD moving on every read is contention.
    missing = latest.s3Key;
    if (attempt >= 3) throw new StoreError('CONTENDED', 'HEAD changed under every read; retry');
  }
}

/**
 * Any stored run — whatever its status or generation — answered like a hydrate answers the latest one
 * (operator API, `GET /admin/run`): verified bytes in the negotiated encoding, a presigned redirect past
 * the inline limit (a chain run through a materialized copy), not-modified on a matching tag, or
 * not-acceptable. `pk` is the run's conversation key. 'gone' when its object or chain is missing (the
 * caller reads the record again: a clear, retention or erasure may have removed both). Throws
 * StoreError('INTEGRITY') when the stored bytes do not match the record. No delta (`opts.base` is ignored).
 */
export async function answerRun(ctx: StoreContext, pk: string, run: RunRecord, opts: HydrateOptions = {}): Promise<HydrateResult | 'gone'> {
  const asLatest: LatestRecord = {
    runId: run.runId,
    sha256: run.sha256,
    bytes: run.bytes,
    s3Key: run.s3Key,
    encoding: run.encoding,
    storedBytes: run.storedBytes,
    storedSha256: run.storedSha256,
    chainId: run.chainId,
    extents: undefined,
    chainVersion: undefined,
    hashState: run.hashState,
    crcState: run.crcState,
    crc32: run.crc32,
  };
  const plain = { ...opts, base: undefined };
  return asLatest.chainId !== undefined
    ? answerFromChain(ctx, pk, asLatest, asLatest.chainId, run.generation, undefined, plain)
    : answer(ctx, asLatest, run.generation, plain);
}

/** HEAD (consistent: the next run may be on another pod right after the write), and the client's base run when it named one. */
async function readHeadAndBase(ctx: StoreContext, pk: string, opts: HydrateOptions): Promise<{ head: Item | undefined; base: RunRecord | undefined }> {
  if (opts.base === undefined) {
    const res = await ctx.ddb.send(
      new GetItemCommand({ TableName: ctx.table, Key: headKey(pk), ConsistentRead: true, ProjectionExpression: LATEST_PROJECTION }),
      { abortSignal: opts.signal },
    );
    return { head: res.Item, base: undefined };
  }
  const items = await batchGet(ctx, [headKey(pk), runKey(pk, opts.base.runId)], opts.signal);
  const head = items.find((i) => i['sk']?.S === HEAD_SK);
  const base = items.find((i) => i['sk']?.S !== HEAD_SK);
  return { head, base: base ? fromRunItem(base) : undefined };
}

/**
 * A run stored in a chain: its bytes are the chain's first `storedBytes` stored bytes (deflate
 * fragments), served as one gzip member (chain.ts) or decoded. A client holding an earlier run of the
 * same chain gets only the fragments after it; too large to answer inline, a URL to one gzip object
 * holding the run (materialize).
 */
async function answerFromChain(
  ctx: StoreContext,
  pk: string,
  latest: LatestRecord,
  chainId: string,
  generation: number,
  base: RunRecord | undefined,
  opts: HydrateOptions,
): Promise<HydrateResult | 'gone'> {
  const meta: SnapshotMeta = { runId: latest.runId, sha256: latest.sha256, bytes: latest.bytes };
  if (opts.matches?.(meta.sha256)) return { kind: 'not-modified', meta, generation };
  if (latest.crc32 === undefined) throw new StoreError('INTEGRITY', `HEAD names chain run ${latest.runId} without its CRC-32`);
  const crc32 = latest.crc32;
  const accept = opts.accept ?? 'any';
  const sendGzip = accept === 'gzip';
  const limit = ctx.limits.inlineMaxBytes;
  // A wrapped gzip member is the stored fragments plus 20 bytes.
  const wrapped = (stored: number) => stored + 20;

  if (
    opts.base !== undefined &&
    base !== undefined &&
    base.chainId === chainId &&
    base.status === 'completed' &&
    base.generation === generation &&
    base.sha256 === opts.base.sha256 &&
    base.storedBytes < latest.storedBytes &&
    base.bytes <= latest.bytes &&
    (sendGzip ? wrapped(latest.storedBytes - base.storedBytes) : latest.bytes - base.bytes) <= limit
  ) {
    const tail = await readChainRange(ctx, pk, chainId, { start: base.storedBytes, end: latest.storedBytes }, latest.extents, opts.signal);
    if (tail === GONE) return 'gone';
    // The tail decodes on its own (fragments are independent); its gzip trailer needs its own CRC-32.
    const tailBytes = latest.bytes - base.bytes;
    const plain = await inflateFragments(tail, tailBytes, `run ${latest.runId} after run ${base.runId}`);
    const body = sendGzip ? wrapGzip(tail, await crc32Of(plain), tailBytes) : plain;
    return { kind: 'delta', meta, generation, baseSha256: base.sha256, body, encoding: sendGzip ? 'gzip' : 'identity' };
  }

  if ((sendGzip ? wrapped(latest.storedBytes) : meta.bytes) > limit) {
    if (accept === 'identity') return { kind: 'not-acceptable', meta, generation };
    const key = await materialize(ctx, pk, { chainId, generation, end: latest.storedBytes, extents: latest.extents, crc32, bytes: meta.bytes }, opts.signal);
    if (key === GONE) return 'gone';
    const url = await getSignedUrl(ctx.presigner, new GetObjectCommand({ Bucket: ctx.bucket, Key: key }), { expiresIn: ctx.limits.presignTtlSeconds });
    return { kind: 'redirect', meta, generation, url, encoding: 'gzip' };
  }
  const stored = await readChainRange(ctx, pk, chainId, { start: 0, end: latest.storedBytes }, latest.extents, opts.signal);
  if (stored === GONE) return 'gone';
  // Verified object by object (sha256 of the stored bytes); a gzip client's decoder checks the CRC-32 too.
  if (sendGzip) return { kind: 'body', meta, generation, body: wrapGzip(stored, crc32, meta.bytes), encoding: 'gzip' };
  return { kind: 'body', meta, generation, body: await inflateFragments(stored, meta.bytes, `run ${meta.runId}`), encoding: 'identity' };
}

async function answer(ctx: StoreContext, latest: LatestRecord, generation: number, opts: HydrateOptions): Promise<HydrateResult | 'gone'> {
  const meta: SnapshotMeta = { runId: latest.runId, sha256: latest.sha256, bytes: latest.bytes };
  if (opts.matches?.(meta.sha256)) return { kind: 'not-modified', meta, generation };

  const stored = latest.encoding;
  const accept = opts.accept ?? 'any';
  // Inline, gzip goes only to clients that asked for it (a bare `curl` sends no Accept-Encoding and
  // expects text). Past the inline limit, S3 serves the stored encoding, which RFC 9110 allows for a
  // client that sent no Accept-Encoding; only an explicit refusal gets 406.
  const sendGzip = stored === 'gzip' && accept === 'gzip';
  const inlineBytes = stored === 'gzip' && !sendGzip ? meta.bytes : latest.storedBytes;
  if (inlineBytes > ctx.limits.inlineMaxBytes) {
    // Too large for a Lambda response: hand out a short-lived URL to the object itself.
    if (stored === 'gzip' && accept === 'identity') return { kind: 'not-acceptable', meta, generation };
    // Loss is loud on this path too: never hand out a URL to an object that is gone.
    try {
      await ctx.s3.send(new HeadObjectCommand({ Bucket: ctx.bucket, Key: latest.s3Key }), { abortSignal: opts.signal });
    } catch (err) {
      if (err instanceof NotFound || err instanceof NoSuchKey) return 'gone';
      throw err;
    }
    const url = await getSignedUrl(ctx.presigner, new GetObjectCommand({ Bucket: ctx.bucket, Key: latest.s3Key }), {
      expiresIn: ctx.limits.presignTtlSeconds,
    });
    return { kind: 'redirect', meta, generation, url, encoding: stored };
  }

  let raw: Buffer;
  try {
    const obj = await ctx.s3.send(new GetObjectCommand({ Bucket: ctx.bucket, Key: latest.s3Key }), { abortSignal: opts.signal });
    raw = Buffer.from(await obj.Body!.transformToByteArray());
  } catch (err) {
    if (err instanceof NoSuchKey) return 'gone';
    throw err;
  }
  const mismatch = () => new StoreError('INTEGRITY', `stored object for run ${meta.runId} does not match its record`);
  // Never serve a partial or foreign body (I1): the bytes must be the ones that were committed.
  if (latest.storedSha256 !== undefined) {
    if (raw.length !== latest.storedBytes || sha256Hex(raw) !== latest.storedSha256) throw mismatch();
  } else if (sendGzip) {
    // A record without a stored digest: check by streaming through gunzip into the hash (bounded
    // memory; the decoded size is bounded by the record).
    const decoded = await streamDigest(Readable.from([raw]), { gunzip: true, limit: meta.bytes, overLimitCode: 'INTEGRITY', badGzipCode: 'INTEGRITY' });
    if (decoded.bytes !== meta.bytes || decoded.sha256 !== meta.sha256) throw mismatch();
  }
  if (sendGzip || stored === 'identity') {
    if (stored === 'identity' && latest.storedSha256 === undefined && (raw.length !== meta.bytes || sha256Hex(raw) !== meta.sha256)) throw mismatch();
    return { kind: 'body', meta, generation, body: raw, encoding: stored === 'gzip' ? 'gzip' : 'identity' };
  }
  let plain: Buffer;
  try {
    // Decoding for a client that refuses gzip; bounded by the recorded size (≤ the inline limit here).
    plain = await gunzip(raw, { maxOutputLength: meta.bytes + 1 });
  } catch (err) {
    throw new StoreError('INTEGRITY', `stored object for run ${meta.runId} is not valid gzip`, { cause: err });
  }
  if (plain.length !== meta.bytes || (latest.storedSha256 === undefined && sha256Hex(plain) !== meta.sha256)) throw mismatch();
  return { kind: 'body', meta, generation, body: plain, encoding: 'identity' };
}
