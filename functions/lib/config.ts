/**
 * Reads the environment once (at cold start) and fails fast, naming the variable that is missing or
 * malformed. Nothing else in functions/ reads process.env.
 */

export type KeySource =
  | { kind: 'secret'; secret: string }
  | { kind: 'secretArn'; arn: string }
  | { kind: 'jwks'; url: URL };

/** What every function needs to reach storage (the scheduled reconciler needs nothing more). */
export interface StorageConfig {
  readonly region: string;
  readonly bucketName: string;
  readonly tableName: string;
  /** Path-style S3 addressing: needed by s3rver and LocalStack; off for AWS unless asked for. */
  readonly s3ForcePathStyle: boolean;
  /** The reconciler only deletes unreferenced objects older than this (no request lives that long). */
  readonly orphanGraceSeconds: number;
  /** `RETAIN_COMPLETED_RUNS` (≥ 1, default 3): completed runs kept per conversation, the latest included. */
  readonly retainCompletedRuns: number;
  /** `RETAIN_FAILED_DAYS` (≥ 1, default 7): days a run that did not complete is kept. */
  readonly retainFailedDays: number;
  /** `CONVERSATION_TTL_DAYS` (default 0 = off): days after its last write a conversation is erased. */
  readonly conversationTtlDays: number;
  /** `RETENTION_INTERVAL_MINUTES` (1–1,440, default 60): how often the retention pass runs. */
  readonly retentionIntervalMinutes: number;
}

/** Where the upload-id signing key comes from when set explicitly (see upload-id.ts for the default). */
export type UploadIdSecretSource = { kind: 'secret'; secret: string } | { kind: 'secretArn'; arn: string };

export interface Config extends StorageConfig {
  readonly keySource: KeySource;
  /** UPLOAD_ID_SECRET or UPLOAD_ID_SECRET_ARN; undefined: derived from the HS256 JWT key (upload-id.ts). */
  readonly uploadIdSecret: UploadIdSecretSource | undefined;
  readonly algorithms: readonly string[];
  readonly issuer: string | undefined;
  readonly audience: string | undefined;
  readonly clockToleranceSeconds: number;
  /**
   * How long an HS256 key from Secrets Manager (JWT_SECRET_ARN) is used before it is fetched again
   * (SECRET_MAX_AGE_SECONDS, default 300): a rotated secret takes effect within this, or at once for a token
   * signed with the new key (auth.ts refetches once on a signature mismatch, rate-limited).
   */
  readonly secretMaxAgeSeconds: number;
  /** Largest decoded `snapshotJsonl` accepted by a direct POST (see README: why 4 MiB). */
  readonly maxSnapshotBytes: number;
  /** Stored bytes above which GET redirects (307) to a presigned S3 URL instead of answering inline. */
  readonly inlineMaxBytes: number;
  readonly presignTtlSeconds: number;
  /** Largest snapshot (decoded) accepted through a presigned upload. */
  readonly maxUploadBytes: number;
  readonly multipartThresholdBytes: number;
  readonly multipartPartBytes: number;
  /** A chain read touches at most this many objects; compaction merges past it (CHAIN_MAX_EXTENTS, default 3). */
  readonly chainMaxExtents: number;
  /** Compaction keeps each chain object ≥ this many times everything after it (CHAIN_MERGE_RATIO, default 16). */
  readonly chainMergeRatio: number;
  /** Every request gives up on storage after this long and answers 503 (API Gateway cuts at 30 s). */
  readonly requestDeadlineMs: number;
  /**
   * Writers that echo no reset generation count as started after a clear only when their token was
   * issued at least this many seconds after it (docs/RELIABILITY.md § Clock model).
   */
  readonly legacyFenceWindowSeconds: number;
}

export class ConfigError extends Error {
  constructor(readonly variable: string, problem: string) {
    super(`Invalid configuration: ${variable} ${problem}`);
    this.name = 'ConfigError';
  }
}

type Env = Readonly<Record<string, string | undefined>>;

import { DEFAULT_CHAIN_MAX_EXTENTS, DEFAULT_CHAIN_MERGE_RATIO } from './store/chain.js';
import { DEFAULT_RETENTION, type RetentionSettings } from './store/retention-settings.js';

export const DEFAULT_MAX_SNAPSHOT_BYTES = 4 * 1024 * 1024;
const SYMMETRIC_ALGS = ['HS256', 'HS384', 'HS512'];
const ASYMMETRIC_ALGS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'];

function read(env: Env, name: string): string | undefined {
  const v = env[name]?.trim();
  return v === '' ? undefined : v;
}

function required(env: Env, name: string): string {
  const v = read(env, name);
  if (v === undefined) throw new ConfigError(name, 'is required');
  return v;
}

function positiveInt(env: Env, name: string, fallback: number): number {
  const raw = read(env, name);
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || !Number.isSafeInteger(n) || n <= 0) throw new ConfigError(name, `must be a positive integer, got "${raw}"`);
  return n;
}

function nonNegativeInt(env: Env, name: string, fallback: number): number {
  const raw = read(env, name);
  if (raw === '0') return 0;
  return positiveInt(env, name, fallback);
}

function bool(env: Env, name: string, fallback: boolean): boolean {
  const raw = read(env, name)?.toLowerCase();
  if (raw === undefined) return fallback;
  if (['1', 'true', 'yes'].includes(raw)) return true;
  if (['0', 'false', 'no'].includes(raw)) return false;
  throw new ConfigError(name, `must be true or false, got "${raw}"`);
}

function keySource(env: Env): KeySource {
  const secret = read(env, 'JWT_SECRET');
  const arn = read(env, 'JWT_SECRET_ARN');
  const jwks = read(env, 'JWKS_URL');
  const set = [secret && 'JWT_SECRET', arn && 'JWT_SECRET_ARN', jwks && 'JWKS_URL'].filter(Boolean);
  if (set.length === 0) throw new ConfigError('JWT_SECRET', 'is required (or set JWT_SECRET_ARN or JWKS_URL)');
  if (set.length > 1) throw new ConfigError(set.join(', '), 'are mutually exclusive: set exactly one key source');
  if (secret) return { kind: 'secret', secret };
  if (arn) {
    if (!arn.startsWith('arn:')) throw new ConfigError('JWT_SECRET_ARN', 'must be a Secrets Manager ARN');
    return { kind: 'secretArn', arn };
  }
  let url: URL;
  try {
    url = new URL(jwks!);
  } catch {
    throw new ConfigError('JWKS_URL', 'must be an absolute URL');
  }
  if (url.protocol !== 'https:' && url.hostname !== '127.0.0.1' && url.hostname !== 'localhost') {
    throw new ConfigError('JWKS_URL', 'must use https (plain http is only allowed for localhost)');
  }
  return { kind: 'jwks', url };
}

function algorithms(env: Env, source: KeySource): string[] {
  const allowed = source.kind === 'jwks' ? ASYMMETRIC_ALGS : SYMMETRIC_ALGS;
  const raw = read(env, 'JWT_ALGORITHMS');
  if (raw === undefined) return source.kind === 'jwks' ? ['RS256', 'ES256', 'EdDSA'] : ['HS256'];
  const algs = raw.split(',').map((a) => a.trim()).filter(Boolean);
  // Never mix families: an HS/RS confusion attack needs a verifier that accepts both.
  const bad = algs.filter((a) => !allowed.includes(a));
  if (algs.length === 0 || bad.length > 0) {
    throw new ConfigError('JWT_ALGORITHMS', `must list algorithms from ${allowed.join(', ')} for this key source, got "${raw}"`);
  }
  return algs;
}

function partSize(env: Env): number {
  const bytes = positiveInt(env, 'MULTIPART_PART_BYTES', 16 * 1024 * 1024);
  // S3 rejects parts below 5 MiB (except the last) and allows at most 10,000 parts.
  if (bytes < 5 * 1024 * 1024) throw new ConfigError('MULTIPART_PART_BYTES', 'must be at least 5 MiB (5242880), the S3 minimum part size');
  return bytes;
}

function uploadIdSecret(env: Env): UploadIdSecretSource | undefined {
  const secret = read(env, 'UPLOAD_ID_SECRET');
  const arn = read(env, 'UPLOAD_ID_SECRET_ARN');
  if (secret && arn) throw new ConfigError('UPLOAD_ID_SECRET, UPLOAD_ID_SECRET_ARN', 'are mutually exclusive: set at most one');
  if (secret) return { kind: 'secret', secret };
  if (arn) {
    if (!arn.startsWith('arn:')) throw new ConfigError('UPLOAD_ID_SECRET_ARN', 'must be a Secrets Manager ARN');
    return { kind: 'secretArn', arn };
  }
  return undefined;
}

/** Largest RETENTION_INTERVAL_MINUTES: a day (the schedule's error alarm evaluates two intervals). */
export const MAX_RETENTION_INTERVAL_MINUTES = 24 * 60;

/** A positive integer no larger than `max`, else a ConfigError naming the variable and the bound. */
function boundedInt(env: Env, name: string, fallback: number, max: number): number {
  const n = positiveInt(env, name, fallback);
  if (n > max) throw new ConfigError(name, `must be at most ${max}, got "${read(env, name)}"`);
  return n;
}

/**
 * The retention settings (docs/DESIGN.md § Retention). Throws ConfigError naming the variable: each is a
 * whole number; RETAIN_COMPLETED_RUNS and RETAIN_FAILED_DAYS at least 1 (the latest run is always kept,
 * and a failed run at least a day), CONVERSATION_TTL_DAYS 0 (off) or more, RETENTION_INTERVAL_MINUTES
 * 1 to 1,440 (a day).
 */
function retentionConfig(env: Env): Pick<StorageConfig, 'retainCompletedRuns' | 'retainFailedDays' | 'conversationTtlDays' | 'retentionIntervalMinutes'> {
  return {
    retainCompletedRuns: boundedInt(env, 'RETAIN_COMPLETED_RUNS', DEFAULT_RETENTION.retainCompletedRuns, 10_000),
    retainFailedDays: boundedInt(env, 'RETAIN_FAILED_DAYS', DEFAULT_RETENTION.retainFailedDays, 36_500),
    conversationTtlDays: conversationTtlDays(env),
    retentionIntervalMinutes: boundedInt(env, 'RETENTION_INTERVAL_MINUTES', DEFAULT_RETENTION.intervalMinutes, MAX_RETENTION_INTERVAL_MINUTES),
  };
}

function conversationTtlDays(env: Env): number {
  const raw = read(env, 'CONVERSATION_TTL_DAYS');
  if (raw === undefined) return DEFAULT_RETENTION.conversationTtlDays;
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || !Number.isSafeInteger(n) || n > 36_500) {
    throw new ConfigError('CONVERSATION_TTL_DAYS', `must be 0 (off) or a whole number of days up to 36500, got "${raw}"`);
  }
  return n;
}

/** The store's retention settings (StoreContext.retention) from a storage configuration. */
export function retentionSettings(config: StorageConfig): RetentionSettings {
  return {
    retainCompletedRuns: config.retainCompletedRuns,
    retainFailedDays: config.retainFailedDays,
    conversationTtlDays: config.conversationTtlDays,
    intervalMinutes: config.retentionIntervalMinutes,
    graceSeconds: config.orphanGraceSeconds,
  };
}

/** Minimum grace: longer than any request can live (Lambda's 15 min maximum), so never a live upload. */
export const MIN_ORPHAN_GRACE_SECONDS = 15 * 60;

export function loadStorageConfig(env: Env = process.env): StorageConfig {
  const region = read(env, 'AWS_REGION');
  if (region === undefined) throw new ConfigError('AWS_REGION', 'is required (the AWS SDK ignores AWS_DEFAULT_REGION)');
  const endpointSet = Boolean(read(env, 'AWS_ENDPOINT_URL') ?? read(env, 'AWS_ENDPOINT_URL_S3'));
  const orphanGraceSeconds = positiveInt(env, 'ORPHAN_GRACE_SECONDS', 3600);
  if (orphanGraceSeconds < MIN_ORPHAN_GRACE_SECONDS) {
    throw new ConfigError('ORPHAN_GRACE_SECONDS', `must be at least ${MIN_ORPHAN_GRACE_SECONDS} (longer than any request can run)`);
  }
  return Object.freeze({
    region,
    bucketName: required(env, 'BUCKET_NAME'),
    tableName: required(env, 'TABLE_NAME'),
    s3ForcePathStyle: bool(env, 'S3_FORCE_PATH_STYLE', endpointSet),
    orphanGraceSeconds,
    ...retentionConfig(env),
  });
}

export function loadConfig(env: Env = process.env): Config {
  const source = keySource(env);
  const storage = loadStorageConfig(env);
  return Object.freeze({
    ...storage,
    keySource: source,
    uploadIdSecret: uploadIdSecret(env),
    algorithms: Object.freeze(algorithms(env, source)),
    issuer: read(env, 'JWT_ISSUER'),
    audience: read(env, 'JWT_AUDIENCE'),
    clockToleranceSeconds: nonNegativeInt(env, 'JWT_CLOCK_TOLERANCE_SECONDS', 5),
    secretMaxAgeSeconds: positiveInt(env, 'SECRET_MAX_AGE_SECONDS', 300),
    maxSnapshotBytes: positiveInt(env, 'MAX_SNAPSHOT_BYTES', DEFAULT_MAX_SNAPSHOT_BYTES),
    inlineMaxBytes: positiveInt(env, 'INLINE_RESPONSE_MAX_BYTES', 4 * 1024 * 1024),
    presignTtlSeconds: positiveInt(env, 'PRESIGN_TTL_SECONDS', 300),
    maxUploadBytes: positiveInt(env, 'MAX_UPLOAD_BYTES', 1024 * 1024 * 1024),
    multipartThresholdBytes: positiveInt(env, 'MULTIPART_THRESHOLD_BYTES', 64 * 1024 * 1024),
    multipartPartBytes: partSize(env),
    chainMaxExtents: positiveInt(env, 'CHAIN_MAX_EXTENTS', DEFAULT_CHAIN_MAX_EXTENTS),
    chainMergeRatio: positiveInt(env, 'CHAIN_MERGE_RATIO', DEFAULT_CHAIN_MERGE_RATIO),
    requestDeadlineMs: positiveInt(env, 'REQUEST_DEADLINE_MS', 25_000),
    legacyFenceWindowSeconds: nonNegativeInt(env, 'LEGACY_FENCE_WINDOW_SECONDS', 0),
  });
}
