import { createHash, randomUUID } from 'node:crypto';
import { Readable, Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { createGunzip, gunzip as gunzipCb, gzip as gzipCb } from 'node:zlib';
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
import {
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  NoSuchKey,
  NoSuchUpload,
  PutObjectCommand,
  UploadPartCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { NDJSON_CONTENT_TYPE, type TerminalStatus } from './contract.js';
import { conversationKey, padRunId, type ConversationScope } from './ids.js';

/**
 * All storage logic lives here. Handlers make exactly one call into this module.
 *
 * Data model (one DynamoDB partition per conversation, pk = conversationKey = "org/agent/conv" encoded):
 *
 *   HEAD   sk = "HEAD"         latest{RunId,Key,Sha256,Bytes,StoredBytes,Encoding,CreatedAtMs}  (what hydrate serves)
 *                              clearedAtMs, clearedAtSec                                        (the reset fence, I4)
 *   RUN    sk = "RUN#<run16>"  runStatus, s3Key, sha256, bytes, storedBytes, encoding, iat, createdAtMs  (immutable)
 *
 *   S3     snapshots/<conversationKey>/<run16>/<iat>-<uuid>.jsonl[.gz]  a fresh key per upload: never overwritten
 *          uploads/<conversationKey>/<run16>/<iat>-<uuid>               presigned uploads awaiting commit
 *
 * `sha256` and `bytes` always describe the snapshot as the worker wrote it (identity); the object may be
 * stored gzip-compressed (`encoding`, `storedBytes`).
 *
 * Write (1 S3 write + 2 conditional DynamoDB writes; every commit step is ONE conditional write, so it
 * is atomic on dynalite, which has no transactions):
 *   1. PutObject to a fresh key.                      crash here → orphan object, nothing visible; retry succeeds.
 *   2. Claim:   PutItem RUN  if attribute_not_exists  crash here → RUN claimed, HEAD not moved; a retry gets 409
 *                                                      and rolls the claim forward (step 3 with the RUN's data).
 *   3. Publish: UpdateItem HEAD if latestRunId < run AND the run is after the fence.
 * Hydrate (1 DynamoDB read + 1 S3 read): GetItem HEAD (consistent), GetObject latestKey — or, for a
 * snapshot too large for a Lambda response, a presigned GET URL instead of the read.
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
export const UPLOAD_PREFIX = 'uploads/';

const gzip = promisify(gzipCb);
const gunzip = promisify(gunzipCb);

export type Encoding = 'gzip' | 'identity';

export interface StoreLimits {
  /** Largest body (in bytes, before base64) answered inline; larger → presigned redirect. */
  inlineMaxBytes: number;
  /** Lifetime of presigned GET and upload URLs. */
  presignTtlSeconds: number;
  /** Largest snapshot (decoded bytes) accepted through a presigned upload. */
  maxUploadBytes: number;
  /** Uploads larger than this many (transfer) bytes use multipart, in parts of `partBytes`. */
  multipartThresholdBytes: number;
  partBytes: number;
}

export const DEFAULT_LIMITS: StoreLimits = Object.freeze({
  // Lambda's response payload limit is 6 MB (6,291,456 B) for the whole JSON envelope. Bodies are
  // returned base64-encoded (4/3 growth); 4 MiB of stored bytes → 5.59 MB, leaving room for headers.
  inlineMaxBytes: 4 * 1024 * 1024,
  presignTtlSeconds: 300,
  maxUploadBytes: 1024 * 1024 * 1024,
  multipartThresholdBytes: 64 * 1024 * 1024,
  partBytes: 16 * 1024 * 1024,
});

export interface StoreOptions {
  s3: S3Client;
  ddb: DynamoDBClient;
  bucket: string;
  table: string;
  limits?: Partial<StoreLimits>;
  now?: () => number;
  newId?: () => string;
  /** Best-effort cleanup failures are logged, never thrown. */
  onCleanupError?: (what: string, err: unknown) => void;
}

/** Per-call options: the request's deadline, so no AWS call outlives the API Gateway timeout. */
export interface CallOptions {
  signal?: AbortSignal;
}

export interface WriterScope extends ConversationScope {
  /** Token `iat` (seconds): orders the run against resets. */
  readonly issuedAt: number;
}

export interface SnapshotMeta {
  readonly runId: number;
  /** sha256 (hex) of the snapshot bytes as written. */
  readonly sha256: string;
  /** Length of the snapshot bytes as written. */
  readonly bytes: number;
}

export type HydrateResult =
  | { kind: 'none' }
  | { kind: 'not-modified'; meta: SnapshotMeta }
  | { kind: 'body'; meta: SnapshotMeta; body: Buffer; encoding: Encoding }
  | { kind: 'redirect'; meta: SnapshotMeta; url: string; encoding: Encoding }
  /** Too large to return inline, stored gzip, and the client refuses gzip. */
  | { kind: 'not-acceptable'; meta: SnapshotMeta };

export type WriteResult =
  | { kind: 'stored'; meta: SnapshotMeta; latest: boolean }
  | { kind: 'duplicate' }
  | { kind: 'fenced' }
  | { kind: 'upload-not-found' }
  | { kind: 'upload-invalid'; reason: string }
  | { kind: 'upload-too-large' };

/** What a client may accept: `gzip`, identity only, or anything (no Accept-Encoding header, RFC 9110 §12.5.3). */
export type Acceptable = 'gzip' | 'identity' | 'any';

export interface UploadTicket {
  /** Opaque: echo it back in the commit. Binds scope-independent details only; keys come from the token. */
  uploadId: string;
  expiresAt: string;
  encoding: Encoding;
  /** Single PUT … */
  url?: string;
  /** … or multipart: PUT each part, collect the ETag response headers, send them with the commit. */
  partBytes?: number;
  parts?: { partNumber: number; url: string }[];
}

export interface UploadCommit {
  runId: number;
  status: TerminalStatus;
  uploadId: string;
  parts?: { partNumber: number; etag: string }[] | undefined;
}

export class IntegrityError extends Error {
  override name = 'IntegrityError';
}

class UploadTooLarge extends Error {}

interface RunRecord extends SnapshotMeta {
  readonly status: TerminalStatus;
  readonly s3Key: string;
  readonly encoding: Encoding;
  readonly storedBytes: number;
  readonly iat: number;
  readonly createdAtMs: number;
}

interface Fence {
  readonly ms: number;
  readonly sec: number;
}

interface UploadRef {
  /** uuid */ u: string;
  /** encoding */ e: Encoding;
  /** iat of the token that created it */ i: number;
  /** S3 multipart UploadId, when multipart */ m?: string;
}

export function sha256Hex(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Strong or weak forms of our tag, or `*`. Only the opaque tag is compared. */
export function etagMatches(ifNoneMatch: string | undefined, sha256: string): boolean {
  if (!ifNoneMatch) return false;
  return ifNoneMatch.split(',').some((t) => {
    const tag = t.trim().replace(/^W\//, '');
    return tag === '*' || tag === `"${sha256}"`;
  });
}

/** Reads an Accept-Encoding header (RFC 9110 §12.5.3). */
export function acceptable(acceptEncoding: string | undefined): Acceptable {
  if (acceptEncoding === undefined) return 'any';
  let gzipQ: number | undefined;
  let starQ: number | undefined;
  for (const part of acceptEncoding.split(',')) {
    const [name, ...params] = part.trim().toLowerCase().split(';');
    const qParam = params.map((p) => p.trim()).find((p) => p.startsWith('q='));
    const q = qParam ? Number(qParam.slice(2)) : 1;
    if (name === 'gzip' || name === 'x-gzip') gzipQ = Number.isFinite(q) ? q : 0;
    if (name === '*') starQ = Number.isFinite(q) ? q : 0;
  }
  const q = gzipQ ?? starQ ?? 0;
  return q > 0 ? 'gzip' : 'identity';
}

/** Partition of the reconciler's own bookkeeping; contains no `/`, so it can never be a conversation key. */
export const RECONCILER_PK = '~reconciler';
/** `snapshots/<org>/<agent>/<conv>/<run16>/<file>` → conversation key, run16. */
const SNAPSHOT_KEY = /^snapshots\/([^/]+\/[^/]+\/[^/]+)\/(\d{16})\/[^/]+$/;

export interface ReconcileResult {
  /** Objects listed in this run. */
  scanned: number;
  /** Unreferenced objects past the grace period, deleted. */
  deleted: number;
  /** True when the pass reached the end of `snapshots/` (the next run starts from the beginning). */
  complete: boolean;
  cursor: string | undefined;
}

const KEY_FILE = /\/(\d+)-[0-9a-f-]+(?:\.jsonl(?:\.gz)?)?$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export class SnapshotStore {
  private readonly s3: S3Client;
  private readonly ddb: DynamoDBClient;
  private readonly bucket: string;
  private readonly table: string;
  readonly limits: StoreLimits;
  private readonly now: () => number;
  private readonly newId: () => string;
  private readonly onCleanupError: (what: string, err: unknown) => void;

  constructor(opts: StoreOptions) {
    this.s3 = opts.s3;
    this.ddb = opts.ddb;
    this.bucket = opts.bucket;
    this.table = opts.table;
    this.limits = { ...DEFAULT_LIMITS, ...opts.limits };
    this.now = opts.now ?? Date.now;
    this.newId = opts.newId ?? randomUUID;
    this.onCleanupError = opts.onCleanupError ?? (() => {});
  }

  // ---- hydrate ---------------------------------------------------------------------------------

  async hydrate(
    scope: ConversationScope,
    opts: CallOptions & { ifNoneMatch?: string | undefined; accept?: Acceptable } = {},
  ): Promise<HydrateResult> {
    const pk = conversationKey(scope);
    const head = await this.ddb.send(
      new GetItemCommand({
        TableName: this.table,
        Key: key(pk, HEAD_SK),
        ConsistentRead: true, // the next run may be on another pod right after the write
        ProjectionExpression: 'latestRunId, latestKey, latestSha256, latestBytes, latestStoredBytes, latestEncoding',
      }),
      { abortSignal: opts.signal },
    );
    const item = head.Item;
    if (!item?.['latestRunId']) return { kind: 'none' };
    const meta: SnapshotMeta = { runId: num(item, 'latestRunId'), sha256: str(item, 'latestSha256'), bytes: num(item, 'latestBytes') };
    if (etagMatches(opts.ifNoneMatch, meta.sha256)) return { kind: 'not-modified', meta };

    const s3Key = str(item, 'latestKey');
    const stored: Encoding = item['latestEncoding']?.S === 'gzip' ? 'gzip' : 'identity';
    const storedBytes = item['latestStoredBytes'] ? num(item, 'latestStoredBytes') : meta.bytes;
    const accept = opts.accept ?? 'any';
    // Inline, gzip goes only to clients that asked for it (a bare `curl` sends no Accept-Encoding and
    // expects text). Past the inline limit, S3 serves the stored encoding, which RFC 9110 allows for a
    // client that sent no Accept-Encoding; only an explicit refusal gets 406.
    const sendGzip = stored === 'gzip' && accept === 'gzip';
    const inlineBytes = stored === 'gzip' && !sendGzip ? meta.bytes : storedBytes;
    if (inlineBytes > this.limits.inlineMaxBytes) {
      // Too large for a Lambda response: hand out a short-lived URL to the object itself.
      if (stored === 'gzip' && accept === 'identity') return { kind: 'not-acceptable', meta };
      const url = await getSignedUrl(this.s3, new GetObjectCommand({ Bucket: this.bucket, Key: s3Key }), {
        expiresIn: this.limits.presignTtlSeconds,
      });
      return { kind: 'redirect', meta, url, encoding: stored };
    }

    let raw: Buffer;
    try {
      const obj = await this.s3.send(new GetObjectCommand({ Bucket: this.bucket, Key: s3Key }), { abortSignal: opts.signal });
      raw = Buffer.from(await obj.Body!.transformToByteArray());
    } catch (err) {
      // Race, not corruption: a clear fenced HEAD and deleted the object between our two reads.
      // Answering 404 is what the reader would have seen had it arrived just after the clear.
      if (err instanceof NoSuchKey) return { kind: 'none' };
      throw err;
    }
    // Never serve a partial or foreign body (I1): the bytes must be the ones that were committed.
    if (sendGzip) {
      // Sent as stored, so checked by streaming it through gunzip into the hash: its decoded size is
      // bounded by maxUploadBytes, not by the inline limit, and must never be held in memory.
      const decoded = await streamDigest(Readable.from([raw]), {
        gunzip: true,
        limit: meta.bytes,
        overLimit: () => new IntegrityError('stored object decodes to more bytes than its record'),
      });
      if (decoded.bytes !== meta.bytes || decoded.sha256 !== meta.sha256) {
        throw new IntegrityError(`stored object for run ${meta.runId} does not match its record`);
      }
      return { kind: 'body', meta, body: raw, encoding: 'gzip' };
    }
    // Bounded by the recorded size: a corrupt object must not inflate without limit (it fails the check).
    const plain = stored === 'gzip' ? await gunzip(raw, { maxOutputLength: meta.bytes + 1 }) : raw;
    if (plain.length !== meta.bytes || sha256Hex(plain) !== meta.sha256) {
      throw new IntegrityError(`stored object for run ${meta.runId} does not match its record`);
    }
    return { kind: 'body', meta, body: plain, encoding: 'identity' };
  }

  // ---- write (direct) --------------------------------------------------------------------------

  async write(scope: WriterScope, input: { runId: number; status: TerminalStatus; body: Buffer }, opts: CallOptions = {}): Promise<WriteResult> {
    const pk = conversationKey(scope);
    const meta: SnapshotMeta = { runId: input.runId, sha256: sha256Hex(input.body), bytes: input.body.length };
    const compressed = await gzip(input.body);
    const s3Key = this.snapshotKey(pk, input.runId, scope.issuedAt);

    // 1. Upload first: nothing refers to this key yet, and no other writer will ever use it.
    await this.s3.send(
      new PutObjectCommand({
        Bucket: this.bucket,
        Key: s3Key,
        Body: compressed,
        ContentLength: compressed.length,
        ContentType: NDJSON_CONTENT_TYPE,
        ContentEncoding: 'gzip',
        Metadata: { sha256: meta.sha256 },
      }),
      { abortSignal: opts.signal },
    );
    const record: Omit<RunRecord, 'createdAtMs'> = {
      ...meta,
      status: input.status,
      s3Key,
      encoding: 'gzip',
      storedBytes: compressed.length,
      iat: scope.issuedAt,
    };
    return this.commit(pk, record, opts);
  }

  // ---- write (presigned upload, for snapshots past the Lambda payload limit) ---------------------

  async createUpload(
    scope: WriterScope,
    input: { runId: number; bytes: number; encoding: Encoding },
    opts: CallOptions = {},
  ): Promise<UploadTicket> {
    const pk = conversationKey(scope);
    const ref: UploadRef = { u: this.newId(), e: input.encoding, i: scope.issuedAt };
    const uploadKey = this.uploadKey(pk, input.runId, ref);
    const expiresIn = this.limits.presignTtlSeconds;
    const expiresAt = new Date(this.now() + expiresIn * 1000).toISOString();

    if (input.bytes <= this.limits.multipartThresholdBytes) {
      const url = await getSignedUrl(this.s3, new PutObjectCommand({ Bucket: this.bucket, Key: uploadKey }), { expiresIn });
      return { uploadId: encodeRef(ref), expiresAt, encoding: input.encoding, url };
    }
    const mpu = await this.s3.send(new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: uploadKey }), { abortSignal: opts.signal });
    ref.m = mpu.UploadId!;
    const count = Math.ceil(input.bytes / this.limits.partBytes);
    const parts = await Promise.all(
      Array.from({ length: count }, async (_, i) => ({
        partNumber: i + 1,
        url: await getSignedUrl(
          this.s3,
          new UploadPartCommand({ Bucket: this.bucket, Key: uploadKey, UploadId: ref.m, PartNumber: i + 1 }),
          { expiresIn },
        ),
      })),
    );
    return { uploadId: encodeRef(ref), expiresAt, encoding: input.encoding, partBytes: this.limits.partBytes, parts };
  }

  /**
   * Commits an upload: measures what actually landed (never the client's claim), copies it to an
   * immutable snapshot key, then claims and publishes exactly like a direct write.
   *   crash after CopyObject → orphan copy (swept by clear); retry re-verifies and converges.
   *   crash after publish, before the upload is deleted → a retry answers 409 (committed), upload expires.
   */
  async commitUpload(scope: WriterScope, input: UploadCommit, opts: CallOptions = {}): Promise<WriteResult> {
    const pk = conversationKey(scope);
    const ref = decodeRef(input.uploadId);
    if (!ref) return { kind: 'upload-not-found' };
    const uploadKey = this.uploadKey(pk, input.runId, ref);

    if (ref.m) {
      if (!input.parts?.length) return { kind: 'upload-invalid', reason: 'parts are required for a multipart upload' };
      try {
        await this.s3.send(
          new CompleteMultipartUploadCommand({
            Bucket: this.bucket,
            Key: uploadKey,
            UploadId: ref.m,
            MultipartUpload: { Parts: [...input.parts].sort((a, b) => a.partNumber - b.partNumber).map((p) => ({ PartNumber: p.partNumber, ETag: p.etag })) },
          }),
          { abortSignal: opts.signal },
        );
      } catch (err) {
        const name = (err as { name?: string }).name ?? '';
        // Wrong or missing part ETags, parts below the S3 minimum: the client's upload is unusable.
        if (['InvalidPart', 'InvalidPartOrder', 'EntityTooSmall'].includes(name)) return { kind: 'upload-invalid', reason: name };
        // NoSuchUpload: completed by an earlier attempt of this commit (the object is there — carry on),
        // or never started/expired (measure() then finds no object: upload-not-found).
        if (!(err instanceof NoSuchUpload)) throw err;
      }
    }

    let measured: { sha256: string; bytes: number; storedBytes: number };
    try {
      measured = await this.measure(uploadKey, ref.e, opts.signal);
    } catch (err) {
      if (err instanceof NoSuchKey) {
        // Gone: never uploaded, expired, swept by a clear — or committed and cleaned up by an earlier
        // attempt of this very request whose answer was lost. The latter must read as "already exists".
        return (await this.readRun(pk, input.runId, opts.signal)) ? { kind: 'duplicate' } : { kind: 'upload-not-found' };
      }
      if (err instanceof UploadTooLarge) return { kind: 'upload-too-large' };
      if ((err as { code?: string }).code?.startsWith('Z_')) return { kind: 'upload-invalid', reason: 'not valid gzip' };
      throw err;
    }
    if (measured.bytes === 0) return { kind: 'upload-invalid', reason: 'empty snapshot' };

    const s3Key = this.snapshotKey(pk, input.runId, scope.issuedAt, ref.e);
    await this.s3.send(
      new CopyObjectCommand({
        Bucket: this.bucket,
        Key: s3Key,
        CopySource: `${this.bucket}/${encodeURIComponent(uploadKey).replaceAll('%2F', '/')}`,
        MetadataDirective: 'REPLACE',
        ContentType: NDJSON_CONTENT_TYPE,
        ...(ref.e === 'gzip' && { ContentEncoding: 'gzip' }),
        Metadata: { sha256: measured.sha256 },
      }),
      { abortSignal: opts.signal },
    );
    const result = await this.commit(
      pk,
      {
        runId: input.runId,
        sha256: measured.sha256,
        bytes: measured.bytes,
        status: input.status,
        s3Key,
        encoding: ref.e,
        storedBytes: measured.storedBytes,
        iat: scope.issuedAt,
      },
      opts,
    );
    // Stored, duplicate or fenced: either way this upload will never be committed again.
    await this.deleteObjectQuietly(uploadKey, opts.signal);
    return result;
  }

  // ---- clear -----------------------------------------------------------------------------------

  async clear(scope: ConversationScope, opts: CallOptions = {}): Promise<{ deleted: number }> {
    const pk = conversationKey(scope);
    const ms = this.now();
    const fence: Fence = { ms, sec: Math.floor(ms / 1000) };
    const abortSignal = opts.signal;

    // 1. Fence first: from here on hydrate answers 404 and no earlier run can publish.
    //    Fences only move forward; if a concurrent clear already set a later one, ours is subsumed by it
    //    (everything we delete below is also before that fence), so we leave HEAD alone.
    try {
      await this.ddb.send(
        new UpdateItemCommand({
          TableName: this.table,
          Key: key(pk, HEAD_SK),
          UpdateExpression:
            'SET clearedAtMs = :ms, clearedAtSec = :sec ' +
            'REMOVE latestRunId, latestKey, latestSha256, latestBytes, latestStoredBytes, latestEncoding, latestCreatedAtMs',
          ConditionExpression: 'attribute_not_exists(clearedAtMs) OR clearedAtMs <= :ms',
          ExpressionAttributeValues: { ':ms': n(fence.ms), ':sec': n(fence.sec) },
        }),
        { abortSignal },
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
        { abortSignal },
      );
      startKey = page.LastEvaluatedKey;
      const doomed = (page.Items ?? []).map(fromRunItem).filter((r) => !isAfterFence(r, fence));
      const removed = await mapLimit(doomed, 8, async (r) => {
        await this.s3.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: r.s3Key }), { abortSignal });
        return this.deleteRun(pk, r, fence, abortSignal);
      });
      deleted += removed.filter(Boolean).length;
    } while (startKey);

    // 3. Sweep objects no record points to — uploads never committed, writers that crashed before their
    //    claim — written with tokens from before the fence. Their key carries the writer's iat; such a
    //    writer can never publish after this fence, so deleting its object cannot break a future HEAD.
    await this.sweep(`${SNAPSHOT_PREFIX}${pk}/`, fence, abortSignal);
    await this.sweep(`${UPLOAD_PREFIX}${pk}/`, fence, abortSignal);
    return { deleted };
  }

  // ---- reconcile (scheduled) -------------------------------------------------------------------

  /**
   * Deletes snapshot objects that no RUN record refers to: uploads whose commit never happened (the
   * writer died between PutObject and its claim), or a losing duplicate whose own cleanup failed.
   * Walks `snapshots/` in key order from a cursor kept in DynamoDB, so successive runs cover any
   * bucket size; stops at `deadlineAt` or after `maxKeys` and saves where it stopped.
   *
   * Why deleting is safe: an object is only a candidate when it is older than `graceSeconds` (at
   * least 15 min, longer than any request can live), so its writer has finished: if it was ever going
   * to claim the run, the claim exists now. A RUN record is immutable and HEAD only ever points at a
   * RUN's key, so "no RUN record with this key" means nothing refers to the object or ever will.
   */
  async reconcile(opts: { graceSeconds: number; deadlineAt: number; maxKeys?: number; signal?: AbortSignal }): Promise<ReconcileResult> {
    const abortSignal = opts.signal;
    const cursorKey = key(RECONCILER_PK, 'CURSOR');
    const saved = await this.ddb.send(new GetItemCommand({ TableName: this.table, Key: cursorKey, ConsistentRead: true }), { abortSignal });
    let startAfter = saved.Item?.['startAfter']?.S;
    const resumedFrom = startAfter;
    const cutoff = this.now() - opts.graceSeconds * 1000;
    const maxKeys = opts.maxKeys ?? Number.POSITIVE_INFINITY;
    const result = { scanned: 0, deleted: 0 };
    let done = false;

    // The deadline is an execution budget (real time); `now()` only dates objects against the grace.
    while (!done && result.scanned < maxKeys && Date.now() < opts.deadlineAt) {
      const page = await this.s3.send(
        new ListObjectsV2Command({
          Bucket: this.bucket,
          Prefix: SNAPSHOT_PREFIX,
          MaxKeys: Math.min(1000, maxKeys - result.scanned),
          ...(startAfter !== undefined && { StartAfter: startAfter }),
        }),
        { abortSignal },
      );
      const objects = page.Contents ?? [];
      const candidates = objects.filter((o) => o.Key && o.LastModified && o.LastModified.getTime() < cutoff);
      const deletedFlags = await mapLimit(candidates, 8, async (o) => {
        const parsed = SNAPSHOT_KEY.exec(o.Key!);
        if (!parsed) return false; // never delete what we do not understand
        const run = await this.ddb.send(
          new GetItemCommand({
            TableName: this.table,
            Key: key(parsed[1]!, RUN_SK_PREFIX + parsed[2]!),
            ConsistentRead: true,
            ProjectionExpression: 's3Key',
          }),
          { abortSignal },
        );
        if (run.Item?.['s3Key']?.S === o.Key) return false;
        await this.s3.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: o.Key! }), { abortSignal });
        return true;
      });
      result.scanned += objects.length;
      result.deleted += deletedFlags.filter(Boolean).length;
      if (objects.length > 0) startAfter = objects[objects.length - 1]!.Key;
      done = !page.IsTruncated;
    }

    // Save progress; a finished pass starts over from the beginning next time.
    if (done) {
      if (resumedFrom !== undefined) await this.ddb.send(new DeleteItemCommand({ TableName: this.table, Key: cursorKey }), { abortSignal });
    } else if (startAfter !== undefined) {
      await this.ddb.send(new PutItemCommand({ TableName: this.table, Item: { ...cursorKey, startAfter: { S: startAfter } } }), { abortSignal });
    }
    return { ...result, complete: done, cursor: done ? undefined : startAfter };
  }

  // ---- internals -------------------------------------------------------------------------------

  private snapshotKey(pk: string, runId: number, iat: number, encoding: Encoding = 'gzip'): string {
    return `${SNAPSHOT_PREFIX}${pk}/${padRunId(runId)}/${iat}-${this.newId()}.jsonl${encoding === 'gzip' ? '.gz' : ''}`;
  }

  private uploadKey(pk: string, runId: number, ref: UploadRef): string {
    return `${UPLOAD_PREFIX}${pk}/${padRunId(runId)}/${ref.i}-${ref.u}`;
  }

  /** Claim, then publish (steps 2 and 3 of the write protocol at the top of this file). */
  private async commit(pk: string, fields: Omit<RunRecord, 'createdAtMs'>, opts: CallOptions): Promise<WriteResult> {
    let record: RunRecord = { ...fields, createdAtMs: this.now() };
    const meta: SnapshotMeta = { runId: record.runId, sha256: record.sha256, bytes: record.bytes };

    // 2. Claim the run. Exactly one writer per (conversation, run) gets past this line (I5).
    try {
      await this.ddb.send(
        new PutItemCommand({
          TableName: this.table,
          Item: runItem(pk, record),
          ConditionExpression: 'attribute_not_exists(pk)',
          // DynamoDB returns the conflicting item with the failure (saves a read); dynalite ignores
          // this, so the read below remains the fallback.
          ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
        }),
        { abortSignal: opts.signal },
      );
    } catch (err) {
      if (!(err instanceof ConditionalCheckFailedException)) throw err;
      const existing = err.Item ? fromRunItem(err.Item) : await this.readRun(pk, record.runId, opts.signal);
      if (existing?.s3Key !== record.s3Key) {
        // Someone claimed this run first — a concurrent duplicate, or this same request's earlier attempt
        // that died before publishing. Finish that commit (idempotent), so a retry always converges (I3).
        if (existing?.status === 'completed') await this.publish(pk, existing, opts.signal);
        await this.deleteObjectQuietly(record.s3Key, opts.signal);
        return { kind: 'duplicate' };
      }
      // The claim is our own: its response was lost (connection reset) and the SDK retried the PutItem,
      // whose condition then failed against our first attempt. s3Key is unique to this request, so this
      // is certain. Deleting "our duplicate" object here would delete the committed snapshot.
      record = existing;
    }

    // Non-completed runs are kept for the record but never published, so never served (I1).
    if (record.status !== 'completed') return { kind: 'stored', meta, latest: false };

    // 3. Publish.
    const published = await this.publish(pk, record, opts.signal);
    if (published === true) return { kind: 'stored', meta, latest: true };

    // Not published: a higher run is already latest (fine: stored, 200), or a clear fenced this run, or
    // our own publish landed and the SDK retried it after a lost response (HEAD already names our key).
    // DynamoDB hands back the HEAD that failed the condition; on dynalite we read it.
    const head = published.head ? parseHead(published.head) : await this.readHead(pk, opts.signal);
    if (head.latestKey === record.s3Key) return { kind: 'stored', meta, latest: true };
    if (head.fence && !isAfterFence(record, head.fence)) {
      await this.deleteRunQuietly(pk, record, opts.signal);
      return { kind: 'fenced' };
    }
    return { kind: 'stored', meta, latest: false };
  }

  /**
   * One conditional write: succeeds only if this run is newer than the latest and after the fence.
   * On failure, the HEAD item that failed the condition when the service returns it (DynamoDB does).
   */
  private async publish(pk: string, r: RunRecord, abortSignal?: AbortSignal): Promise<true | { head: Item | undefined }> {
    try {
      await this.ddb.send(
        new UpdateItemCommand({
          TableName: this.table,
          Key: key(pk, HEAD_SK),
          UpdateExpression:
            'SET latestRunId = :run, latestKey = :key, latestSha256 = :sha, latestBytes = :bytes, ' +
            'latestStoredBytes = :stored, latestEncoding = :enc, latestCreatedAtMs = :created',
          ConditionExpression:
            '(attribute_not_exists(latestRunId) OR latestRunId < :run) AND ' +
            '(attribute_not_exists(clearedAtMs) OR (clearedAtMs < :created AND clearedAtSec <= :iat))',
          ExpressionAttributeValues: {
            ':run': n(r.runId),
            ':key': { S: r.s3Key },
            ':sha': { S: r.sha256 },
            ':bytes': n(r.bytes),
            ':stored': n(r.storedBytes),
            ':enc': { S: r.encoding },
            ':created': n(r.createdAtMs),
            ':iat': n(r.iat),
          },
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

  /** The RUN record, or undefined if a clear deleted it in the meantime. */
  private async readRun(pk: string, runId: number, abortSignal?: AbortSignal): Promise<RunRecord | undefined> {
    const res = await this.ddb.send(
      new GetItemCommand({ TableName: this.table, Key: key(pk, RUN_SK_PREFIX + padRunId(runId)), ConsistentRead: true }),
      { abortSignal },
    );
    return res.Item ? fromRunItem(res.Item) : undefined;
  }

  private async readHead(pk: string, abortSignal?: AbortSignal): Promise<HeadView> {
    const res = await this.ddb.send(
      new GetItemCommand({
        TableName: this.table,
        Key: key(pk, HEAD_SK),
        ConsistentRead: true,
        ProjectionExpression: 'clearedAtMs, clearedAtSec, latestKey',
      }),
      { abortSignal },
    );
    return parseHead(res.Item);
  }

  /** Streams an uploaded object through gunzip (if gzip) and sha256: memory stays flat at any size. */
  private async measure(uploadKey: string, encoding: Encoding, signal?: AbortSignal): Promise<{ sha256: string; bytes: number; storedBytes: number }> {
    const obj = await this.s3.send(new GetObjectCommand({ Bucket: this.bucket, Key: uploadKey }), { abortSignal: signal });
    return streamDigest(obj.Body as Readable, {
      gunzip: encoding === 'gzip',
      limit: this.limits.maxUploadBytes,
      overLimit: () => new UploadTooLarge(),
      ...(signal && { signal }),
    });
  }

  /** Deletes the RUN record if it is still the one we know and still before the fence. */
  private async deleteRun(pk: string, r: RunRecord, fence: Fence, abortSignal?: AbortSignal): Promise<boolean> {
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
        { abortSignal },
      );
      return res.Attributes !== undefined;
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException) return false;
      throw err;
    }
  }

  /** A fenced writer removes its own claim and object; if it crashes, the next clear does it. */
  private async deleteRunQuietly(pk: string, r: RunRecord, abortSignal?: AbortSignal): Promise<void> {
    try {
      await this.ddb.send(
        new DeleteItemCommand({
          TableName: this.table,
          Key: key(pk, RUN_SK_PREFIX + padRunId(r.runId)),
          ConditionExpression: 's3Key = :key',
          ExpressionAttributeValues: { ':key': { S: r.s3Key } },
        }),
        { abortSignal },
      );
    } catch (err) {
      if (!(err instanceof ConditionalCheckFailedException)) this.onCleanupError('delete fenced run record', err);
    }
    await this.deleteObjectQuietly(r.s3Key, abortSignal);
  }

  /** Best effort, but still bound by the request deadline: a stalled cleanup must not hold the answer. */
  private async deleteObjectQuietly(s3Key: string, abortSignal?: AbortSignal): Promise<void> {
    try {
      await this.s3.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: s3Key }), { abortSignal });
    } catch (err) {
      this.onCleanupError('delete unreferenced object', err);
    }
  }

  private async sweep(prefix: string, fence: Fence, abortSignal?: AbortSignal): Promise<void> {
    let token: string | undefined;
    do {
      const page = await this.s3.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ContinuationToken: token }), { abortSignal });
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
      const orphans = (page.Contents ?? [])
        .map((o) => o.Key)
        .filter((k): k is string => {
          const iat = k ? KEY_FILE.exec(k)?.[1] : undefined;
          return iat !== undefined && Number(iat) < fence.sec;
        });
      await mapLimit(orphans, 8, (k) => this.s3.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: k }), { abortSignal }));
    } while (token);
  }
}

/**
 * sha256 and length of a stream's bytes — gunzipped first when asked — without holding them: the
 * memory stays flat at any size. Fails with `overLimit()` past `limit` decoded bytes.
 * `storedBytes` counts the bytes as read from the source (before gunzip).
 */
async function streamDigest(
  source: Readable,
  opts: { gunzip: boolean; limit: number; overLimit: () => Error; signal?: AbortSignal },
): Promise<{ sha256: string; bytes: number; storedBytes: number }> {
  const hash = createHash('sha256');
  let bytes = 0;
  let storedBytes = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _enc, done) {
      storedBytes += chunk.length;
      done(null, chunk);
    },
  });
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      bytes += chunk.length;
      if (bytes > opts.limit) return done(opts.overLimit());
      hash.update(chunk);
      done();
    },
  });
  const stages = opts.gunzip ? [counter, createGunzip()] : [counter];
  await pipeline([source, ...stages, sink], opts.signal ? { signal: opts.signal } : {});
  return { sha256: hash.digest('hex'), bytes, storedBytes };
}

interface HeadView {
  fence: Fence | undefined;
  latestKey: string | undefined;
}

function parseHead(item: Item | undefined): HeadView {
  const latestKey = item?.['latestKey']?.S;
  if (!item?.['clearedAtMs']) return { fence: undefined, latestKey };
  return { fence: { ms: num(item, 'clearedAtMs'), sec: num(item, 'clearedAtSec') }, latestKey };
}

function isAfterFence(r: Pick<RunRecord, 'createdAtMs' | 'iat'>, fence: Fence): boolean {
  return r.createdAtMs > fence.ms && r.iat >= fence.sec;
}

function encodeRef(ref: UploadRef): string {
  return Buffer.from(JSON.stringify(ref), 'utf8').toString('base64url');
}

/** Parses an uploadId strictly. It only names parts of a key under the caller's own scope and run. */
function decodeRef(uploadId: string): UploadRef | undefined {
  try {
    const v = JSON.parse(Buffer.from(uploadId, 'base64url').toString('utf8')) as Partial<UploadRef>;
    if (typeof v.u !== 'string' || !UUID.test(v.u)) return undefined;
    if (v.e !== 'gzip' && v.e !== 'identity') return undefined;
    if (typeof v.i !== 'number' || !Number.isSafeInteger(v.i) || v.i < 0) return undefined;
    if (v.m !== undefined && (typeof v.m !== 'string' || v.m.length === 0 || v.m.length > 1024)) return undefined;
    return { u: v.u, e: v.e, i: v.i, ...(v.m !== undefined && { m: v.m }) };
  } catch {
    return undefined;
  }
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
    storedBytes: n(r.storedBytes),
    encoding: { S: r.encoding },
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
    storedBytes: item['storedBytes'] ? num(item, 'storedBytes') : num(item, 'bytes'),
    encoding: item['encoding']?.S === 'gzip' ? 'gzip' : 'identity',
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
