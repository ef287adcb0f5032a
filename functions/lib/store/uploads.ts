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
import { snapshotObjectKey, uploadObjectKey, type Encoding } from './schema.js';
import { commitRun, deleteObjectQuietly, readRun, type WriteResult, type WriterScope } from './write.js';

/**
 * Presigned uploads, for snapshots past the direct-POST limit:
 *   create:  hand out a presigned PUT (or multipart part URLs) under uploads/ — no record is written.
 *   commit:  complete the multipart upload, measure what actually landed (never the client's claim),
 *            copy it to an immutable snapshot key, then claim and publish exactly like a direct write.
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

interface UploadRef {
  /** uuid */ u: string;
  /** encoding */ e: Encoding;
  /** iat of the token that created it */ i: number;
  /** S3 multipart UploadId, when multipart */ m?: string;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** S3 errors of CompleteMultipartUpload that mean the client's parts are unusable (400, not 5xx). */
const INVALID_PARTS = new Set(['InvalidPart', 'InvalidPartOrder', 'EntityTooSmall']);

/** Presigned PUT URL(s) for a snapshot of `input.bytes` transfer bytes. Throws SDK errors. */
export async function createUpload(ctx: StoreContext, scope: WriterScope, input: UploadRequest, opts: CallOptions = {}): Promise<UploadTicket> {
  const pk = conversationKey(scope);
  const ref: UploadRef = { u: ctx.newId(), e: input.encoding, i: scope.issuedAt };
  const uploadKey = uploadObjectKey(pk, input.runId, ref.i, ref.u);
  const expiresIn = ctx.limits.presignTtlSeconds;
  const expiresAt = new Date(ctx.now() + expiresIn * 1000).toISOString();

  if (input.bytes <= ctx.limits.multipartThresholdBytes) {
    const url = await getSignedUrl(ctx.presigner, new PutObjectCommand({ Bucket: ctx.bucket, Key: uploadKey }), { expiresIn });
    return { uploadId: encodeRef(ref), expiresAt, encoding: input.encoding, url };
  }
  const mpu = await ctx.s3.send(new CreateMultipartUploadCommand({ Bucket: ctx.bucket, Key: uploadKey }), { abortSignal: opts.signal });
  ref.m = mpu.UploadId!;
  const count = Math.ceil(input.bytes / ctx.limits.partBytes);
  const parts = await Promise.all(
    Array.from({ length: count }, async (_, i) => ({
      partNumber: i + 1,
      url: await getSignedUrl(ctx.presigner, new UploadPartCommand({ Bucket: ctx.bucket, Key: uploadKey, UploadId: ref.m, PartNumber: i + 1 }), { expiresIn }),
    })),
  );
  return { uploadId: encodeRef(ref), expiresAt, encoding: input.encoding, partBytes: ctx.limits.partBytes, parts };
}

/** Commits an upload (see the protocol above). Returns the write outcome; throws SDK errors. */
export async function commitUpload(ctx: StoreContext, scope: WriterScope, input: UploadCommit, opts: CallOptions = {}): Promise<WriteResult> {
  const pk = conversationKey(scope);
  const ref = decodeRef(input.uploadId);
  if (!ref) return { kind: 'upload-not-found' };
  const uploadKey = uploadObjectKey(pk, input.runId, ref.i, ref.u);

  if (ref.m) {
    if (!input.parts?.length) return { kind: 'upload-invalid', reason: 'parts are required for a multipart upload' };
    try {
      await ctx.s3.send(
        new CompleteMultipartUploadCommand({
          Bucket: ctx.bucket,
          Key: uploadKey,
          UploadId: ref.m,
          MultipartUpload: { Parts: [...input.parts].sort((a, b) => a.partNumber - b.partNumber).map((p) => ({ PartNumber: p.partNumber, ETag: p.etag })) },
        }),
        { abortSignal: opts.signal },
      );
    } catch (err) {
      // Wrong or missing part ETags, parts below the S3 minimum: the client's upload is unusable.
      const name = (err as { name?: string }).name ?? '';
      if (INVALID_PARTS.has(name)) return { kind: 'upload-invalid', reason: name };
      // NoSuchUpload: completed by an earlier attempt of this commit (the object is there — carry on),
      // or never started/expired (the measurement then finds no object: upload-not-found).
      if (!(err instanceof NoSuchUpload)) throw err;
    }
  }

  let measured: StreamDigest;
  try {
    const obj = await ctx.s3.send(new GetObjectCommand({ Bucket: ctx.bucket, Key: uploadKey }), { abortSignal: opts.signal });
    measured = await streamDigest(obj.Body as Readable, {
      gunzip: ref.e === 'gzip',
      limit: ctx.limits.maxUploadBytes,
      overLimitCode: 'UPLOAD_TOO_LARGE',
      badGzipCode: 'UPLOAD_NOT_GZIP',
      signal: opts.signal,
    });
  } catch (err) {
    if (err instanceof NoSuchKey) {
      // Gone: never uploaded, expired, swept by a clear — or committed and cleaned up by an earlier
      // attempt of this very request whose answer was lost. The latter must read as "already exists".
      return (await readRun(ctx, pk, input.runId, opts.signal)) ? { kind: 'duplicate' } : { kind: 'upload-not-found' };
    }
    if (isStoreError(err, 'UPLOAD_TOO_LARGE')) return { kind: 'upload-too-large' };
    if (isStoreError(err, 'UPLOAD_NOT_GZIP')) return { kind: 'upload-invalid', reason: 'not valid gzip' };
    throw err;
  }
  if (measured.bytes === 0) return { kind: 'upload-invalid', reason: 'empty snapshot' };

  const s3Key = snapshotObjectKey(pk, input.runId, scope.issuedAt, ctx.newId(), ref.e);
  await ctx.s3.send(
    new CopyObjectCommand({
      Bucket: ctx.bucket,
      Key: s3Key,
      CopySource: `${ctx.bucket}/${encodeURIComponent(uploadKey).replaceAll('%2F', '/')}`,
      MetadataDirective: 'REPLACE',
      ContentType: NDJSON_CONTENT_TYPE,
      ...(ref.e === 'gzip' && { ContentEncoding: 'gzip' }),
      Metadata: { sha256: measured.sha256 },
    }),
    { abortSignal: opts.signal },
  );
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
      iat: scope.issuedAt,
    },
    opts,
  );
  // Stored, duplicate or fenced: either way this upload will never be committed again.
  await deleteObjectQuietly(ctx, uploadKey, opts.signal);
  return result;
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
