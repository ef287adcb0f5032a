import type { Readable } from 'node:stream';
import {
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  NoSuchKey,
  NoSuchUpload,
  PutObjectCommand,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { NDJSON_CONTENT_TYPE, type TerminalStatus } from '../contract.js';
import { conversationKey } from '../ids.js';
import type { CallOptions, StoreContext } from './context.js';
import { streamDigest, type StreamDigest } from './digest.js';
import { isStoreError } from './errors.js';
import { snapshotObjectKey, uploadObjectKey, type Encoding, type HeadRecord } from './schema.js';
import { admit, commitRun, deleteObjectQuietly, readRun, settleRegistration, type RunEvidence, type WriteResult, type WriterScope } from './write.js';

/**
 * Presigned uploads, for snapshots past the direct-POST limit:
 *   create:  hand out a presigned PUT (or multipart part URLs) under uploads/ — no record is written.
 *   commit:  complete the multipart upload (every part handed out), copy it to an immutable snapshot key,
 *            measure the COPY (never the client's claim; its stored size must equal the announced one),
 *            then claim and publish exactly like a direct write.
 *     crash after CopyObject → orphan copy (swept by clear / the reconciler); a retry re-verifies and converges.
 *     crash after publish, before the upload is deleted → a retry answers 409 (committed); the upload expires.
 */

export interface UploadTicket {
  /** Opaque: echo it back in the commit. Binds scope-independent details only; keys come from the token. */
  uploadId: string;
  /** ISO 8601 time after which the URLs no longer work. */
  expiresAt: string;
  encoding: Encoding;
  /** Single PUT … */
  url?: string;
  /** … or multipart: PUT each part, collect the ETag response headers, send them with the commit. */
  partBytes?: number;
  parts?: { partNumber: number; url: string }[];
}

export interface UploadRequest {
  readonly runId: number;
  /** Bytes the client will transfer (the compressed size when gzip). */
  readonly bytes: number;
  readonly encoding: Encoding;
}

export interface UploadCommit {
  readonly runId: number;
  readonly status: TerminalStatus;
  readonly uploadId: string;
  readonly parts?: readonly { partNumber: number; etag: string }[] | undefined;
}

/**
 * What an uploadId carries, signed by the service (upload-id.ts): the announced size and part count
 * cannot be changed after the URLs were handed out. Every field is also part of the upload's S3 key.
 */
interface UploadRef {
  /** uuid */ u: string;
  /** encoding */ e: Encoding;
  /** tag: the writer's generation ("g<n>") or, when it sent none, its token iat */ t: string;
  /** announced transfer bytes */ b: number;
  /** number of parts handed out (multipart only) */ n?: number;
  /** S3 multipart UploadId, when multipart */ m?: string;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const TAG = /^g?\d{1,16}$/;
/** S3 errors of CompleteMultipartUpload that mean the client's parts are unusable (400, not 5xx). */
const INVALID_PARTS = new Set(['InvalidPart', 'InvalidPartOrder', 'EntityTooSmall']);

/** What the ticket's tag says about when its run started. */
function evidenceOf(ref: UploadRef, scope: WriterScope): RunEvidence {
  if (ref.t.startsWith('g')) return { generation: Number(ref.t.slice(1)), issuedAt: scope.issuedAt };
  return { issuedAt: Math.min(Number(ref.t), scope.issuedAt) };
}

function isNoSuchKey(err: unknown): boolean {
  return err instanceof NoSuchKey || (err as { name?: string }).name === 'NoSuchKey';
}

function tagOf(scope: WriterScope): string {
  return scope.generation !== undefined ? `g${scope.generation}` : String(scope.issuedAt);
}

/** `uploads/<conversationKey>/<run16>/<tag>-<uuid>.<encoding>.<bytes>[.<parts>]`: every detail of the ticket. */
function uploadKey(pk: string, runId: number, ref: UploadRef): string {
  const tag = ref.t.startsWith('g') ? { generation: Number(ref.t.slice(1)) } : { iat: Number(ref.t) };
  return uploadObjectKey(pk, runId, tag, `${ref.u}.${ref.e}.${ref.b}${ref.n !== undefined ? `.${ref.n}` : ''}`);
}

/** Presigned PUT URL(s) for a snapshot of `input.bytes` transfer bytes. Throws SDK errors. */
export async function createUpload(ctx: StoreContext, scope: WriterScope, input: UploadRequest, opts: CallOptions = {}): Promise<UploadTicket> {
  const pk = conversationKey(scope);
  const expiresIn = ctx.limits.presignTtlSeconds;
  const expiresAt = new Date(ctx.now() + expiresIn * 1000).toISOString();
  const base: UploadRef = { u: ctx.newId(), e: input.encoding, t: tagOf(scope), b: input.bytes };

  if (input.bytes <= ctx.limits.multipartThresholdBytes) {
    const url = await getSignedUrl(ctx.presigner, new PutObjectCommand({ Bucket: ctx.bucket, Key: uploadKey(pk, input.runId, base) }), { expiresIn });
    return { uploadId: await ctx.uploadIds.seal(base), expiresAt, encoding: input.encoding, url };
  }
  const count = Math.ceil(input.bytes / ctx.limits.partBytes);
  const ref: UploadRef = { ...base, n: count };
  const key = uploadKey(pk, input.runId, ref);
  const mpu = await ctx.s3.send(new CreateMultipartUploadCommand({ Bucket: ctx.bucket, Key: key }), { abortSignal: opts.signal });
  ref.m = mpu.UploadId!;
  const parts = await Promise.all(
    Array.from({ length: count }, async (_, i) => ({
      partNumber: i + 1,
      url: await getSignedUrl(ctx.presigner, new UploadPartCommand({ Bucket: ctx.bucket, Key: key, UploadId: ref.m, PartNumber: i + 1 }), { expiresIn }),
    })),
  );
  return { uploadId: await ctx.uploadIds.seal(ref), expiresAt, encoding: input.encoding, partBytes: ctx.limits.partBytes, parts };
}

/**
 * Commits an upload (see the protocol above). The recorded size and sha256 are those of the bytes under
 * snapshots/, measured AFTER the copy: a second PUT to the still-valid presigned URL cannot make them
 * differ. Returns the write outcome; throws SDK errors.
 */
export async function commitUpload(ctx: StoreContext, scope: WriterScope, input: UploadCommit, opts: CallOptions = {}): Promise<WriteResult> {
  const pk = conversationKey(scope);
  const ref = parseRef(await ctx.uploadIds.open(input.uploadId));
  if (!ref) return { kind: 'upload-not-found' };
  const source = uploadKey(pk, input.runId, ref);
  // Already committed (an earlier attempt whose answer was lost, or another writer): converge on 409.
  const committed = async () => ((await readRun(ctx, pk, input.runId, opts.signal)) ? ({ kind: 'duplicate' } as const) : undefined);

  if (ref.m) {
    const parts = [...(input.parts ?? [])].sort((a, b) => a.partNumber - b.partNumber);
    // Every part handed out, each once: a commit of part 1 of 3 would publish a truncated transcript.
    if (parts.length !== ref.n || parts.some((p, i) => p.partNumber !== i + 1)) {
      return { kind: 'upload-invalid', reason: `parts must be exactly 1..${ref.n}` };
    }
    try {
      await ctx.s3.send(
        new CompleteMultipartUploadCommand({
          Bucket: ctx.bucket,
          Key: source,
          UploadId: ref.m,
          MultipartUpload: { Parts: parts.map((p) => ({ PartNumber: p.partNumber, ETag: p.etag })) },
        }),
        { abortSignal: opts.signal },
      );
    } catch (err) {
      // Wrong or missing part ETags, parts below the S3 minimum: the client's upload is unusable.
      const name = (err as { name?: string }).name ?? '';
      if (INVALID_PARTS.has(name)) return { kind: 'upload-invalid', reason: name };
      // Completed by an earlier attempt of this commit: done already, or carry on (the object is there).
      const done = await committed();
      if (done) return done;
      // NoSuchUpload: never started, expired, or completed but not yet committed — the copy below tells.
      if (!(err instanceof NoSuchUpload)) throw err;
    }
  }

  // Placed by the evidence the ticket was signed with (the generation or iat of the writer that asked
  // for it: the run started no later than that), never by a later request's.
  const admission = await admit(ctx, pk, evidenceOf(ref, scope), opts.signal, scope);
  if (!admission) {
    await deleteObjectQuietly(ctx, source, opts.signal);
    return { kind: 'fenced' };
  }
  return settleRegistration(ctx, scope, admission.registration, await commitAdmitted(ctx, pk, scope, input, ref, source, admission, opts), opts.signal);
}

/** The part of {@link commitUpload} after admission: copy, measure, claim and publish. */
async function commitAdmitted(
  ctx: StoreContext,
  pk: string,
  scope: WriterScope,
  input: UploadCommit,
  ref: UploadRef,
  source: string,
  admission: { generation: number; head: HeadRecord },
  opts: CallOptions,
): Promise<WriteResult> {
  const committed = async () => ((await readRun(ctx, pk, input.runId, opts.signal)) ? ({ kind: 'duplicate' } as const) : undefined);
  const { generation } = admission;
  const s3Key = snapshotObjectKey(pk, input.runId, generation, ctx.newId(), ref.e);
  // A clear between admission and here sweeps the upload or the copy: that answer is 409 reset_fenced.
  const resetSince = async () => (await admit(ctx, pk, { generation, issuedAt: scope.issuedAt }, opts.signal)) === undefined;
  try {
    await ctx.s3.send(
      new CopyObjectCommand({
        Bucket: ctx.bucket,
        Key: s3Key,
        CopySource: `${ctx.bucket}/${encodeURIComponent(source).replaceAll('%2F', '/')}`,
        MetadataDirective: 'REPLACE',
        ContentType: NDJSON_CONTENT_TYPE,
        ...(ref.e === 'gzip' && { ContentEncoding: 'gzip' }),
      }),
      { abortSignal: opts.signal },
    );
  } catch (err) {
    // Gone: never uploaded, expired, swept by a clear — or committed and cleaned up by an earlier
    // attempt of this very request whose answer was lost. The latter must read as "already exists".
    if (!isNoSuchKey(err)) throw err;
    return (await committed()) ?? ((await resetSince()) ? { kind: 'fenced' } : { kind: 'upload-not-found' });
  }

  const rejected = async (result: WriteResult): Promise<WriteResult> => {
    await deleteObjectQuietly(ctx, s3Key, opts.signal);
    return result;
  };
  let measured: StreamDigest;
  try {
    let obj;
    try {
      obj = await ctx.s3.send(new GetObjectCommand({ Bucket: ctx.bucket, Key: s3Key }), { abortSignal: opts.signal });
    } catch (err) {
      if (isNoSuchKey(err) && (await resetSince())) return { kind: 'fenced' }; // the clear's sweep took the copy
      throw err;
    }
    measured = await streamDigest(obj.Body as Readable, {
      gunzip: ref.e === 'gzip',
      limit: ctx.limits.maxUploadBytes,
      overLimitCode: 'UPLOAD_TOO_LARGE',
      badGzipCode: 'UPLOAD_NOT_GZIP',
      signal: opts.signal,
    });
  } catch (err) {
    if (isStoreError(err, 'UPLOAD_TOO_LARGE')) return rejected({ kind: 'upload-too-large' });
    if (isStoreError(err, 'UPLOAD_NOT_GZIP')) return rejected({ kind: 'upload-invalid', reason: 'not valid gzip' });
    throw err;
  }
  if (measured.bytes === 0) return rejected({ kind: 'upload-invalid', reason: 'empty snapshot' });
  if (measured.storedBytes !== ref.b) return rejected({ kind: 'upload-invalid', reason: `stored ${measured.storedBytes} bytes, announced ${ref.b}` });

  const result = await commitRun(
    ctx,
    pk,
    {
      runId: input.runId,
      sha256: measured.sha256,
      bytes: measured.bytes,
      status: input.status,
      s3Key,
      encoding: ref.e,
      storedBytes: measured.storedBytes,
      storedSha256: measured.storedSha256,
      iat: scope.issuedAt,
      generation,
    },
    { ...opts, head: admission.head, listing: { scope }, storedDelta: measured.storedBytes },
  );
  // Stored, duplicate or fenced: either way this upload will never be committed again.
  await deleteObjectQuietly(ctx, source, opts.signal);
  return result;
}

/** Checks a (genuine, signed) upload id's payload strictly. */
function parseRef(payload: unknown): UploadRef | undefined {
  if (typeof payload !== 'object' || payload === null) return undefined;
  const v = payload as Partial<UploadRef>;
  if (typeof v.u !== 'string' || !UUID.test(v.u)) return undefined;
  if (v.e !== 'gzip' && v.e !== 'identity') return undefined;
  if (typeof v.t !== 'string' || !TAG.test(v.t)) return undefined;
  if (typeof v.b !== 'number' || !Number.isSafeInteger(v.b) || v.b <= 0) return undefined;
  if ((v.m === undefined) !== (v.n === undefined)) return undefined;
  if (v.n !== undefined && (!Number.isSafeInteger(v.n) || v.n < 1 || v.n > 10_000)) return undefined;
  if (v.m !== undefined && (typeof v.m !== 'string' || v.m.length === 0 || v.m.length > 1024)) return undefined;
  return { u: v.u, e: v.e, t: v.t, b: v.b, ...(v.n !== undefined && { n: v.n }), ...(v.m !== undefined && { m: v.m }) };
}
