import { createHash, randomUUID } from 'node:crypto';
import {
  ConditionalCheckFailedException,
  DeleteItemCommand,
  GetItemCommand,
  PutItemCommand,
  QueryCommand,
  UpdateItemCommand,
  type AttributeValue,
  type DynamoDBClient,
} from '@aws-sdk/client-dynamodb';
import { DeleteObjectCommand, GetObjectCommand, ListObjectsV2Command, NoSuchKey, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { TerminalStatus } from './contract.js';
import { conversationKey, padRunId, type ConversationScope } from './ids.js';

/**
 * All storage logic lives here. Handlers make exactly one call into this module.
 *
 * Data model (one DynamoDB partition per conversation, pk = conversationKey = "org/agent/conv" encoded):
 *
 *   HEAD   sk = "HEAD"         latestRunId, latestKey, latestSha256, latestBytes, latestCreatedAtMs  (what hydrate serves)
 *                              clearedAtMs, clearedAtSec                                          (the reset fence, I4)
 *   RUN    sk = "RUN#<run16>"  runStatus, s3Key, sha256, bytes, iat, createdAtMs                   (one per stored run; immutable)
 *
 *   S3     snapshots/<conversationKey>/<run16>/<iat>-<uuid>.jsonl   (a fresh key per upload: never overwritten)
 *
 * Write (1 S3 write + 2 conditional DynamoDB writes; every commit step is ONE conditional write, so it
 * is atomic on dynalite, which has no transactions):
 *   1. PutObject to a fresh key.                      crash here → orphan object, nothing visible; retry succeeds.
 *   2. Claim:   PutItem RUN  if attribute_not_exists  crash here → RUN claimed, HEAD not moved; a retry gets 409
 *                                                      and rolls the claim forward (step 3 with the RUN's data).
 *   3. Publish: UpdateItem HEAD if latestRunId < run AND the run is after the fence.
 * Hydrate (1 DynamoDB read + 1 S3 read): GetItem HEAD (consistent), GetObject latestKey.
 *
 * The reset fence (I4). A run is "after" a clear iff
 *     RUN.createdAtMs > HEAD.clearedAtMs   (it was claimed after the clear)  AND
 *     RUN.iat        >= HEAD.clearedAtSec  (its token was issued in or after the clear's second).
 * Publish only accepts runs after the fence; clear deletes exactly the runs that are not after it. Both
 * compare the same stored numbers, so a run that clear deletes can never be published (no dangling HEAD).
 * A token issued in the same second as the clear counts as after it: `iat` has 1 s resolution and dropping
 * a legitimate new run is worse than letting a run that started <1 s before the clear publish.
 *
 *   writer W (old token)                 clear C
 *   PutObject K
 *   claim RUN (createdAt=t1)
 *                                        HEAD: clearedAtMs=t2 (>t1), remove latest
 *                                        delete K, delete RUN (t1 < t2)
 *   publish → condition fails (t1 < t2)  → W removes what is left of its claim and answers 409 reset_fenced
 */

export const HEAD_SK = 'HEAD';
export const RUN_SK_PREFIX = 'RUN#';
export const SNAPSHOT_PREFIX = 'snapshots/';

export interface StoreOptions {
  s3: S3Client;
  ddb: DynamoDBClient;
  bucket: string;
  table: string;
  now?: () => number;
  newId?: () => string;
  /** Best-effort cleanup failures are logged, never thrown. */
  onCleanupError?: (what: string, err: unknown) => void;
}

export interface WriterScope extends ConversationScope {
  /** Token `iat` (seconds): orders the run against resets. */
  readonly issuedAt: number;
}

export interface SnapshotMeta {
  readonly runId: number;
  readonly sha256: string;
  readonly bytes: number;
}

export type HydrateResult =
  | { kind: 'none' }
  | { kind: 'not-modified'; meta: SnapshotMeta }
  | { kind: 'body'; meta: SnapshotMeta; body: Buffer };

export type WriteResult =
  | { kind: 'stored'; meta: SnapshotMeta; latest: boolean }
  | { kind: 'duplicate' }
  | { kind: 'fenced' };

export class IntegrityError extends Error {
  override name = 'IntegrityError';
}

interface RunRecord extends SnapshotMeta {
  readonly status: TerminalStatus;
  readonly s3Key: string;
  readonly iat: number;
  readonly createdAtMs: number;
}

interface Fence {
  readonly ms: number;
  readonly sec: number;
}

export function sha256Hex(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** The weak/strong ETag forms a client may send back; we compare the opaque tag only. */
export function etagMatches(ifNoneMatch: string | undefined, sha256: string): boolean {
  if (!ifNoneMatch) return false;
  return ifNoneMatch.split(',').some((t) => {
    const tag = t.trim().replace(/^W\//, '');
    return tag === '*' || tag === `"${sha256}"`;
  });
}

const KEY_FILE = /\/(\d+)-[0-9a-f-]+\.jsonl$/;

export class SnapshotStore {
  private readonly s3: S3Client;
  private readonly ddb: DynamoDBClient;
  private readonly bucket: string;
  private readonly table: string;
  private readonly now: () => number;
  private readonly newId: () => string;
  private readonly onCleanupError: (what: string, err: unknown) => void;

  constructor(opts: StoreOptions) {
    this.s3 = opts.s3;
    this.ddb = opts.ddb;
    this.bucket = opts.bucket;
    this.table = opts.table;
    this.now = opts.now ?? Date.now;
    this.newId = opts.newId ?? randomUUID;
    this.onCleanupError = opts.onCleanupError ?? (() => {});
  }

  async hydrate(scope: ConversationScope, opts: { ifNoneMatch?: string } = {}): Promise<HydrateResult> {
    const pk = conversationKey(scope);
    const head = await this.ddb.send(
      new GetItemCommand({
        TableName: this.table,
        Key: key(pk, HEAD_SK),
        ConsistentRead: true, // the next run may be on another pod right after the write
        ProjectionExpression: 'latestRunId, latestKey, latestSha256, latestBytes',
      }),
    );
    const item = head.Item;
    if (!item?.['latestRunId']) return { kind: 'none' };
    const meta: SnapshotMeta = { runId: num(item, 'latestRunId'), sha256: str(item, 'latestSha256'), bytes: num(item, 'latestBytes') };
    if (etagMatches(opts.ifNoneMatch, meta.sha256)) return { kind: 'not-modified', meta };

    let body: Buffer;
    try {
      const obj = await this.s3.send(new GetObjectCommand({ Bucket: this.bucket, Key: str(item, 'latestKey') }));
      body = Buffer.from(await obj.Body!.transformToByteArray());
    } catch (err) {
      // Race, not corruption: a clear fenced HEAD and deleted the object between our two reads.
      // Answering 404 is what the reader would have seen had it arrived just after the clear.
      if (err instanceof NoSuchKey) return { kind: 'none' };
      throw err;
    }
    // Never serve a partial or foreign body (I1): the bytes must be the ones that were committed.
    if (body.length !== meta.bytes || sha256Hex(body) !== meta.sha256) {
      throw new IntegrityError(`stored object for run ${meta.runId} does not match its record`);
    }
    return { kind: 'body', meta, body };
  }

  async write(scope: WriterScope, input: { runId: number; status: TerminalStatus; body: Buffer }): Promise<WriteResult> {
    const pk = conversationKey(scope);
    const run16 = padRunId(input.runId);
    const s3Key = `${SNAPSHOT_PREFIX}${pk}/${run16}/${scope.issuedAt}-${this.newId()}.jsonl`;
    const meta: SnapshotMeta = { runId: input.runId, sha256: sha256Hex(input.body), bytes: input.body.length };

    // 1. Upload first: nothing refers to this key yet, and no other writer will ever use it.
    await this.s3.send(
      new PutObjectCommand({
        Bucket: this.bucket,
        Key: s3Key,
        Body: input.body,
        ContentLength: input.body.length,
        ContentType: 'application/x-ndjson; charset=utf-8',
      }),
    );

    // 2. Claim the run. Exactly one writer per (conversation, run) gets past this line (I5).
    const record: RunRecord = { ...meta, status: input.status, s3Key, iat: scope.issuedAt, createdAtMs: this.now() };
    try {
      await this.ddb.send(
        new PutItemCommand({
          TableName: this.table,
          Item: runItem(pk, record),
          ConditionExpression: 'attribute_not_exists(pk)',
        }),
      );
    } catch (err) {
      if (!(err instanceof ConditionalCheckFailedException)) throw err;
      // Someone claimed this run first — a concurrent duplicate, or this same request's earlier attempt
      // that died before publishing. Finish that commit (idempotent), so a retry always converges (I3).
      await this.rollForward(pk, input.runId);
      await this.deleteObjectQuietly(s3Key);
      return { kind: 'duplicate' };
    }

    // Non-completed runs are kept for the record but never published, so never served (I1).
    if (input.status !== 'completed') return { kind: 'stored', meta, latest: false };

    // 3. Publish.
    if (await this.publish(pk, record)) return { kind: 'stored', meta, latest: true };

    // Not published: a higher run is already latest (fine: stored, 200), or a clear fenced this run.
    const fence = await this.readFence(pk);
    if (fence && !isAfterFence(record, fence)) {
      await this.deleteRunQuietly(pk, record);
      return { kind: 'fenced' };
    }
    return { kind: 'stored', meta, latest: false };
  }

  async clear(scope: ConversationScope): Promise<{ deleted: number }> {
    const pk = conversationKey(scope);
    const ms = this.now();
    const fence: Fence = { ms, sec: Math.floor(ms / 1000) };

    // 1. Fence first: from here on hydrate answers 404 and no earlier run can publish.
    //    Fences only move forward; if a concurrent clear already set a later one, ours is subsumed by it
    //    (everything we delete below is also before that fence), so we leave HEAD alone.
    try {
      await this.ddb.send(
        new UpdateItemCommand({
          TableName: this.table,
          Key: key(pk, HEAD_SK),
          UpdateExpression:
            'SET clearedAtMs = :ms, clearedAtSec = :sec REMOVE latestRunId, latestKey, latestSha256, latestBytes, latestCreatedAtMs',
          ConditionExpression: 'attribute_not_exists(clearedAtMs) OR clearedAtMs <= :ms',
          ExpressionAttributeValues: { ':ms': n(fence.ms), ':sec': n(fence.sec) },
        }),
      );
    } catch (err) {
      if (!(err instanceof ConditionalCheckFailedException)) throw err;
    }

    // 2. Delete every run from before the fence: object first, then record. A crash in between leaves
    //    a record whose object is gone, but that record is before the fence, so it is never published;
    //    a retry deletes it. Runs after the fence belong to new runs and are left alone.
    let deleted = 0;
    let startKey: Record<string, AttributeValue> | undefined;
    do {
      const page = await this.ddb.send(
        new QueryCommand({
          TableName: this.table,
          KeyConditionExpression: 'pk = :pk AND begins_with(sk, :run)',
          ExpressionAttributeValues: { ':pk': { S: pk }, ':run': { S: RUN_SK_PREFIX } },
          ConsistentRead: true,
          ExclusiveStartKey: startKey,
        }),
      );
      startKey = page.LastEvaluatedKey;
      const doomed = (page.Items ?? []).map(fromRunItem).filter((r) => !isAfterFence(r, fence));
      const removed = await mapLimit(doomed, 8, async (r) => {
        await this.s3.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: r.s3Key }));
        return this.deleteRun(pk, r, fence);
      });
      deleted += removed.filter(Boolean).length;
    } while (startKey);

    // 3. Sweep orphans (uploads whose commit never happened) written with tokens from before the
    //    fence. Their key carries the writer's iat; such a writer can never publish after this fence,
    //    so deleting its object cannot break a future HEAD.
    await this.sweepOrphans(pk, fence);
    return { deleted };
  }

  // ---- internals -------------------------------------------------------------------------------

  /** One conditional write: succeeds only if this run is newer than the latest and after the fence. */
  private async publish(pk: string, r: RunRecord): Promise<boolean> {
    try {
      await this.ddb.send(
        new UpdateItemCommand({
          TableName: this.table,
          Key: key(pk, HEAD_SK),
          UpdateExpression:
            'SET latestRunId = :run, latestKey = :key, latestSha256 = :sha, latestBytes = :bytes, latestCreatedAtMs = :created',
          ConditionExpression:
            '(attribute_not_exists(latestRunId) OR latestRunId < :run) AND ' +
            '(attribute_not_exists(clearedAtMs) OR (clearedAtMs < :created AND clearedAtSec <= :iat))',
          ExpressionAttributeValues: {
            ':run': n(r.runId),
            ':key': { S: r.s3Key },
            ':sha': { S: r.sha256 },
            ':bytes': n(r.bytes),
            ':created': n(r.createdAtMs),
            ':iat': n(r.iat),
          },
        }),
      );
      return true;
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException) return false;
      throw err;
    }
  }

  private async rollForward(pk: string, runId: number): Promise<void> {
    const res = await this.ddb.send(new GetItemCommand({ TableName: this.table, Key: key(pk, RUN_SK_PREFIX + padRunId(runId)), ConsistentRead: true }));
    if (!res.Item) return; // deleted by a clear in the meantime
    const r = fromRunItem(res.Item);
    if (r.status === 'completed') await this.publish(pk, r);
  }

  private async readFence(pk: string): Promise<Fence | undefined> {
    const res = await this.ddb.send(
      new GetItemCommand({ TableName: this.table, Key: key(pk, HEAD_SK), ConsistentRead: true, ProjectionExpression: 'clearedAtMs, clearedAtSec' }),
    );
    const item = res.Item;
    if (!item?.['clearedAtMs']) return undefined;
    return { ms: num(item, 'clearedAtMs'), sec: num(item, 'clearedAtSec') };
  }

  /** Deletes the RUN record if it is still the one we know and still before the fence. */
  private async deleteRun(pk: string, r: RunRecord, fence: Fence): Promise<boolean> {
    try {
      const res = await this.ddb.send(
        new DeleteItemCommand({
          TableName: this.table,
          Key: key(pk, RUN_SK_PREFIX + padRunId(r.runId)),
          // A new run may have re-claimed this runId after another clear deleted the old record.
          ConditionExpression: 's3Key = :key AND (createdAtMs < :ms OR iat < :sec)',
          ExpressionAttributeValues: { ':key': { S: r.s3Key }, ':ms': n(fence.ms), ':sec': n(fence.sec) },
          ReturnValues: 'ALL_OLD',
        }),
      );
      return res.Attributes !== undefined;
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException) return false;
      throw err;
    }
  }

  /** A fenced writer removes its own claim and object; if it crashes, the next clear does it. */
  private async deleteRunQuietly(pk: string, r: RunRecord): Promise<void> {
    try {
      await this.ddb.send(
        new DeleteItemCommand({
          TableName: this.table,
          Key: key(pk, RUN_SK_PREFIX + padRunId(r.runId)),
          ConditionExpression: 's3Key = :key',
          ExpressionAttributeValues: { ':key': { S: r.s3Key } },
        }),
      );
    } catch (err) {
      if (!(err instanceof ConditionalCheckFailedException)) this.onCleanupError('delete fenced run record', err);
    }
    await this.deleteObjectQuietly(r.s3Key);
  }

  private async deleteObjectQuietly(s3Key: string): Promise<void> {
    try {
      await this.s3.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: s3Key }));
    } catch (err) {
      this.onCleanupError('delete unreferenced object', err);
    }
  }

  private async sweepOrphans(pk: string, fence: Fence): Promise<void> {
    let token: string | undefined;
    do {
      const page = await this.s3.send(
        new ListObjectsV2Command({ Bucket: this.bucket, Prefix: `${SNAPSHOT_PREFIX}${pk}/`, ContinuationToken: token }),
      );
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
      const orphans = (page.Contents ?? [])
        .map((o) => o.Key)
        .filter((k): k is string => {
          const iat = k ? KEY_FILE.exec(k)?.[1] : undefined;
          return iat !== undefined && Number(iat) < fence.sec;
        });
      await mapLimit(orphans, 8, (k) => this.s3.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: k })));
    } while (token);
  }
}

function isAfterFence(r: Pick<RunRecord, 'createdAtMs' | 'iat'>, fence: Fence): boolean {
  return r.createdAtMs > fence.ms && r.iat >= fence.sec;
}

// ---- DynamoDB item mapping ------------------------------------------------------------------------

type Item = Record<string, AttributeValue>;

function key(pk: string, sk: string): Item {
  return { pk: { S: pk }, sk: { S: sk } };
}

function n(v: number): AttributeValue {
  return { N: String(v) };
}

function str(item: Item, name: string): string {
  const v = item[name]?.S;
  if (v === undefined) throw new Error(`item attribute ${name} missing`);
  return v;
}

function num(item: Item, name: string): number {
  const v = item[name]?.N;
  if (v === undefined) throw new Error(`item attribute ${name} missing`);
  return Number(v);
}

function runItem(pk: string, r: RunRecord): Item {
  return {
    ...key(pk, RUN_SK_PREFIX + padRunId(r.runId)),
    runId: n(r.runId),
    runStatus: { S: r.status },
    s3Key: { S: r.s3Key },
    sha256: { S: r.sha256 },
    bytes: n(r.bytes),
    iat: n(r.iat),
    createdAtMs: n(r.createdAtMs),
  };
}

function fromRunItem(item: Item): RunRecord {
  return {
    runId: num(item, 'runId'),
    status: str(item, 'runStatus') as TerminalStatus,
    s3Key: str(item, 's3Key'),
    sha256: str(item, 'sha256'),
    bytes: num(item, 'bytes'),
    iat: num(item, 'iat'),
    createdAtMs: num(item, 'createdAtMs'),
  };
}

async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}
