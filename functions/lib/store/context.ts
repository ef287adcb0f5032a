import { randomUUID } from 'node:crypto';
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { S3Client } from '@aws-sdk/client-s3';
import { DEFAULT_CHAIN_MAX_EXTENTS, DEFAULT_CHAIN_MERGE_RATIO } from './chain.js';
import { ephemeralUploadIdCodec, type UploadIdCodec } from '../upload-id.js';
import { DEFAULT_RETENTION, type RetentionSettings } from './retention-settings.js';

export { DEFAULT_RETENTION, type RetentionSettings } from './retention-settings.js';

/**
 * What every store operation needs: the SDK clients, where the data lives, the limits, and the
 * injectable clock and id source. Operations are plain functions of a StoreContext, one module per
 * protocol step, so that each Lambda bundles only the steps its route uses.
 */
export interface StoreLimits {
  /** Largest body (bytes, before base64) answered inline; larger → presigned redirect. */
  readonly inlineMaxBytes: number;
  /** Lifetime of presigned GET and upload URLs (seconds). */
  readonly presignTtlSeconds: number;
  /** Largest snapshot (decoded bytes) accepted through a presigned upload. */
  readonly maxUploadBytes: number;
  /** Uploads larger than this many transfer bytes use multipart, in parts of `partBytes`. */
  readonly multipartThresholdBytes: number;
  readonly partBytes: number;
  /** A chain read touches at most this many objects (compaction merges past it; chain.ts). */
  readonly chainMaxExtents: number;
  /** Compaction keeps each chain object ≥ this many times the size of everything after it (chain.ts). */
  readonly chainMergeRatio: number;
}

export const DEFAULT_LIMITS: StoreLimits = Object.freeze({
  // Lambda's response payload limit is 6 MB (6,291,456 B) for the whole JSON envelope. Bodies are
  // returned base64-encoded (4/3 growth); 4 MiB of stored bytes → 5.59 MB, leaving room for headers.
  inlineMaxBytes: 4 * 1024 * 1024,
  presignTtlSeconds: 300,
  maxUploadBytes: 1024 * 1024 * 1024,
  multipartThresholdBytes: 64 * 1024 * 1024,
  partBytes: 16 * 1024 * 1024,
  chainMaxExtents: DEFAULT_CHAIN_MAX_EXTENTS,
  chainMergeRatio: DEFAULT_CHAIN_MERGE_RATIO,
});

/** Default of {@link StoreOptions.legacyFenceWindowSeconds}: the verifier's default clock tolerance. */
export const DEFAULT_LEGACY_FENCE_WINDOW_SECONDS = 0;

export interface StoreOptions {
  s3: S3Client;
  /**
   * Client used only to sign presigned URLs (default: `s3`). It must not add checksum parameters to
   * presigned PUT URLs (see `createClients` in aws.ts, which builds one).
   */
  presigner?: S3Client;
  ddb: DynamoDBClient;
  bucket: string;
  table: string;
  limits?: Partial<StoreLimits>;
  /** Clock in epoch milliseconds (default `Date.now`); tests inject one. */
  now?: () => number;
  /** Unique id source for object keys (default `crypto.randomUUID`). */
  newId?: () => string;
  /** Best-effort cleanup failures are reported here, never thrown (default: ignored). */
  onCleanupError?: (what: string, err: unknown) => void;
  /**
   * Writers that echo no reset generation are placed after a clear only when their token was issued at
   * least this many whole seconds after it (default 0: the same second counts; see `legacyGeneration`).
   */
  legacyFenceWindowSeconds?: number;
  /** Signs and checks upload ids (default: a random key valid in this process only; deployments pass `uploadIdCodecFor`). */
  uploadIds?: UploadIdCodec;
  /** What the retention pass keeps, and the TTL backstop of runs that did not complete (default {@link DEFAULT_RETENTION}). */
  retention?: Partial<RetentionSettings>;
}

export interface StoreContext {
  readonly s3: S3Client;
  readonly presigner: S3Client;
  readonly ddb: DynamoDBClient;
  readonly bucket: string;
  readonly table: string;
  readonly limits: StoreLimits;
  readonly now: () => number;
  readonly newId: () => string;
  readonly onCleanupError: (what: string, err: unknown) => void;
  readonly legacyFenceWindowSeconds: number;
  readonly uploadIds: UploadIdCodec;
  readonly retention: RetentionSettings;
}

/** Per-call options: the request's deadline, so no AWS call outlives the API Gateway timeout. */
export interface CallOptions {
  signal?: AbortSignal | undefined;
}

/** Fills in the defaults of {@link StoreOptions}. */
export function createStoreContext(opts: StoreOptions): StoreContext {
  return {
    s3: opts.s3,
    presigner: opts.presigner ?? opts.s3,
    ddb: opts.ddb,
    bucket: opts.bucket,
    table: opts.table,
    limits: { ...DEFAULT_LIMITS, ...opts.limits },
    now: opts.now ?? Date.now,
    newId: opts.newId ?? randomUUID,
    onCleanupError: opts.onCleanupError ?? (() => {}),
    legacyFenceWindowSeconds: opts.legacyFenceWindowSeconds ?? DEFAULT_LEGACY_FENCE_WINDOW_SECONDS,
    uploadIds: opts.uploadIds ?? ephemeralUploadIdCodec(),
    retention: { ...DEFAULT_RETENTION, ...opts.retention },
  };
}
