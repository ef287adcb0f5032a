import { promisify } from 'node:util';
import { gzip as gzipCb } from 'node:zlib';
import {
  ConditionalCheckFailedException,
  DeleteItemCommand,
  GetItemCommand,
  PutItemCommand,
  UpdateItemCommand,
} from '@aws-sdk/client-dynamodb';
import { DeleteObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { marshall } from '@aws-sdk/util-dynamodb';
import { NDJSON_CONTENT_TYPE, type TerminalStatus } from '../contract.js';
import { conversationKey, type ConversationScope } from '../ids.js';
import type { CallOptions, StoreContext } from './context.js';
import { sha256Hex } from './digest.js';
import { currentGenerationCondition, isCurrent, legacyGeneration, staleGenerationCondition } from './fence.js';
import {
  fromHeadItem,
  fromRunItem,
  headKey,
  runItem,
  runKey,
  setLatest,
  snapshotObjectKey,
  type HeadRecord,
  type Item,
  type RunRecord,
  type SnapshotMeta,
} from './schema.js';

/**
 * The write protocol (1 S3 write + 2 conditional DynamoDB writes; every commit step is ONE conditional
 * write, so it is atomic on dynalite, which has no transactions):
 *
 *   0. Admission: one consistent GetItem of HEAD. The run's generation is the one its writer echoes
 *      (it must be HEAD's: older means a reset happened since its hydrate, newer was never announced),
 *      or, for a writer that echoes none, HEAD's if the legacy rule in fence.ts places the run after the
 *      last reset. A fenced run stops here (409) before anything is written. The read also tells
 *      whether a higher run is already published (then step 3 is skipped: it could only fail).
 *   1. PutObject to a fresh key.   crash here → orphan object, nothing visible; a retry succeeds
 *                                  (the reconciler deletes the orphan later).
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

/** Token-derived identity of a writer, and the generation it echoes. */
export interface WriterScope extends ConversationScope {
  /** Token `iat` (seconds): the run's start, for writers that send no generation (fence.ts). */
  readonly issuedAt: number;
  /** The reset generation of the hydrate this run started from (`x-snapshot-generation`), when sent. */
  readonly generation?: number | undefined;
}

/**
 * Outcome of a write or an upload commit:
 *   stored            the run is stored; `latest` when hydrate now serves it
 *   duplicate         the run already had a snapshot (409 snapshot_exists)
 *   fenced            a clear happened after the run started (409 reset_fenced)
 *   upload-not-found  the uploadId names nothing (400)
 *   upload-invalid    the uploaded object is unusable (400; `reason` is for logs)
 *   upload-too-large  the upload decodes past the maximum (413)
 */
export type WriteResult =
  | { kind: 'stored'; meta: SnapshotMeta; latest: boolean }
  | { kind: 'duplicate' }
  | { kind: 'fenced' }
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
 * Stores a snapshot sent inline (gzip-compressed at rest) and commits it.
 * @returns the outcome; throws SDK/network errors (transient → 503 upstream) and AbortError at the deadline.
 */
export async function writeSnapshot(ctx: StoreContext, scope: WriterScope, input: WriteInput, opts: CallOptions = {}): Promise<WriteResult> {
  const pk = conversationKey(scope);
  const admission = await admit(ctx, pk, { generation: scope.generation, issuedAt: scope.issuedAt }, opts.signal);
  if (!admission) return { kind: 'fenced' };
  const { generation } = admission;
  const meta: SnapshotMeta = { runId: input.runId, sha256: sha256Hex(input.body), bytes: input.body.length };
  const compressed = await gzip(input.body);
  const s3Key = snapshotObjectKey(pk, input.runId, generation, ctx.newId(), 'gzip');

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
      status: input.status,
      s3Key,
      encoding: 'gzip',
      storedBytes: compressed.length,
      storedSha256: sha256Hex(compressed),
      iat: scope.issuedAt,
      generation,
    },
    { ...opts, head: admission.head },
  );
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
 * reset), or no echo and the legacy rule (fence.ts) places it before the last reset.
 */
export async function admit(ctx: StoreContext, pk: string, evidence: RunEvidence, abortSignal?: AbortSignal): Promise<{ generation: number; head: HeadRecord } | undefined> {
  const head = await readHead(ctx, pk, abortSignal);
  const generation =
    evidence.generation !== undefined
      ? isCurrent(evidence.generation, head.generation)
        ? evidence.generation
        : undefined
      : legacyGeneration(evidence.issuedAt, ctx.now(), head, ctx.legacyFenceWindowSeconds);
  return generation === undefined ? undefined : { generation, head };
}

/**
 * Claims, then publishes an object already uploaded to `fields.s3Key` (steps 2 and 3 above). Used by
 * direct writes and upload commits alike. Never deletes an object a record refers to.
 */
export async function commitRun(
  ctx: StoreContext,
  pk: string,
  fields: Omit<RunRecord, 'createdAtMs'>,
  opts: CallOptions & { head?: HeadRecord | undefined },
): Promise<WriteResult> {
  let record: RunRecord = { ...fields, createdAtMs: ctx.now() };
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
    await deleteObjectQuietly(ctx, record.s3Key, opts.signal);
    // The run was claimed in a later generation: this run is from before a reset.
    if (existing.generation > record.generation) return { kind: 'fenced' };
    // Someone claimed this run first — a concurrent duplicate, or this same request's earlier attempt
    // that died before publishing. Finish that commit (idempotent), so a retry always converges (I3).
    if (existing.status === 'completed') await publish(ctx, pk, existing, opts.signal);
    return { kind: 'duplicate' };
  }

  // Non-completed runs are kept for the record but never published, so never served (I1).
  if (record.status !== 'completed') return { kind: 'stored', meta, latest: false };
  // HEAD, read at admission, already serves a higher run: a publish could only fail.
  const known = opts.head?.latestRunId;
  if (known !== undefined && known >= record.runId && opts.head?.latestKey !== record.s3Key) return { kind: 'stored', meta, latest: false };

  // 3. Publish.
  const published = await publish(ctx, pk, record, opts.signal);
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
        Item: runItem(pk, record),
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
export async function publish(ctx: StoreContext, pk: string, r: RunRecord, abortSignal?: AbortSignal): Promise<true | { head: Item | undefined }> {
  const fence = currentGenerationCondition(r.generation);
  const set = setLatest(r);
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
      ProjectionExpression: 'generation, clearedAtMs, latestKey, latestRunId',
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
  await deleteObjectQuietly(ctx, r.s3Key, abortSignal);
}

/** Best effort, but still bound by the request deadline: a stalled cleanup must not hold the answer. */
export async function deleteObjectQuietly(ctx: StoreContext, s3Key: string, abortSignal?: AbortSignal): Promise<void> {
  try {
    await ctx.s3.send(new DeleteObjectCommand({ Bucket: ctx.bucket, Key: s3Key }), { abortSignal });
  } catch (err) {
    ctx.onCleanupError('delete unreferenced object', err);
  }
}
