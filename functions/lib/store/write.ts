import { promisify } from 'node:util';
import { gunzip as gunzipCb, gzip as gzipCb } from 'node:zlib';
import {
  ConditionalCheckFailedException,
  DeleteItemCommand,
  GetItemCommand,
  PutItemCommand,
  UpdateItemCommand,
} from '@aws-sdk/client-dynamodb';
import { DeleteObjectCommand, GetObjectCommand, NoSuchKey, PutObjectCommand } from '@aws-sdk/client-s3';
import { batchGet } from './batch.js';
import { createChain, fragmentOf, GONE, planCompaction, putChainObject, readChain, readStoredRange, updateChain, wrapGzip } from './chain.js';
import { marshall } from '@aws-sdk/util-dynamodb';
import { NDJSON_CONTENT_TYPE, type TerminalStatus } from '../contract.js';
import { conversationKey, type ConversationScope } from '../ids.js';
import type { CallOptions, StoreContext } from './context.js';
import { resumeDigests, sha256Hex, type DigestState, type ResumedDigest } from './digest.js';
import { StoreError } from './errors.js';
import { deleteObjects } from './objects.js';
import {
  agentFenceKey,
  fromFenceItem,
  listingUpdate,
  orgFenceKey,
  registryItem,
  registryKey,
  segmentsOf,
  type ScopeFence,
} from './registry.js';
import { currentGenerationCondition, isCurrent, legacyGeneration, staleGenerationCondition } from './fence.js';
import {
  chainKey,
  chainObjectKey,
  fromHeadItem,
  fromRunItem,
  headKey,
  HEAD_SK,
  latestFromHeadItem,
  runItem,
  runKey,
  RUN_SK_PREFIX,
  setLatest,
  snapshotObjectKey,
  type ChainLayout,
  type ChainRecord,
  type Extent,
  type ExtraClauses,
  type HeadRecord,
  type Item,
  type LatestRecord,
  type RunRecord,
  type SnapshotMeta,
} from './schema.js';
import { padRunId } from '../ids.js';
import { failedRunExpiresAt } from './retention-settings.js';

/**
 * The write protocol (1 S3 write + 2 conditional DynamoDB writes; every commit step is ONE conditional
 * write, so it is atomic on dynalite, which has no transactions):
 *
 *   0. Admission: one consistent BatchGetItem of HEAD and the run's own record (and an append's base).
 *      The run's generation is the one its writer echoes (it must be HEAD's: older means a reset
 *      happened since its hydrate, newer was never announced), or, for a writer that echoes none, HEAD's
 *      if the legacy rule in fence.ts places the run after the last reset. A fenced run stops here (409)
 *      before anything is written, and so does a run that is already stored (409, rolled forward first).
 *      The read also tells whether a higher run is already published (then step 3 is skipped: it could
 *      only fail), and what HEAD serves (a whole-file write that extends it becomes an append).
 *   1. PutObject to a fresh key.   crash here → orphan object, nothing visible; a retry succeeds
 *                                  (the reconciler deletes the orphan later). A completed run's object
 *                                  belongs to a chain (chain.ts): then PutItem CHAIN (a new chain) or a
 *                                  conditional UpdateItem of it (an append) comes before the claim.
 *   2. Claim:   PutItem RUN if attribute_not_exists — exactly one writer per (conversation, run) (I5).
 *                                  crash here → RUN claimed, HEAD not moved; a retry gets "exists" and
 *                                  rolls the claim forward (step 3 with the RUN's data), and so does the
 *                                  reconciler for a writer that never comes back (I3).
 *   3. Publish: UpdateItem HEAD if latestRunId < run AND HEAD is still at the run's generation.
 *
 *   writer W (generation 4)              clear C
 *   PutObject K
 *   claim RUN (generation 4)
 *                                        HEAD: generation 4 → 5, remove latest
 *                                        delete K, delete RUN (4 < 5)
 *   publish → condition fails (5 ≠ 4)    → W removes what is left of its claim and answers 409 reset_fenced
 */

const gzip = promisify(gzipCb);
const gunzip = promisify(gunzipCb);

/** Token-derived identity of a writer, and the generation it echoes. */
export interface WriterScope extends ConversationScope {
  /** Token `iat` (seconds): the run's start, for writers that send no generation (fence.ts). */
  readonly issuedAt: number;
  /** The reset generation of the hydrate this run started from (`x-snapshot-generation`), when sent. */
  readonly generation?: number | undefined;
}

/**
 * Outcome of a write, an append or an upload commit:
 *   stored            the run is stored; `latest` when hydrate now serves it
 *   duplicate         the run already had a snapshot (409 snapshot_exists)
 *   fenced            a clear happened after the run started (409 reset_fenced)
 *   base-mismatch     an append's base is not a stored completed run of the current generation with
 *                     that length and sha256 (412 base_mismatch: the client sends the whole file)
 *   digest-mismatch   base + appended bytes do not have the sha256 the client announced (400)
 *   upload-not-found  the uploadId names nothing (400)
 *   upload-invalid    the uploaded object is unusable (400; `reason` is for logs)
 *   upload-too-large  the upload decodes past the maximum (413)
 */
export type WriteResult =
  | { kind: 'stored'; meta: SnapshotMeta; latest: boolean }
  | { kind: 'duplicate' }
  | { kind: 'fenced' }
  | { kind: 'base-mismatch' }
  | { kind: 'digest-mismatch' }
  | { kind: 'upload-not-found' }
  | { kind: 'upload-invalid'; reason: string }
  | { kind: 'upload-too-large' };

/** A direct write's input: the run, its terminal status and the snapshot bytes exactly as written. */
export interface WriteInput {
  readonly runId: number;
  readonly status: TerminalStatus;
  readonly body: Buffer;
}

/**
 * Stores a snapshot sent whole (gzip-compressed at rest) and commits it. A completed run whose bytes
 * begin with exactly the bytes of the run HEAD serves is stored as an append to it (only the new bytes
 * are stored: existing workers that always send the whole file save storage too); any other completed
 * run starts a new chain; a run that did not complete is kept as one object of its own (never served).
 * @returns the outcome; throws SDK/network errors (transient → 503 upstream) and AbortError at the deadline.
 */
export async function writeSnapshot(ctx: StoreContext, scope: WriterScope, input: WriteInput, opts: CallOptions = {}): Promise<WriteResult> {
  const pk = conversationKey(scope);
  const admission = await admitRun(ctx, pk, input.runId, { generation: scope.generation, issuedAt: scope.issuedAt }, opts.signal, undefined, scope);
  if (admission.kind !== 'admitted') return admission.result;
  return settleRegistration(ctx, scope, admission.registration, await writeAdmitted(ctx, pk, scope, input, admission, opts), opts.signal);
}

async function writeAdmitted(ctx: StoreContext, pk: string, scope: WriterScope, input: WriteInput, admission: Admission, opts: CallOptions): Promise<WriteResult> {
  const { generation, head, latest } = admission;
  const listing: Listing = { scope };
  const body = input.body;

  if (input.status === 'completed') {
    const latestState = latest ? digestStateOf(latest) : undefined;
    if (latest?.chainId !== undefined && latestState && body.length >= latest.bytes && sha256Hex(body.subarray(0, latest.bytes)) === latest.sha256) {
      const appended = body.subarray(latest.bytes);
      const digest = await resumeDigests(latestState, appended);
      if (digest) {
        const base: ChainBase = { chainId: latest.chainId, storedEnd: latest.storedBytes, bytes: latest.bytes, layout: layoutOf(latest) };
        const extended = await extendRun(ctx, pk, { runId: input.runId, status: input.status, iat: scope.issuedAt, generation, head, listing }, base, appended, digest, opts);
        // A whole-file write never answers 412 (existing workers do not know it): when its base went
        // away without a reset, it is stored whole below.
        if (extended.kind !== 'base-mismatch') return extended;
      }
    }
    const digest = (await resumeDigests(undefined, body))!;
    return newChain(ctx, pk, { runId: input.runId, status: input.status, iat: scope.issuedAt, generation, head, listing }, await fragmentOf(body), { bytes: body.length, ...digest }, opts);
  }

  const meta: SnapshotMeta = { runId: input.runId, sha256: sha256Hex(body), bytes: body.length };
  const compressed = await gzip(body);
  return putSingleObject(ctx, pk, { runId: input.runId, status: input.status, iat: scope.issuedAt, generation, head, listing }, compressed, meta, opts);
}

/** An append's input: the bytes after the base run's, and the whole file's sha256 as the client computed it. */
export interface AppendInput {
  readonly runId: number;
  readonly status: TerminalStatus;
  /** The stored run the client's file began with: its id, length (bytes) and sha256 (hex). */
  readonly base: { readonly runId: number; readonly bytes: number; readonly sha256: string };
  /** The appended bytes, exactly as written. */
  readonly append: Buffer;
  /** sha256 (hex) of base + append. */
  readonly sha256: string;
}

/**
 * Stores a run as the base run's bytes plus `input.append` (incremental sync). Work and storage are
 * proportional to the appended bytes: the whole file's sha256 comes from the base's saved SHA-256
 * state, and only the deflate of the appended bytes is written — as the next fragment of the base's chain,
 * or, when another run extended that chain first, of a new chain that starts with a copy of the base.
 *
 * The base must be a completed run of the current generation with the length and sha256 the client
 * names (else `base-mismatch`), and the result must have the sha256 the client names (else
 * `digest-mismatch`); both are checked before anything is written.
 * @returns the outcome; throws SDK/network errors and AbortError at the deadline.
 */
export async function appendSnapshot(ctx: StoreContext, scope: WriterScope, input: AppendInput, opts: CallOptions = {}): Promise<WriteResult> {
  const pk = conversationKey(scope);
  const admission = await admitRun(ctx, pk, input.runId, { generation: scope.generation, issuedAt: scope.issuedAt }, opts.signal, input.base.runId, scope);
  if (admission.kind !== 'admitted') return admission.result;
  return settleRegistration(ctx, scope, admission.registration, await appendAdmitted(ctx, pk, scope, input, admission, opts), opts.signal);
}

async function appendAdmitted(ctx: StoreContext, pk: string, scope: WriterScope, input: AppendInput, admission: Admission, opts: CallOptions): Promise<WriteResult> {
  const { generation, head } = admission;
  const listing: Listing = { scope };
  const base = admission.base;
  if (!base || base.status !== 'completed' || base.generation !== generation || base.bytes !== input.base.bytes || base.sha256 !== input.base.sha256) {
    return { kind: 'base-mismatch' };
  }
  if (base.bytes + input.append.length > ctx.limits.maxUploadBytes) return { kind: 'upload-too-large' };
  const run: Admitted = { runId: input.runId, status: input.status, iat: scope.issuedAt, generation, head, listing };
  const baseState = digestStateOf(base);
  if (base.chainId === undefined || baseState === undefined) return promote(ctx, pk, run, base, input, opts);
  const digest = await resumeDigests(baseState, input.append);
  if (!digest) return { kind: 'base-mismatch' };
  if (digest.sha256 !== input.sha256) return { kind: 'digest-mismatch' };
  // The common case: the client extends the run HEAD serves, whose chain layout HEAD caches.
  const cached = admission.latest?.runId === base.runId && admission.latest.chainId === base.chainId ? layoutOf(admission.latest) : undefined;
  const chainBase: ChainBase = { chainId: base.chainId, storedEnd: base.storedBytes, bytes: base.bytes, layout: cached };
  return extendRun(ctx, pk, run, chainBase, input.append, digest, opts);
}

/** Largest base (decoded bytes) `promote` reads into memory; past it an append on such a base is 412. */
export const PROMOTE_MAX_BYTES = 256 * 1024 * 1024;

/**
 * An append on a run stored as one object (a presigned upload, or a run stored before chains existed):
 * reads and verifies the base once, and starts a chain with it re-encoded as one deflate fragment plus the
 * appended one. From then on, appends on this chain cost only what they append.
 */
async function promote(ctx: StoreContext, pk: string, run: Admitted, base: RunRecord, input: AppendInput, opts: CallOptions): Promise<WriteResult> {
  if (base.bytes > PROMOTE_MAX_BYTES) return { kind: 'base-mismatch' };
  let stored: Buffer;
  try {
    const obj = await ctx.s3.send(new GetObjectCommand({ Bucket: ctx.bucket, Key: base.s3Key }), { abortSignal: opts.signal });
    stored = Buffer.from(await obj.Body!.transformToByteArray());
  } catch (err) {
    if (err instanceof NoSuchKey) return fencedOrMismatch(ctx, pk, run, opts.signal); // cleared in between
    throw err;
  }
  if (base.storedSha256 !== undefined && (stored.length !== base.storedBytes || sha256Hex(stored) !== base.storedSha256)) {
    throw new StoreError('INTEGRITY', `stored object for run ${base.runId} does not match its record`);
  }
  let plain: Buffer;
  try {
    plain = base.encoding === 'gzip' ? await gunzip(stored, { maxOutputLength: base.bytes + 1 }) : stored;
  } catch (err) {
    throw new StoreError('INTEGRITY', `stored object for run ${base.runId} is not valid gzip`, { cause: err });
  }
  const prefix = await resumeDigests(undefined, plain);
  if (plain.length !== base.bytes || prefix?.sha256 !== base.sha256) throw new StoreError('INTEGRITY', `stored object for run ${base.runId} does not match its record`);
  const digest = (await resumeDigests(prefix.state, input.append))!;
  if (digest.sha256 !== input.sha256) return { kind: 'digest-mismatch' };
  const fragments = Buffer.concat([await fragmentOf(plain), await fragmentOf(input.append)]);
  const bytes = base.bytes + input.append.length;
  if (run.status === 'completed') return newChain(ctx, pk, run, fragments, { bytes, ...digest }, opts);
  return putSingleObject(ctx, pk, run, wrapGzip(fragments, digest.crc32, bytes), { runId: run.runId, sha256: digest.sha256, bytes }, opts);
}

/** The run being written, once admitted. */
interface Admitted {
  readonly runId: number;
  readonly status: TerminalStatus;
  readonly iat: number;
  readonly generation: number;
  readonly head: HeadRecord;
  readonly listing: Listing;
}

/**
 * What a write's HEAD update needs to list the conversation (registry.ts): the token's ids, for the
 * listing attributes. Registration itself happens at admission (`register`), before anything is stored.
 */
export interface Listing {
  readonly scope: ConversationScope;
}

/** What an append extends: a prefix of a chain. `layout`: the chain's layout as HEAD cached it, if known. */
interface ChainBase {
  readonly chainId: string;
  readonly storedEnd: number;
  readonly bytes: number;
  readonly layout: ChainLayout | undefined;
}

/** The chain layout HEAD cached with its published run, when it has one. */
function layoutOf(latest: LatestRecord): ChainLayout | undefined {
  return latest.extents && latest.chainVersion !== undefined ? { extents: latest.extents, version: latest.chainVersion } : undefined;
}

/**
 * Stores `appended` after `base`. Completed runs extend the base's chain when the base is its end
 * (compacting when the chain has too many objects), else fork a new chain from a copy of the base;
 * other runs are kept as one gzip object of their own (base + appended bytes), never served.
 */
async function extendRun(
  ctx: StoreContext,
  pk: string,
  run: Admitted,
  base: ChainBase,
  appended: Buffer,
  digest: ResumedDigest,
  opts: CallOptions,
): Promise<WriteResult> {
  const signal = opts.signal;
  const bytes = base.bytes + appended.length;
  if (appended.length === 0 && run.status === 'completed') {
    // Nothing new (a worker that writes the file it hydrated): the run is the base's prefix of the same
    // chain, whatever came after it — no object, no chain update. Its key names no object: it is only the
    // claim's identity (a retry of this request is a duplicate, and finishes the publish).
    const key = chainObjectKey(pk, run.runId, run.generation, ctx.newId(), base.chainId);
    return commitRun(ctx, pk, { ...chainRun(run, key, base.storedEnd, digest, bytes), chainId: base.chainId }, { ...opts, head: run.head, layout: base.layout, listing: run.listing, storedDelta: 0 });
  }
  const member = await fragmentOf(appended);

  // HEAD's cached layout, when it says the base is the chain's end, stands in for a read of the chain:
  // the chain update below is conditional on its version and end, so a stale cache only costs a retry.
  let chain: ChainRecord | undefined =
    base.layout && sum(base.layout.extents) === base.storedEnd
      ? { chainId: base.chainId, generation: run.generation, extents: base.layout.extents, end: base.storedEnd, version: base.layout.version }
      : await readChain(ctx, pk, base.chainId, signal);
  if (chain && chain.generation === run.generation && chain.end === base.storedEnd && run.status === 'completed') {
    const from = planCompaction([...chain.extents.map((e) => e.length), member.length], ctx.limits.chainMaxExtents, ctx.limits.chainMergeRatio);
    const kept = from < 0 ? chain.extents : chain.extents.slice(0, from);
    const merged = from < 0 ? [] : chain.extents.slice(from);
    const old = merged.length ? await readStoredRange(ctx, merged, 0, sum(merged), signal) : Buffer.alloc(0);
    if (old !== GONE) {
      const key = chainObjectKey(pk, run.runId, run.generation, ctx.newId(), chain.chainId);
      const extent = await putChainObject(ctx, key, old.length ? Buffer.concat([old, member]) : member, signal);
      const extents = [...kept, extent];
      const end = chain.end + member.length;
      if (await updateChain(ctx, pk, chain, { extents, end }, signal)) {
        // The merged objects are now referenced by nothing but stale cached layouts, whose readers
        // fall back to the CHAIN record (chain.ts).
        if (merged.length) await deleteObjectsQuietly(ctx, merged.map((e) => e.key), signal);
        return commitRun(
          ctx,
          pk,
          { ...chainRun(run, key, end, digest, bytes), chainId: chain.chainId },
          { ...opts, head: run.head, layout: { extents, version: chain.version + 1 }, listing: run.listing, storedDelta: member.length },
        );
      }
      await deleteObjectQuietly(ctx, key, signal);
    }
    chain = await readChain(ctx, pk, base.chainId, signal);
  }
  // Fork: copy the base's prefix. Busy chains compact under the read (each compaction deletes what it
  // merged): read the layout again and retry, a few times, before answering 503.
  let prefix: Buffer | typeof GONE = GONE;
  for (let attempt = 1; prefix === GONE; attempt++) {
    // The base's chain is gone: only a clear deletes chains, so this run is fenced — unless HEAD says otherwise.
    if (!chain || chain.generation !== run.generation || chain.end < base.storedEnd) return fencedOrMismatch(ctx, pk, run, signal);
    prefix = await readStoredRange(ctx, chain.extents, 0, base.storedEnd, signal);
    if (prefix !== GONE) break;
    if (attempt >= FORK_READ_ATTEMPTS) throw new StoreError('CONTENDED', 'the base chain changed under every read; retry');
    chain = await readChain(ctx, pk, base.chainId, signal);
  }
  const stored = Buffer.concat([prefix, member]);
  if (run.status === 'completed') return newChain(ctx, pk, run, stored, { bytes, ...digest }, opts);
  return putSingleObject(ctx, pk, run, wrapGzip(stored, digest.crc32, bytes), { runId: run.runId, sha256: digest.sha256, bytes }, opts);
}

/** Reads of a busy chain's prefix before a fork gives up with 503 (each follows a fresh read of the chain). */
const FORK_READ_ATTEMPTS = 5;

/** `fenced` when HEAD has moved past the run's generation (a clear since its admission), else `base-mismatch`. */
async function fencedOrMismatch(ctx: StoreContext, pk: string, run: Admitted, abortSignal?: AbortSignal): Promise<WriteResult> {
  const head = await readHead(ctx, pk, abortSignal);
  return isCurrent(run.generation, head.generation) ? { kind: 'base-mismatch' } : { kind: 'fenced' };
}

/** A new chain of one object holding `stored` (deflate fragments), and the run that is all of it. */
async function newChain(
  ctx: StoreContext,
  pk: string,
  run: Admitted,
  stored: Buffer,
  digest: ResumedDigest & { bytes: number },
  opts: CallOptions,
): Promise<WriteResult> {
  const chainId = ctx.newId();
  const key = chainObjectKey(pk, run.runId, run.generation, ctx.newId(), chainId);
  // 1. The object, then the chain that names it: nothing refers to either until the claim.
  const extent = await putChainObject(ctx, key, stored, opts.signal);
  await createChain(ctx, pk, { chainId, generation: run.generation, extents: [extent], end: stored.length, version: 1 }, opts.signal);
  const result = await commitRun(ctx, pk, { ...chainRun(run, key, stored.length, digest, digest.bytes), chainId }, { ...opts, head: run.head, layout: { extents: [extent], version: 1 }, listing: run.listing, storedDelta: stored.length });
  // Fenced (a clear or an erasure since admission): no run refers to the chain this request made, and none
  // ever will (an append's base must be of the current generation). Remove it, so a write that was in flight
  // when an erasure completed leaves nothing behind: the record first, so it never names a missing object.
  if (result.kind === 'fenced') await dropOwnChain(ctx, pk, chainId, key, opts.signal);
  return result;
}

/** Best effort removal of a chain this request created and that nothing refers to (see `newChain`). */
async function dropOwnChain(ctx: StoreContext, pk: string, chainId: string, key: string, abortSignal?: AbortSignal): Promise<void> {
  try {
    await ctx.ddb.send(new DeleteItemCommand({ TableName: ctx.table, Key: chainKey(pk, chainId) }), { abortSignal });
  } catch (err) {
    ctx.onCleanupError('delete fenced chain record', err);
    return;
  }
  await deleteObjectQuietly(ctx, key, abortSignal);
}

function chainRun(run: Admitted, key: string, end: number, digest: ResumedDigest, bytes: number): Omit<RunRecord, 'createdAtMs'> {
  return {
    runId: run.runId,
    status: run.status,
    s3Key: key,
    encoding: 'gzip',
    storedBytes: end,
    storedSha256: undefined,
    sha256: digest.sha256,
    bytes,
    iat: run.iat,
    generation: run.generation,
    hashState: digest.state.sha256,
    crcState: digest.state.crc32,
    crc32: digest.crc32,
  };
}

/** The saved digest states of a run (both needed to extend it), or undefined. */
function digestStateOf(r: { hashState?: Uint8Array | undefined; crcState?: Uint8Array | undefined; crc32?: number | undefined }): DigestState | undefined {
  return r.hashState && r.crcState && r.crc32 !== undefined ? { sha256: r.hashState, crc32: r.crcState } : undefined;
}

/** A run stored as one gzip object of its own (runs that did not complete). */
async function putSingleObject(ctx: StoreContext, pk: string, run: Admitted, compressed: Buffer, meta: SnapshotMeta, opts: CallOptions): Promise<WriteResult> {
  const s3Key = snapshotObjectKey(pk, run.runId, run.generation, ctx.newId(), 'gzip');
  // 1. Upload first: nothing refers to this key yet, and no other writer will ever use it.
  await ctx.s3.send(
    new PutObjectCommand({
      Bucket: ctx.bucket,
      Key: s3Key,
      Body: compressed,
      ContentLength: compressed.length,
      ContentType: NDJSON_CONTENT_TYPE,
      ContentEncoding: 'gzip',
      Metadata: { sha256: meta.sha256 },
    }),
    { abortSignal: opts.signal },
  );
  return commitRun(
    ctx,
    pk,
    {
      ...meta,
      status: run.status,
      s3Key,
      encoding: 'gzip',
      storedBytes: compressed.length,
      storedSha256: sha256Hex(compressed),
      iat: run.iat,
      generation: run.generation,
    },
    { ...opts, head: run.head, listing: run.listing, storedDelta: compressed.length },
  );
}

function sum(extents: readonly Extent[]): number {
  return extents.reduce((n, e) => n + e.length, 0);
}

/**
 * Step 0 of a write or an append: one consistent BatchGetItem of HEAD, the run's own record and (for
 * an append) the base run's record. Places the run (see `admit`); a run that already has a record of
 * its generation is a duplicate (rolled forward if it never published, as `commitRun` does), answered
 * before anything is written.
 */
async function admitRun(
  ctx: StoreContext,
  pk: string,
  runId: number,
  evidence: RunEvidence,
  abortSignal: AbortSignal | undefined,
  baseRunId?: number,
  scope?: ConversationScope,
): Promise<Admission | { kind: 'done'; result: WriteResult }> {
  const fenceKeys = scope ? scopeFenceKeys(scope) : [];
  const keys = [headKey(pk), runKey(pk, runId), ...(baseRunId !== undefined && baseRunId !== runId ? [runKey(pk, baseRunId)] : []), ...fenceKeys];
  const items = await batchGet(ctx, keys, abortSignal);
  const bySk = new Map(items.filter((item) => item['pk']?.S === pk).map((item) => [item['sk']?.S, item]));
  const headItem = bySk.get(HEAD_SK);
  const head = fromHeadItem(headItem);
  const generation = placeRun(ctx, head, evidence);
  if (generation === undefined) return { kind: 'done', result: { kind: 'fenced' } };
  const ownItem = bySk.get(RUN_SK_PREFIX + padRunId(runId));
  const own = ownItem ? fromRunItem(ownItem) : undefined;
  if (own && own.generation >= generation) {
    if (own.generation > generation) return { kind: 'done', result: { kind: 'fenced' } };
    // Finish a commit that died before its publish (idempotent), unless HEAD already serves it or a newer run.
    if (own.status === 'completed' && !(head.latestRunId !== undefined && head.latestRunId >= own.runId)) await publish(ctx, pk, own, abortSignal);
    return { kind: 'done', result: { kind: 'duplicate' } };
  }
  const scoped = scope ? await admitToScope(ctx, scope, head, fencesOf(scope, items), abortSignal) : { registration: undefined };
  if (!scoped) return { kind: 'done', result: { kind: 'fenced' } };
  const baseItem = baseRunId !== undefined ? bySk.get(RUN_SK_PREFIX + padRunId(baseRunId)) : undefined;
  return { kind: 'admitted', generation, head, latest: latestFromHeadItem(headItem), base: baseItem ? fromRunItem(baseItem) : undefined, registration: scoped.registration };
}

/** An admitted write (step 0): its generation, HEAD and published run as read, an append's base, and its registration. */
interface Admission {
  readonly kind: 'admitted';
  readonly generation: number;
  readonly head: HeadRecord;
  readonly latest: LatestRecord | undefined;
  readonly base: RunRecord | undefined;
  /** The `registeredBy` token of the registry item this request put (HEAD did not list the conversation), if any. */
  readonly registration: string | undefined;
}

/**
 * A write that registered its conversation (`registration`) and was then fenced (a clear or an erasure since its
 * admission) removes its registry item again, unless another write has registered the conversation since
 * (the DeleteItem is conditional on this request's `registeredBy`). Otherwise an erasure that listed the
 * registry before this request put it would leave the item — the raw ids, and an agent in `/admin/agents` —
 * behind once it completed. Best effort: a failure is reported to `ctx.onCleanupError`. Returns `result`.
 */
export async function settleRegistration(
  ctx: StoreContext,
  scope: ConversationScope,
  registration: string | undefined,
  result: WriteResult,
  abortSignal?: AbortSignal,
): Promise<WriteResult> {
  if (result.kind === 'fenced' && registration !== undefined) await dropRegistration(ctx, scope, registration, abortSignal);
  return result;
}

async function dropRegistration(ctx: StoreContext, scope: ConversationScope, registeredBy: string, abortSignal?: AbortSignal): Promise<void> {
  try {
    await ctx.ddb.send(
      new DeleteItemCommand({
        TableName: ctx.table,
        Key: registryKey(segmentsOf(scope)),
        ConditionExpression: 'registeredBy = :me',
        ExpressionAttributeValues: marshall({ ':me': registeredBy }),
      }),
      { abortSignal },
    );
  } catch (err) {
    if (!(err instanceof ConditionalCheckFailedException)) ctx.onCleanupError('delete fenced registration', err);
  }
}

/** The organization's and the agent's erasure fences, as read. */
interface ScopeFences {
  readonly org: ScopeFence;
  readonly agent: ScopeFence;
}

function scopeFenceKeys(scope: ConversationScope): Item[] {
  const s = segmentsOf(scope);
  return [orgFenceKey(s.org), agentFenceKey(s.org, s.agent)];
}

/** Picks the two fences of `scope` out of BatchGetItem results (an absent item is epoch 0, not erasing). */
function fencesOf(scope: ConversationScope, items: readonly Item[]): ScopeFences {
  const [orgKey, agentKey] = scopeFenceKeys(scope);
  const find = (key: Item) => items.find((item) => item['pk']?.S === key['pk']?.S && item['sk']?.S === key['sk']?.S);
  return { org: fromFenceItem(find(orgKey!)), agent: fromFenceItem(find(agentKey!)) };
}

function sameFences(a: ScopeFences, b: ScopeFences): boolean {
  return a.org.epoch === b.org.epoch && a.agent.epoch === b.agent.epoch && !b.org.erasing && !b.agent.erasing;
}

/**
 * The erasure half of admission (docs/DESIGN.md § Registry, activity and scope fences). False when the write
 * must be fenced: an erasure of its organization or agent is running, or one started since `fences` were read.
 * A conversation HEAD does not list yet is registered first — Put of its registry item, then a second read
 * of the fences — so an erasure that bumps a fence either is seen here, or finds the registry item and fences
 * the conversation's HEAD before this write's conditional HEAD update. Nothing has been stored yet either way,
 * but the registry item: a write fenced here removes it again (an erasure may have listed the registry before
 * it was put). Otherwise resolves with the `registeredBy` token of the item put (undefined: none was needed).
 */
async function admitToScope(
  ctx: StoreContext,
  scope: ConversationScope,
  head: HeadRecord,
  fences: ScopeFences,
  abortSignal?: AbortSignal,
): Promise<false | { registration: string | undefined }> {
  if (fences.org.erasing || fences.agent.erasing) return false;
  if (head.registered) return { registration: undefined };
  const registration = ctx.newId();
  await ctx.ddb.send(new PutItemCommand({ TableName: ctx.table, Item: registryItem(scope, ctx.now(), registration) }), { abortSignal });
  const again = fencesOf(scope, await batchGet(ctx, scopeFenceKeys(scope), abortSignal));
  if (sameFences(fences, again)) return { registration };
  await dropRegistration(ctx, scope, registration, abortSignal);
  return false;
}

async function deleteObjectsQuietly(ctx: StoreContext, keys: readonly string[], abortSignal?: AbortSignal): Promise<void> {
  try {
    await deleteObjects(ctx, keys, abortSignal);
  } catch (err) {
    ctx.onCleanupError('delete compacted objects', err);
  }
}

/** What places a run against resets: the generation its writer echoes, else its token's `iat` (seconds). */
export interface RunEvidence {
  readonly generation?: number | undefined;
  readonly issuedAt: number;
}

/**
 * Step 0: reads HEAD (consistent) and places the run. Returns its generation with the HEAD it was judged
 * against, or undefined when the run must be fenced: an echoed generation other than HEAD's (older: a
 * reset since its hydrate; newer: never announced, so it must never become publishable by a later
 * reset), or no echo and the legacy rule (fence.ts) places it before the last reset. With `scope`, also
 * fenced while an erasure of its organization or agent runs (the registration of `admitToScope`);
 * `registration` is then the token of the registry item this call put, for {@link settleRegistration}.
 */
export async function admit(
  ctx: StoreContext,
  pk: string,
  evidence: RunEvidence,
  abortSignal?: AbortSignal,
  scope?: ConversationScope,
): Promise<{ generation: number; head: HeadRecord; registration: string | undefined } | undefined> {
  if (!scope) {
    const head = await readHead(ctx, pk, abortSignal);
    const generation = placeRun(ctx, head, evidence);
    return generation === undefined ? undefined : { generation, head, registration: undefined };
  }
  const items = await batchGet(ctx, [headKey(pk), ...scopeFenceKeys(scope)], abortSignal);
  const head = fromHeadItem(items.find((item) => item['pk']?.S === pk));
  const generation = placeRun(ctx, head, evidence);
  if (generation === undefined) return undefined;
  const scoped = await admitToScope(ctx, scope, head, fencesOf(scope, items), abortSignal);
  return scoped ? { generation, head, registration: scoped.registration } : undefined;
}

/** The generation a run belongs to against `head`, or undefined when it must be fenced (see `admit`). */
function placeRun(ctx: StoreContext, head: HeadRecord, evidence: RunEvidence): number | undefined {
  return evidence.generation !== undefined
    ? isCurrent(evidence.generation, head.generation)
      ? evidence.generation
      : undefined
    : legacyGeneration(evidence.issuedAt, ctx.now(), head, ctx.legacyFenceWindowSeconds);
}

/**
 * Claims, then publishes an object already uploaded to `fields.s3Key` (steps 2 and 3 above). Used by
 * direct writes and upload commits alike. Never deletes an object a record refers to.
 */
export async function commitRun(
  ctx: StoreContext,
  pk: string,
  fields: Omit<RunRecord, 'createdAtMs'>,
  opts: CallOptions & {
    head?: HeadRecord | undefined;
    layout?: ChainLayout | undefined;
    /** The writer's ids: its HEAD update lists the conversation (registry.ts). Absent for roll-forwards. */
    listing?: Listing | undefined;
    /** Bytes this request added to storage, for the conversation's `storedBytesTotal` counter. */
    storedDelta?: number | undefined;
  },
): Promise<WriteResult> {
  let record: RunRecord = { ...fields, createdAtMs: ctx.now() };
  const listed = opts.listing && listingUpdate(opts.listing.scope, pk, record.createdAtMs, opts.storedDelta ?? 0);
  // A chain run's object belongs to its chain: it is never deleted on its own.
  const dropOwnObject = () => (record.chainId === undefined ? deleteObjectQuietly(ctx, record.s3Key, opts.signal) : Promise.resolve());
  const meta: SnapshotMeta = { runId: record.runId, sha256: record.sha256, bytes: record.bytes };

  // 2. Claim the run. Exactly one writer per (conversation, run) gets past this line (I5).
  for (let attempt = 1; ; attempt++) {
    const existing = await claim(ctx, pk, record, opts.signal);
    if (existing === undefined) break;
    if (existing.s3Key === record.s3Key) {
      // The claim is our own: its response was lost (connection reset) and the SDK retried the PutItem,
      // whose condition then failed against our first attempt. s3Key is unique to this request, so this
      // is certain. Deleting "our duplicate" object here would delete the committed snapshot.
      record = existing;
      break;
    }
    if (existing.generation < record.generation && attempt === 1) {
      // A record from before a reset that the reset's cleanup did not get to (it died, or a fenced writer
      // died before removing its claim). It can never publish again: remove it and claim once more.
      if (await deleteStaleRun(ctx, pk, existing, record.generation, opts.signal)) await deleteObjectQuietly(ctx, existing.s3Key, opts.signal);
      continue;
    }
    await dropOwnObject();
    // The run was claimed in a later generation: this run is from before a reset.
    if (existing.generation > record.generation) return { kind: 'fenced' };
    // Someone claimed this run first — a concurrent duplicate, or this same request's earlier attempt
    // that died before publishing. Finish that commit (idempotent), so a retry always converges (I3).
    if (existing.status === 'completed') await publish(ctx, pk, existing, opts.signal);
    return { kind: 'duplicate' };
  }

  // Non-completed runs are kept for the record but never published, so never served (I1). They still
  // list the conversation (an operator must see a runaway agent's failed runs), with an update conditional
  // on the run's generation: a clear or erasure since admission fences the run here.
  if (record.status !== 'completed') {
    if (!listed) return { kind: 'stored', meta, latest: false };
    const fence = currentGenerationCondition(record.generation);
    const touched = await updateHeadIf(
      ctx,
      pk,
      { update: `SET ${listed.set.join(', ')} ADD ${listed.add.join(', ')}`, condition: fence.expression, values: { ...listed.values, ...fence.values } },
      opts.signal,
    );
    if (touched === true) return { kind: 'stored', meta, latest: false };
    await deleteRunQuietly(ctx, pk, record, opts.signal);
    return { kind: 'fenced' };
  }
  // HEAD, read at admission, already serves a higher run: a publish could only fail.
  const known = opts.head?.latestRunId;
  if (known !== undefined && known >= record.runId && opts.head?.latestKey !== record.s3Key) return { kind: 'stored', meta, latest: false };

  // 3. Publish.
  const published = await publish(ctx, pk, record, opts.signal, opts.layout, listed);
  if (published === true) return { kind: 'stored', meta, latest: true };

  // Not published: a higher run is already latest (fine: stored, 200), or a clear fenced this run, or
  // our own publish landed and the SDK retried it after a lost response (HEAD already names our key).
  // DynamoDB hands back the HEAD that failed the condition; on dynalite we read it.
  const head = published.head ? fromHeadItem(published.head) : await readHead(ctx, pk, opts.signal);
  if (head.latestKey === record.s3Key) return { kind: 'stored', meta, latest: true };
  if (!isCurrent(record.generation, head.generation)) {
    await deleteRunQuietly(ctx, pk, record, opts.signal);
    return { kind: 'fenced' };
  }
  return { kind: 'stored', meta, latest: false };
}

/** PutItem RUN if absent. Undefined when claimed; otherwise the record that holds the run. */
async function claim(ctx: StoreContext, pk: string, record: RunRecord, abortSignal?: AbortSignal): Promise<RunRecord | undefined> {
  try {
    await ctx.ddb.send(
      new PutItemCommand({
        TableName: ctx.table,
        // A run that did not complete carries the DynamoDB TTL backstop of its retention (retention-settings.ts).
        Item: runItem(pk, record.status === 'completed' ? record : { ...record, expiresAt: failedRunExpiresAt(record.createdAtMs, ctx.retention.retainFailedDays) }),
        ConditionExpression: 'attribute_not_exists(pk)',
        // DynamoDB returns the conflicting item with the failure (saves a read); dynalite ignores
        // this, so the read below remains the fallback.
        ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
      }),
      { abortSignal },
    );
    return undefined;
  } catch (err) {
    if (!(err instanceof ConditionalCheckFailedException)) throw err;
    const existing = err.Item ? fromRunItem(err.Item) : await readRun(ctx, pk, record.runId, abortSignal);
    // Deleted in between (a clear): claim again.
    return existing ?? claim(ctx, pk, record, abortSignal);
  }
}

/**
 * Deletes a RUN record if it is still the one read and still of a generation before `generation` — the
 * exact negation of being publishable (fence.ts). True when it deleted it.
 */
export async function deleteStaleRun(ctx: StoreContext, pk: string, r: RunRecord, generation: number, abortSignal?: AbortSignal): Promise<boolean> {
  const stale = staleGenerationCondition(generation);
  try {
    const res = await ctx.ddb.send(
      new DeleteItemCommand({
        TableName: ctx.table,
        Key: runKey(pk, r.runId),
        // A new run may have re-claimed this runId after a clear deleted the old record.
        ConditionExpression: `s3Key = :key AND ${stale.expression}`,
        ExpressionAttributeValues: { ...marshall({ ':key': r.s3Key }), ...stale.values },
        ReturnValues: 'ALL_OLD',
      }),
      { abortSignal },
    );
    return res.Attributes !== undefined;
  } catch (err) {
    if (err instanceof ConditionalCheckFailedException) return false;
    throw err;
  }
}

/**
 * One conditional write: succeeds only if this run is newer than the latest and HEAD is still at the
 * run's generation.
 * On failure, the HEAD item that failed the condition when the service returns it (DynamoDB does).
 */
export async function publish(
  ctx: StoreContext,
  pk: string,
  r: RunRecord,
  abortSignal?: AbortSignal,
  layout?: ChainLayout,
  listed?: ExtraClauses,
): Promise<true | { head: Item | undefined }> {
  if (r.chainId !== undefined && layout === undefined) {
    // Roll-forward of a chain run: cache the chain's current layout (the chain is gone after a clear).
    const chain = await readChain(ctx, pk, r.chainId, abortSignal);
    if (!chain || chain.end < r.storedBytes) return { head: undefined };
    layout = { extents: chain.extents, version: chain.version };
  }
  const fence = currentGenerationCondition(r.generation);
  const set = setLatest(r, layout, listed);
  return updateHeadIf(
    ctx,
    pk,
    {
      update: set.expression,
      condition: `(attribute_not_exists(latestRunId) OR latestRunId < :latestRunId) AND ${fence.expression}`,
      values: { ...set.values, ...fence.values },
    },
    abortSignal,
  );
}

/**
 * One conditional UpdateItem of HEAD. `true` when it applied; otherwise the HEAD item that failed the
 * condition when the service returns it (`ReturnValuesOnConditionCheckFailure`; DynamoDB does, dynalite
 * does not: then `head` is undefined and the caller reads it).
 */
export async function updateHeadIf(
  ctx: StoreContext,
  pk: string,
  expr: { update: string; condition: string; values: Item },
  abortSignal?: AbortSignal,
): Promise<true | { head: Item | undefined }> {
  try {
    await ctx.ddb.send(
      new UpdateItemCommand({
        TableName: ctx.table,
        Key: headKey(pk),
        UpdateExpression: expr.update,
        ConditionExpression: expr.condition,
        ExpressionAttributeValues: expr.values,
        ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
      }),
      { abortSignal },
    );
    return true;
  } catch (err) {
    if (err instanceof ConditionalCheckFailedException) return { head: err.Item };
    throw err;
  }
}

/** The RUN record, or undefined if a clear deleted it in the meantime (consistent read). */
export async function readRun(ctx: StoreContext, pk: string, runId: number, abortSignal?: AbortSignal): Promise<RunRecord | undefined> {
  const res = await ctx.ddb.send(new GetItemCommand({ TableName: ctx.table, Key: runKey(pk, runId), ConsistentRead: true }), { abortSignal });
  return res.Item ? fromRunItem(res.Item) : undefined;
}

export async function readHead(ctx: StoreContext, pk: string, abortSignal?: AbortSignal): Promise<HeadRecord> {
  const res = await ctx.ddb.send(
    new GetItemCommand({
      TableName: ctx.table,
      Key: headKey(pk),
      ConsistentRead: true,
      ProjectionExpression: 'generation, clearedAtMs, latestKey, latestRunId, orgKey',
    }),
    { abortSignal },
  );
  return fromHeadItem(res.Item);
}

/** A fenced writer removes its own claim and object; if it crashes, the next clear does it. */
async function deleteRunQuietly(ctx: StoreContext, pk: string, r: RunRecord, abortSignal?: AbortSignal): Promise<void> {
  try {
    await ctx.ddb.send(
      new DeleteItemCommand({
        TableName: ctx.table,
        Key: runKey(pk, r.runId),
        ConditionExpression: 's3Key = :key',
        ExpressionAttributeValues: marshall({ ':key': r.s3Key }),
      }),
      { abortSignal },
    );
  } catch (err) {
    if (!(err instanceof ConditionalCheckFailedException)) ctx.onCleanupError('delete fenced run record', err);
  }
  // A chain's objects go with the chain (the next clear deletes the old generation's chains).
  if (r.chainId === undefined) await deleteObjectQuietly(ctx, r.s3Key, abortSignal);
}

/** Best effort, but still bound by the request deadline: a stalled cleanup must not hold the answer. */
export async function deleteObjectQuietly(ctx: StoreContext, s3Key: string, abortSignal?: AbortSignal): Promise<void> {
  try {
    await ctx.s3.send(new DeleteObjectCommand({ Bucket: ctx.bucket, Key: s3Key }), { abortSignal });
  } catch (err) {
    ctx.onCleanupError('delete unreferenced object', err);
  }
}
