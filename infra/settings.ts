/**
 * Deployment settings, read from CDK context (`cdk.json` or `-c key=value` on the command line) and
 * validated once, failing synth with a message that names the offending key.
 *
 * No setting ever holds a secret value: the JWT key is referenced by Secrets Manager ARN (or created
 * there with an AWS-generated value), or fetched from a public JWKS URL.
 */

import { MAX_RETENTION_INTERVAL_MINUTES } from '../functions/lib/config.js';
import { DEFAULT_RETENTION } from '../functions/lib/store/retention-settings.js';

/** Where the handlers get the key that verifies worker JWTs. */
export type JwtKeySource =
  /** Default: the stack creates a Secrets Manager secret with a generated value (put your own in it). */
  | { readonly kind: 'generatedSecret' }
  /** An existing secret (complete ARN, with the 6-character suffix); `kmsKeyArn` if it uses a customer key. */
  | { readonly kind: 'secretArn'; readonly arn: string; readonly kmsKeyArn: string | undefined }
  /** Asymmetric keys (RS256/ES256/EdDSA) from a JWKS endpoint, with rotation. */
  | { readonly kind: 'jwks'; readonly url: string };

export interface JwtSettings {
  readonly keySource: JwtKeySource;
  readonly issuer: string | undefined;
  readonly audience: string | undefined;
  /** Comma-separated allowlist; the handlers default per key source when unset. */
  readonly algorithms: string | undefined;
}

export interface StoreSettings {
  readonly stackName: string;
  readonly jwt: JwtSettings;
  /** `s3`: SSE-S3 (default). `kms`: a customer managed KMS key (rotation on) created by the stack. */
  readonly bucketEncryption: 's3' | 'kms';
  /** `retain` (default) keeps bucket, table, secret and logs when the stack is deleted. */
  readonly removalPolicy: 'retain' | 'destroy';
  /** S3 server access logs for the snapshot bucket, into a separate log bucket. */
  readonly s3AccessLogs: boolean;
  readonly logRetentionDays: number;
  readonly logLevel: 'DEBUG' | 'INFO' | 'WARN' | 'ERROR';
  readonly lambdaMemoryMb: number;
  readonly maxSnapshotBytes: number | undefined;
  readonly throttleRateLimit: number;
  readonly throttleBurstLimit: number;
  readonly alarmEmail: string | undefined;
  readonly alarmTopicArn: string | undefined;
  /** API 5xx responses as a percentage of requests (5-minute periods). */
  readonly api5xxRatePercent: number;
  readonly apiLatencyP99Ms: number;
  /** The reconciler deletes unreferenced snapshot objects older than this (≥ 900 s). */
  readonly orphanGraceSeconds: number;
  /** `RETAIN_COMPLETED_RUNS`: completed runs kept per conversation, the latest included (≥ 1). */
  readonly retainCompletedRuns: number;
  /** `RETAIN_FAILED_DAYS`: days a run that did not complete is kept (≥ 1; its DynamoDB TTL is a day later). */
  readonly retainFailedDays: number;
  /** `CONVERSATION_TTL_DAYS`: a conversation is erased this many days after its last write (0 = off). */
  readonly conversationTtlDays: number;
  /** `RETENTION_INTERVAL_MINUTES`: the retention function runs this often (1–1,440). */
  readonly retentionIntervalMinutes: number;
}

export const DEFAULT_SETTINGS: StoreSettings = {
  stackName: 'TranscriptStore',
  jwt: { keySource: { kind: 'generatedSecret' }, issuer: undefined, audience: undefined, algorithms: undefined },
  bucketEncryption: 's3',
  removalPolicy: 'retain',
  s3AccessLogs: true,
  logRetentionDays: 30,
  logLevel: 'INFO',
  lambdaMemoryMb: 512,
  maxSnapshotBytes: undefined,
  throttleRateLimit: 200,
  throttleBurstLimit: 400,
  alarmEmail: undefined,
  alarmTopicArn: undefined,
  api5xxRatePercent: 5,
  apiLatencyP99Ms: 3000,
  orphanGraceSeconds: 3600,
  retainCompletedRuns: DEFAULT_RETENTION.retainCompletedRuns,
  retainFailedDays: DEFAULT_RETENTION.retainFailedDays,
  conversationTtlDays: DEFAULT_RETENTION.conversationTtlDays,
  retentionIntervalMinutes: DEFAULT_RETENTION.intervalMinutes,
};

/** Retention values CloudWatch Logs accepts (days). */
const LOG_RETENTION_DAYS = [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653];

const SECRET_ARN = /^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+-[A-Za-z0-9]{6}$/;
const KMS_KEY_ARN = /^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key\/[A-Za-z0-9-]+$/;
const SNS_TOPIC_ARN = /^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]+$/;
const HMAC_ALGS = ['HS256', 'HS384', 'HS512'];
const ASYMMETRIC_ALGS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'];

export class SettingsError extends Error {
  constructor(key: string, problem: string) {
    super(`Invalid CDK context "${key}": ${problem}`);
    this.name = 'SettingsError';
  }
}

/** Anything with `tryGetContext`, e.g. `app.node`. */
export interface ContextSource {
  tryGetContext(key: string): unknown;
}

function str(ctx: ContextSource, key: string): string | undefined {
  const v: unknown = ctx.tryGetContext(key);
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') {
    throw new SettingsError(key, 'must be a string, number or boolean');
  }
  const s = String(v).trim();
  return s === '' ? undefined : s;
}

function int(ctx: ContextSource, key: string, fallback: number, min: number, max: number): number {
  const raw = str(ctx, key);
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) throw new SettingsError(key, `must be an integer in [${min}, ${max}], got "${raw}"`);
  return n;
}

function num(ctx: ContextSource, key: string, fallback: number, min: number, max: number): number {
  const raw = str(ctx, key);
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < min || n > max) throw new SettingsError(key, `must be a number in [${min}, ${max}], got "${raw}"`);
  return n;
}

function oneOf<T extends string>(ctx: ContextSource, key: string, allowed: readonly T[], fallback: T): T {
  const raw = str(ctx, key);
  if (raw === undefined) return fallback;
  const v = allowed.find((a) => a.toLowerCase() === raw.toLowerCase());
  if (v === undefined) throw new SettingsError(key, `must be one of ${allowed.join(', ')}, got "${raw}"`);
  return v;
}

function bool(ctx: ContextSource, key: string, fallback: boolean): boolean {
  const raw = str(ctx, key)?.toLowerCase();
  if (raw === undefined) return fallback;
  if (raw === 'true' || raw === '1' || raw === 'yes') return true;
  if (raw === 'false' || raw === '0' || raw === 'no') return false;
  throw new SettingsError(key, `must be true or false, got "${raw}"`);
}

function jwtSettings(ctx: ContextSource): JwtSettings {
  const arn = str(ctx, 'jwtSecretArn');
  const kmsKeyArn = str(ctx, 'jwtSecretKmsKeyArn');
  const jwks = str(ctx, 'jwksUrl');
  if (arn && jwks) throw new SettingsError('jwtSecretArn', 'and "jwksUrl" are mutually exclusive: set at most one key source');
  if (kmsKeyArn && !arn) throw new SettingsError('jwtSecretKmsKeyArn', 'only applies together with "jwtSecretArn"');

  let keySource: JwtKeySource;
  if (arn) {
    if (!SECRET_ARN.test(arn)) {
      throw new SettingsError('jwtSecretArn', `must be the complete Secrets Manager ARN (ending in the 6-character suffix, e.g. "...:secret:name-AbCdEf"), got "${arn}"`);
    }
    if (kmsKeyArn && !KMS_KEY_ARN.test(kmsKeyArn)) throw new SettingsError('jwtSecretKmsKeyArn', `must be a KMS key ARN, got "${kmsKeyArn}"`);
    keySource = { kind: 'secretArn', arn, kmsKeyArn };
  } else if (jwks) {
    let url: URL;
    try {
      url = new URL(jwks);
    } catch {
      throw new SettingsError('jwksUrl', `must be an absolute URL, got "${jwks}"`);
    }
    if (url.protocol !== 'https:') throw new SettingsError('jwksUrl', 'must use https');
    keySource = { kind: 'jwks', url: url.toString() };
  } else {
    keySource = { kind: 'generatedSecret' };
  }

  const algorithms = str(ctx, 'jwtAlgorithms');
  if (algorithms !== undefined) {
    const family = keySource.kind === 'jwks' ? ASYMMETRIC_ALGS : HMAC_ALGS;
    const list = algorithms.split(',').map((a) => a.trim()).filter(Boolean);
    const bad = list.filter((a) => !family.includes(a));
    if (list.length === 0 || bad.length > 0) {
      throw new SettingsError('jwtAlgorithms', `must list algorithms from ${family.join(', ')} for this key source, got "${algorithms}"`);
    }
  }
  return { keySource, issuer: str(ctx, 'jwtIssuer'), audience: str(ctx, 'jwtAudience'), algorithms };
}

export function settingsFromContext(ctx: ContextSource): StoreSettings {
  const d = DEFAULT_SETTINGS;
  const logRetentionDays = int(ctx, 'logRetentionDays', d.logRetentionDays, 1, 3653);
  if (!LOG_RETENTION_DAYS.includes(logRetentionDays)) {
    throw new SettingsError('logRetentionDays', `must be one of ${LOG_RETENTION_DAYS.join(', ')}`);
  }
  const alarmEmail = str(ctx, 'alarmEmail');
  if (alarmEmail !== undefined && !/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(alarmEmail)) throw new SettingsError('alarmEmail', `is not an email address: "${alarmEmail}"`);
  const alarmTopicArn = str(ctx, 'alarmTopicArn');
  if (alarmTopicArn !== undefined && !SNS_TOPIC_ARN.test(alarmTopicArn)) throw new SettingsError('alarmTopicArn', `must be an SNS topic ARN, got "${alarmTopicArn}"`);
  if (alarmEmail && alarmTopicArn) throw new SettingsError('alarmEmail', 'and "alarmTopicArn" are mutually exclusive (subscribe the email to your topic instead)');
  const stackName = str(ctx, 'stackName') ?? d.stackName;
  if (!/^[A-Za-z][A-Za-z0-9-]{0,127}$/.test(stackName)) throw new SettingsError('stackName', `is not a valid CloudFormation stack name: "${stackName}"`);
  const maxSnapshotBytes = str(ctx, 'maxSnapshotBytes') === undefined ? undefined : int(ctx, 'maxSnapshotBytes', 0, 1, 6 * 1024 * 1024);

  return {
    stackName,
    jwt: jwtSettings(ctx),
    bucketEncryption: oneOf(ctx, 'bucketEncryption', ['s3', 'kms'] as const, d.bucketEncryption),
    removalPolicy: oneOf(ctx, 'removalPolicy', ['retain', 'destroy'] as const, d.removalPolicy),
    s3AccessLogs: bool(ctx, 's3AccessLogs', d.s3AccessLogs),
    logRetentionDays,
    logLevel: oneOf(ctx, 'logLevel', ['DEBUG', 'INFO', 'WARN', 'ERROR'] as const, d.logLevel),
    lambdaMemoryMb: int(ctx, 'lambdaMemoryMb', d.lambdaMemoryMb, 128, 10240),
    maxSnapshotBytes,
    throttleRateLimit: int(ctx, 'throttleRateLimit', d.throttleRateLimit, 1, 100_000),
    throttleBurstLimit: int(ctx, 'throttleBurstLimit', d.throttleBurstLimit, 1, 100_000),
    alarmEmail,
    alarmTopicArn,
    api5xxRatePercent: num(ctx, 'api5xxRatePercent', d.api5xxRatePercent, 0.01, 100),
    apiLatencyP99Ms: int(ctx, 'apiLatencyP99Ms', d.apiLatencyP99Ms, 1, 30_000),
    // At least 15 min: longer than any request can run, so the reconciler never races a live upload.
    orphanGraceSeconds: int(ctx, 'orphanGraceSeconds', d.orphanGraceSeconds, 900, 30 * 86_400),
    // The same bounds as the handlers' configuration (functions/lib/config.ts), so synth fails first.
    retainCompletedRuns: int(ctx, 'retainCompletedRuns', d.retainCompletedRuns, 1, 10_000),
    retainFailedDays: int(ctx, 'retainFailedDays', d.retainFailedDays, 1, 36_500),
    conversationTtlDays: int(ctx, 'conversationTtlDays', d.conversationTtlDays, 0, 36_500),
    retentionIntervalMinutes: int(ctx, 'retentionIntervalMinutes', d.retentionIntervalMinutes, 1, MAX_RETENTION_INTERVAL_MINUTES),
  };
}
