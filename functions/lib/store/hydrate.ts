import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { gunzip as gunzipCb } from 'node:zlib';
import { GetItemCommand } from '@aws-sdk/client-dynamodb';
import { GetObjectCommand, NoSuchKey } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { conversationKey, type ConversationScope } from '../ids.js';
import type { CallOptions, StoreContext } from './context.js';
import { sha256Hex, streamDigest } from './digest.js';
import { StoreError } from './errors.js';
import { headKey, LATEST_PROJECTION, latestFromHeadItem, type Encoding, type SnapshotMeta } from './schema.js';

/**
 * Hydrate (1 DynamoDB read + 1 S3 read): a consistent GetItem of HEAD, then a GetObject of the key it
 * names — or, for a snapshot too large for a Lambda response, a presigned GET URL instead of the read.
 * The bytes are verified against the record before they are served (I1).
 */

const gunzip = promisify(gunzipCb);

/** Encodings the client accepts, negotiated by the HTTP layer (negotiation.ts). */
export type { Acceptable } from '../negotiation.js';
import type { Acceptable } from '../negotiation.js';

export interface HydrateOptions extends CallOptions {
  /** True when the client already holds the snapshot with this sha256 (If-None-Match) → not-modified. */
  readonly matches?: ((sha256: string) => boolean) | undefined;
  readonly accept?: Acceptable | undefined;
}

/**
 * none            nothing published (404)
 * not-modified    the client holds it already (304)
 * body            the verified bytes, in `encoding` (200)
 * redirect        too large to answer inline: a presigned URL to the object in its stored encoding (307)
 * not-acceptable  too large inline, stored gzip, and the client refuses gzip (406)
 */
export type HydrateResult =
  | { kind: 'none' }
  | { kind: 'not-modified'; meta: SnapshotMeta }
  | { kind: 'body'; meta: SnapshotMeta; body: Buffer; encoding: Encoding }
  | { kind: 'redirect'; meta: SnapshotMeta; url: string; encoding: Encoding }
  | { kind: 'not-acceptable'; meta: SnapshotMeta };

/**
 * The latest completed snapshot of the conversation. Throws StoreError('INTEGRITY') when the stored
 * object does not match its record, SDK errors otherwise.
 */
export async function hydrate(ctx: StoreContext, scope: ConversationScope, opts: HydrateOptions = {}): Promise<HydrateResult> {
  const head = await ctx.ddb.send(
    new GetItemCommand({
      TableName: ctx.table,
      Key: headKey(conversationKey(scope)),
      ConsistentRead: true, // the next run may be on another pod right after the write
      ProjectionExpression: LATEST_PROJECTION,
    }),
    { abortSignal: opts.signal },
  );
  const latest = latestFromHeadItem(head.Item);
  if (!latest) return { kind: 'none' };
  const meta: SnapshotMeta = { runId: latest.runId, sha256: latest.sha256, bytes: latest.bytes };
  if (opts.matches?.(meta.sha256)) return { kind: 'not-modified', meta };

  const stored = latest.encoding;
  const accept = opts.accept ?? 'any';
  // Inline, gzip goes only to clients that asked for it (a bare `curl` sends no Accept-Encoding and
  // expects text). Past the inline limit, S3 serves the stored encoding, which RFC 9110 allows for a
  // client that sent no Accept-Encoding; only an explicit refusal gets 406.
  const sendGzip = stored === 'gzip' && accept === 'gzip';
  const inlineBytes = stored === 'gzip' && !sendGzip ? meta.bytes : latest.storedBytes;
  if (inlineBytes > ctx.limits.inlineMaxBytes) {
    // Too large for a Lambda response: hand out a short-lived URL to the object itself.
    if (stored === 'gzip' && accept === 'identity') return { kind: 'not-acceptable', meta };
    const url = await getSignedUrl(ctx.presigner, new GetObjectCommand({ Bucket: ctx.bucket, Key: latest.s3Key }), {
      expiresIn: ctx.limits.presignTtlSeconds,
    });
    return { kind: 'redirect', meta, url, encoding: stored };
  }

  let raw: Buffer;
  try {
    const obj = await ctx.s3.send(new GetObjectCommand({ Bucket: ctx.bucket, Key: latest.s3Key }), { abortSignal: opts.signal });
    raw = Buffer.from(await obj.Body!.transformToByteArray());
  } catch (err) {
    // Race, not corruption: a clear fenced HEAD and deleted the object between our two reads.
    // Answering 404 is what the reader would have seen had it arrived just after the clear.
    if (err instanceof NoSuchKey) return { kind: 'none' };
    throw err;
  }
  const mismatch = () => new StoreError('INTEGRITY', `stored object for run ${meta.runId} does not match its record`);
  // Never serve a partial or foreign body (I1): the bytes must be the ones that were committed.
  if (sendGzip) {
    // Sent as stored, so checked by streaming it through gunzip into the hash: its decoded size is
    // bounded by maxUploadBytes, not by the inline limit, and must never be held in memory.
    const decoded = await streamDigest(Readable.from([raw]), {
      gunzip: true,
      limit: meta.bytes,
      overLimitCode: 'INTEGRITY',
      badGzipCode: 'INTEGRITY',
    });
    if (decoded.bytes !== meta.bytes || decoded.sha256 !== meta.sha256) throw mismatch();
    return { kind: 'body', meta, body: raw, encoding: 'gzip' };
  }
  let plain: Buffer;
  try {
    // Bounded by the recorded size: a corrupt object must not inflate without limit (it fails the check).
    plain = stored === 'gzip' ? await gunzip(raw, { maxOutputLength: meta.bytes + 1 }) : raw;
  } catch (err) {
    throw new StoreError('INTEGRITY', `stored object for run ${meta.runId} is not valid gzip`, { cause: err });
  }
  if (plain.length !== meta.bytes || sha256Hex(plain) !== meta.sha256) throw mismatch();
  return { kind: 'body', meta, body: plain, encoding: 'identity' };
}
