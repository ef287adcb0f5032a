/**
 * Deployment settings. One set of camelCase names, two ways in:
 * - this repository's CDK app reads them from CDK context (`-c key=value`, or `cdk.json` under `context`):
 *   {@link settingsFromContext};
 * - a platform team's own CDK app passes them as typed props of the `TranscriptStore` construct
 *   (infra/construct.ts): {@link TranscriptStoreSettings}.
 * Both go through {@link resolveSettings}, which fails synth with a message naming the setting. A setting
 * that becomes a handler variable is validated by the handlers' own rules (functions/lib/config.ts
 * `loadConfig`, run at synth on the environment the functions will get), then against the AWS limits the
 * deployment imposes on top (Lambda payload sizes, S3 part and copy sizes, API Gateway's 30 s).
 *
 * No setting ever holds a secret value: the JWT key is referenced by Secrets Manager ARN (or created
 * there with an AWS-generated value), or fetched from a public JWKS URL.
 *
 * The table in README.md § Configuration lists exactly {@link CONTEXT_KEYS} (test/infra/settings.test.ts).
 */

import { ConfigError, loadConfig, type Config } from '../functions/lib/config.js';

/** Where the handlers get the key that verifies worker JWTs. */
export type JwtKeySource =
  /** Default: a Secrets Manager secret with a generated value is created (put your gateway's key in it). */
  | { readonly kind: 'generatedSecret' }
  /** An existing secret (complete ARN, with the 6-character suffix); `kmsKeyArn` if it uses a customer key. */
  | { readonly kind: 'secretArn'; readonly arn: string; readonly kmsKeyArn: string | undefined }
  /** Asymmetric keys (RS256/ES256/EdDSA) from a JWKS endpoint, with rotation. */
  | { readonly kind: 'jwks'; readonly url: string };

/**
 * Everything a deployer may set; every one optional (the default is given on each). The same names are
 * the CDK context keys of this repository's app. Numbers may also be given as decimal strings (CDK
 * context from the command line is text).
 */
export interface TranscriptStoreSettings {
  // ------------------------------------------------------------ worker and admin tokens
  /**
   * An existing Secrets Manager secret holding the HS256 key (`SecretString` used as is). The complete ARN,
   * with the 6-character suffix: the IAM grant is on that exact ARN. Default: a secret with a generated
   * value is created. Mutually exclusive with `jwksUrl`. → `JWT_SECRET_ARN`.
   */
  readonly jwtSecretArn?: string;
  /** The customer KMS key of `jwtSecretArn`, if it has one (adds `kms:Decrypt` via Secrets Manager only). */
  readonly jwtSecretKmsKeyArn?: string;
  /** HTTPS JWKS URL for RS/PS/ES/EdDSA tokens, with key rotation. Mutually exclusive with `jwtSecretArn`. → `JWKS_URL`. */
  readonly jwksUrl?: string;
  /** Required `iss` claim, when set. → `JWT_ISSUER`. */
  readonly jwtIssuer?: string;
  /** Required `aud` claim, when set. → `JWT_AUDIENCE`. */
  readonly jwtAudience?: string;
  /**
   * Algorithm allowlist (comma-separated, or a list), from the key source's family only. Default: `HS256`,
   * or `RS256,ES256,EdDSA` with a JWKS. → `JWT_ALGORITHMS`.
   */
  readonly jwtAlgorithms?: string | readonly string[];
  /** Seconds of clock skew allowed for `exp`, `nbf`, `iat` (≥ 0, default 5). → `JWT_CLOCK_TOLERANCE_SECONDS`. */
  readonly jwtClockToleranceSeconds?: number;
  /**
   * Seconds an HS256 key from Secrets Manager is used before it is fetched again (default 300; a token signed
   * with a rotated key makes the handler fetch it at once, at most every 30 s). → `SECRET_MAX_AGE_SECONDS`.
   */
  readonly secretMaxAgeSeconds?: number;

  // ------------------------------------------------------------ limits
  /** Largest decoded snapshot a direct POST accepts, bytes (default 4 MiB, at most 6 MiB: Lambda's request payload). → `MAX_SNAPSHOT_BYTES`. */
  readonly maxSnapshotBytes?: number;
  /**
   * Largest stored object GET answers inline, bytes; larger ones are a 307 to a presigned URL (default and
   * maximum 4 MiB: inline bodies travel base64 inside Lambda's 6 MB response). → `INLINE_RESPONSE_MAX_BYTES`.
   */
  readonly inlineResponseMaxBytes?: number;
  /**
   * Lifetime of presigned GET/PUT URLs and of upload ids, seconds (default 300, at most 43,200; and
   * `2 × presignTtlSeconds + 60 ≤ orphanGraceSeconds`, so the reconciler never deletes a copy a URL
   * still names). → `PRESIGN_TTL_SECONDS`.
   */
  readonly presignTtlSeconds?: number;
  /** Largest snapshot accepted through a presigned upload, bytes (default 1 GiB, at most 5 GiB: the commit is one S3 CopyObject). → `MAX_UPLOAD_BYTES`. */
  readonly maxUploadBytes?: number;
  /** Uploads larger than this use multipart, bytes (default 64 MiB, at most 5 GiB: S3's single PUT). → `MULTIPART_THRESHOLD_BYTES`. */
  readonly multipartThresholdBytes?: number;
  /** Multipart part size, bytes (default 16 MiB; 5 MiB to 5 GiB, S3's part sizes). → `MULTIPART_PART_BYTES`. */
  readonly multipartPartBytes?: number;
  /** A chain read touches at most this many objects; compaction merges past it (≥ 1, default 3). → `CHAIN_MAX_EXTENTS`. */
  readonly chainMaxExtents?: number;
  /** Compaction keeps each chain object ≥ this many times everything after it (≥ 1, default 16). → `CHAIN_MERGE_RATIO`. */
  readonly chainMergeRatio?: number;
  /** Storage work per request gives up after this, ms → 503 (default 25,000, at most 30,000: API Gateway's timeout). → `REQUEST_DEADLINE_MS`. */
  readonly requestDeadlineMs?: number;
  /** Writers that echo no reset generation count as after a reset only this many seconds after it (≥ 0, default 0). → `LEGACY_FENCE_WINDOW_SECONDS`. */
  readonly legacyFenceWindowSeconds?: number;

  // ------------------------------------------------------------ retention
  /** The reconciler deletes unreferenced objects, and retention touches records, only when older than this, seconds (900 to 30 days, default 3,600). → `ORPHAN_GRACE_SECONDS`. */
  readonly orphanGraceSeconds?: number;
  /** Completed runs kept per conversation, the latest included (1–10,000, default 3). → `RETAIN_COMPLETED_RUNS`. */
  readonly retainCompletedRuns?: number;
  /** Days a run that did not complete is kept (1–36,500, default 7; its DynamoDB TTL is a day later). → `RETAIN_FAILED_DAYS`. */
  readonly retainFailedDays?: number;
  /** A conversation is erased this many days after its last write (0–36,500, default 0 = off). → `CONVERSATION_TTL_DAYS`. */
  readonly conversationTtlDays?: number;
  /** The retention pass runs this often, minutes (1–1,440, default 60). → `RETENTION_INTERVAL_MINUTES`. */
  readonly retentionIntervalMinutes?: number;

  // ------------------------------------------------------------ AWS resources
  /**
   * Powertools service name: the `service` field of every log line and the `service` dimension of the
   * service's metrics, which the alarms and the dashboard select (default `transcript-store`). Give each
   * instance in one account and region its own. → `POWERTOOLS_SERVICE_NAME`.
   */
  readonly serviceName?: string;
  /** `s3` (SSE-S3, default) or `kms` (a customer managed key with rotation and S3 Bucket Keys). */
  readonly bucketEncryption?: 's3' | 'kms';
  /** `retain` (default) keeps bucket, table, secret and logs when the stack is deleted; `destroy` is for throwaway stacks. */
  readonly removalPolicy?: 'retain' | 'destroy';
  /** Server access logs for the snapshot bucket into a separate bucket (default true). */
  readonly s3AccessLogs?: boolean;
  /** Lambda and API access log retention, days: a value CloudWatch Logs accepts (default 30). */
  readonly logRetentionDays?: number;
  /** Handler log level (default `INFO`). → `POWERTOOLS_LOG_LEVEL`. */
  readonly logLevel?: 'DEBUG' | 'INFO' | 'WARN' | 'ERROR';
  /** Memory (and so CPU) per function, MB (128–10,240, default 512). */
  readonly lambdaMemoryMb?: number;
  /** Stage throttling: steady requests per second (default 200). */
  readonly throttleRateLimit?: number;
  /** Stage throttling: burst (default 400). */
  readonly throttleBurstLimit?: number;

  // ------------------------------------------------------------ alarms
  /** Creates an SNS topic (TLS enforced) with this email subscription for every alarm. */
  readonly alarmEmail?: string;
  /** Sends every alarm to this existing topic instead (e.g. one encrypted with your CMK). */
  readonly alarmTopicArn?: string;
  /** Alarm when 5xx answers exceed this percentage of requests (0.01–100, default 5). */
  readonly api5xxRatePercent?: number;
  /** Alarm when API p99 latency exceeds this, ms (default 3,000). */
  readonly apiLatencyP99Ms?: number;
}

/**
 * The handler variable each setting becomes (functions/lib/config.ts, or Powertools), or `undefined` for
 * settings of the AWS resources themselves. One entry per setting: the compiler holds this to
 * {@link TranscriptStoreSettings}, and README.md § Configuration to this.
 */
export const SETTING_VARIABLES = {
  jwtSecretArn: 'JWT_SECRET_ARN',
  jwtSecretKmsKeyArn: undefined,
  jwksUrl: 'JWKS_URL',
  jwtIssuer: 'JWT_ISSUER',
  jwtAudience: 'JWT_AUDIENCE',
  jwtAlgorithms: 'JWT_ALGORITHMS',
  jwtClockToleranceSeconds: 'JWT_CLOCK_TOLERANCE_SECONDS',
  secretMaxAgeSeconds: 'SECRET_MAX_AGE_SECONDS',
  maxSnapshotBytes: 'MAX_SNAPSHOT_BYTES',
  inlineResponseMaxBytes: 'INLINE_RESPONSE_MAX_BYTES',
  presignTtlSeconds: 'PRESIGN_TTL_SECONDS',
  maxUploadBytes: 'MAX_UPLOAD_BYTES',
  multipartThresholdBytes: 'MULTIPART_THRESHOLD_BYTES',
  multipartPartBytes: 'MULTIPART_PART_BYTES',
  chainMaxExtents: 'CHAIN_MAX_EXTENTS',
  chainMergeRatio: 'CHAIN_MERGE_RATIO',
  requestDeadlineMs: 'REQUEST_DEADLINE_MS',
  legacyFenceWindowSeconds: 'LEGACY_FENCE_WINDOW_SECONDS',
  orphanGraceSeconds: 'ORPHAN_GRACE_SECONDS',
  retainCompletedRuns: 'RETAIN_COMPLETED_RUNS',
  retainFailedDays: 'RETAIN_FAILED_DAYS',
  conversationTtlDays: 'CONVERSATION_TTL_DAYS',
  retentionIntervalMinutes: 'RETENTION_INTERVAL_MINUTES',
  serviceName: 'POWERTOOLS_SERVICE_NAME',
  bucketEncryption: undefined,
  removalPolicy: undefined,
  s3AccessLogs: undefined,
  logRetentionDays: undefined,
  logLevel: 'POWERTOOLS_LOG_LEVEL',
  lambdaMemoryMb: undefined,
  throttleRateLimit: undefined,
  throttleBurstLimit: undefined,
  alarmEmail: undefined,
  alarmTopicArn: undefined,
  api5xxRatePercent: undefined,
  apiLatencyP99Ms: undefined,
} as const satisfies { readonly [K in keyof Required<TranscriptStoreSettings>]: string | undefined };

export type SettingKey = keyof typeof SETTING_VARIABLES;

/** Every setting's name, in the order of {@link TranscriptStoreSettings}. */
export const SETTING_KEYS = Object.keys(SETTING_VARIABLES) as SettingKey[];

/** A CDK context key of this repository's app. */
export type ContextKey = SettingKey | 'stackName';

/** What this repository's CDK app reads from context: every setting, and the stack's name. */
export const CONTEXT_KEYS: readonly ContextKey[] = [...SETTING_KEYS, 'stackName'];

/**
 * The numeric handler settings, each with its field in the handlers' Config. The route functions get
 * one in their environment when its value differs from the handlers' default; the scheduled functions
 * always get the ones they read (see the construct).
 */
export const NUMERIC_SERVICE_SETTINGS = {
  jwtClockToleranceSeconds: 'clockToleranceSeconds',
  secretMaxAgeSeconds: 'secretMaxAgeSeconds',
  maxSnapshotBytes: 'maxSnapshotBytes',
  inlineResponseMaxBytes: 'inlineMaxBytes',
  presignTtlSeconds: 'presignTtlSeconds',
  maxUploadBytes: 'maxUploadBytes',
  multipartThresholdBytes: 'multipartThresholdBytes',
  multipartPartBytes: 'multipartPartBytes',
  chainMaxExtents: 'chainMaxExtents',
  chainMergeRatio: 'chainMergeRatio',
  requestDeadlineMs: 'requestDeadlineMs',
  legacyFenceWindowSeconds: 'legacyFenceWindowSeconds',
  orphanGraceSeconds: 'orphanGraceSeconds',
  retainCompletedRuns: 'retainCompletedRuns',
  retainFailedDays: 'retainFailedDays',
  conversationTtlDays: 'conversationTtlDays',
  retentionIntervalMinutes: 'retentionIntervalMinutes',
} as const satisfies Partial<Record<SettingKey, keyof Config>>;

export type NumericServiceSetting = keyof typeof NUMERIC_SERVICE_SETTINGS;

/** Settings that may stay unset after resolution (no default value: the feature is off, or the handler decides). */
type Unsettable = 'jwtSecretArn' | 'jwtSecretKmsKeyArn' | 'jwksUrl' | 'jwtIssuer' | 'jwtAudience' | 'jwtAlgorithms' | 'alarmEmail' | 'alarmTopicArn';

/**
 * Settings after validation, every default applied: the values in effect (numbers are what the handlers
 * will run with). `jwtAlgorithms` is comma-separated. Assignable to {@link TranscriptStoreSettings}, and
 * resolving it again gives it back.
 */
export type StoreSettings = Readonly<Required<Omit<TranscriptStoreSettings, Unsettable>>> & { readonly [K in Unsettable]: string | undefined };

/** The settings of this repository's app: the store's, and the CloudFormation stack's name. */
export type AppSettings = StoreSettings & { readonly stackName: string };

/** A setting that fails validation; the message names it (and its handler variable, if it has one). */
export class SettingsError extends Error {
  constructor(
    readonly setting: string,
    problem: string,
  ) {
    const variable = (SETTING_VARIABLES as Record<string, string | undefined>)[setting];
    super(`Invalid transcript-store setting "${setting}"${variable ? ` (${variable})` : ''}: ${problem}`);
    this.name = 'SettingsError';
  }
}

/** Retention values CloudWatch Logs accepts (days). */
export const LOG_RETENTION_DAYS = [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653] as const;

const SECRET_ARN = /^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+-[A-Za-z0-9]{6}$/;
const KMS_KEY_ARN = /^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key\/[A-Za-z0-9-]+$/;
const SNS_TOPIC_ARN = /^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]+$/;
/** A CloudWatch dimension value and log field that stays readable: letters, digits, `.`, `_`, `-`. */
const SERVICE_NAME = /^[A-Za-z0-9._-]{1,64}$/;

const MIB = 1024 * 1024;
const GIB = 1024 * MIB;
/**
 * AWS limits the handler settings must respect on top of the handlers' own rules. Each is checked after
 * `loadConfig` accepted the value, so `value` is a whole number.
 */
export const AWS_LIMITS = {
  /** Lambda's synchronous request payload (6 MB): a direct POST's body carries the snapshot JSON-escaped. */
  maxSnapshotBytes: 6 * MIB,
  /** Inline GET bodies are base64 (4/3) in Lambda's 6 MB (6,291,456 B) response; 4 MiB → 5.59 MB leaves room for headers. */
  inlineResponseMaxBytes: 4 * MIB,
  /**
   * Upload ids and URLs must not outlive the 1-day lifecycle rules on uploads/ and materialized/ (a copy
   * may be handed out up to one TTL after it was made, then used for one more).
   */
  presignTtlSeconds: 43_200,
  /** The commit copies the upload under snapshots/ with one CopyObject (at most 5 GiB). */
  maxUploadBytes: 5 * GIB,
  /** Below the threshold an upload is one presigned PUT (at most 5 GiB). */
  multipartThresholdBytes: 5 * GIB,
  /** S3's largest part. */
  multipartPartBytes: 5 * GIB,
  /** API Gateway ends every integration at 30 s. */
  requestDeadlineMs: 30_000,
  /** Longer would keep orphans (and records retention waits for) for over a month. */
  orphanGraceSeconds: 30 * 86_400,
} as const satisfies Partial<Record<NumericServiceSetting, number>>;

// ---------------------------------------------------------------- reading one value

/** The value as given, or undefined when absent, null or blank text. Text is trimmed. */
function given(input: Readonly<Record<string, unknown>>, key: string): unknown {
  const v = input[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'string') return v.trim() === '' ? undefined : v.trim();
  return v;
}

/** Text, from a string, number or boolean (CDK context may hold any of them). */
function text(input: Readonly<Record<string, unknown>>, key: string): string | undefined {
  const v = given(input, key);
  if (v === undefined) return undefined;
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  throw new SettingsError(key, `must be a string, number or boolean, got ${JSON.stringify(v)}`);
}

/** A number (or decimal text) in [min, max]; whole when `integer`. */
function numberIn(input: Readonly<Record<string, unknown>>, key: string, fallback: number, min: number, max: number, integer = true): number {
  const raw = text(input, key);
  if (raw === undefined) return fallback;
  const n = Number(raw);
  const kind = integer ? 'a whole number' : 'a number';
  if (!/^-?\d+(\.\d+)?$/.test(raw) || !Number.isFinite(n) || (integer && !Number.isInteger(n)) || n < min || n > max) {
    throw new SettingsError(key, `must be ${kind} in [${min}, ${max}], got "${raw}"`);
  }
  return n;
}

function oneOf<T extends string>(input: Readonly<Record<string, unknown>>, key: string, allowed: readonly T[], fallback: T): T {
  const raw = text(input, key);
  if (raw === undefined) return fallback;
  const v = allowed.find((a) => a.toLowerCase() === raw.toLowerCase());
  if (v === undefined) throw new SettingsError(key, `must be one of ${allowed.join(', ')}, got "${raw}"`);
  return v;
}

function bool(input: Readonly<Record<string, unknown>>, key: string, fallback: boolean): boolean {
  const raw = text(input, key)?.toLowerCase();
  if (raw === undefined) return fallback;
  if (raw === 'true' || raw === '1' || raw === 'yes') return true;
  if (raw === 'false' || raw === '0' || raw === 'no') return false;
  throw new SettingsError(key, `must be true or false, got "${raw}"`);
}

// ---------------------------------------------------------------- the JWT key source

interface JwtResolved {
  readonly jwtSecretArn: string | undefined;
  readonly jwtSecretKmsKeyArn: string | undefined;
  readonly jwksUrl: string | undefined;
  readonly jwtIssuer: string | undefined;
  readonly jwtAudience: string | undefined;
  readonly jwtAlgorithms: string | undefined;
}

function jwtSettings(input: Readonly<Record<string, unknown>>): JwtResolved {
  const arn = text(input, 'jwtSecretArn');
  const kmsKeyArn = text(input, 'jwtSecretKmsKeyArn');
  const jwks = text(input, 'jwksUrl');
  if (arn && jwks) throw new SettingsError('jwtSecretArn', 'and "jwksUrl" are mutually exclusive: set at most one key source');
  if (kmsKeyArn && !arn) throw new SettingsError('jwtSecretKmsKeyArn', 'only applies together with "jwtSecretArn"');
  if (arn && !SECRET_ARN.test(arn)) {
    throw new SettingsError('jwtSecretArn', `must be the complete Secrets Manager ARN (ending in the 6-character suffix, e.g. "...:secret:name-AbCdEf"), got "${arn}"`);
  }
  if (kmsKeyArn && !KMS_KEY_ARN.test(kmsKeyArn)) throw new SettingsError('jwtSecretKmsKeyArn', `must be a KMS key ARN, got "${kmsKeyArn}"`);
  let jwksUrl: string | undefined;
  if (jwks) {
    let url: URL;
    try {
      url = new URL(jwks);
    } catch {
      throw new SettingsError('jwksUrl', `must be an absolute URL, got "${jwks}"`);
    }
    if (url.protocol !== 'https:') throw new SettingsError('jwksUrl', 'must use https');
    jwksUrl = url.toString();
  }
  const rawAlgorithms = given(input, 'jwtAlgorithms');
  if (Array.isArray(rawAlgorithms) && rawAlgorithms.length === 0) throw new SettingsError('jwtAlgorithms', 'must list at least one algorithm (leave it unset for the default)');
  const algorithms = Array.isArray(rawAlgorithms) ? rawAlgorithms.map(String).join(',') : text(input, 'jwtAlgorithms');
  return { jwtSecretArn: arn, jwtSecretKmsKeyArn: kmsKeyArn, jwksUrl, jwtIssuer: text(input, 'jwtIssuer'), jwtAudience: text(input, 'jwtAudience'), jwtAlgorithms: algorithms };
}

/** The key source the settings select. */
export function jwtKeySource(settings: Pick<StoreSettings, 'jwtSecretArn' | 'jwtSecretKmsKeyArn' | 'jwksUrl'>): JwtKeySource {
  if (settings.jwtSecretArn) return { kind: 'secretArn', arn: settings.jwtSecretArn, kmsKeyArn: settings.jwtSecretKmsKeyArn };
  if (settings.jwksUrl) return { kind: 'jwks', url: settings.jwksUrl };
  return { kind: 'generatedSecret' };
}

// ---------------------------------------------------------------- the handler settings

/** Stands in for the key source at synth (never deployed): `loadConfig` needs exactly one. */
const PLACEHOLDER_SECRET_ARN = 'arn:aws:secretsmanager:us-east-1:000000000000:secret:synth-placeholder-AbCdEf';

/**
 * The handlers' configuration for these settings: `loadConfig` (functions/lib/config.ts) on the
 * environment the functions will get, so the handlers' own rules and defaults apply at synth. A
 * ConfigError becomes a SettingsError naming the setting.
 */
function handlerConfig(input: Readonly<Record<string, unknown>>, jwt: JwtResolved): Config {
  const env: Record<string, string> = {
    AWS_REGION: 'us-east-1',
    BUCKET_NAME: 'synth',
    TABLE_NAME: 'synth',
    ...(jwt.jwksUrl ? { JWKS_URL: jwt.jwksUrl } : { JWT_SECRET_ARN: jwt.jwtSecretArn ?? PLACEHOLDER_SECRET_ARN }),
    ...(jwt.jwtAlgorithms !== undefined && { JWT_ALGORITHMS: jwt.jwtAlgorithms }),
  };
  for (const key of Object.keys(NUMERIC_SERVICE_SETTINGS) as NumericServiceSetting[]) {
    const v = given(input, key);
    if (v === undefined) continue;
    if (typeof v === 'boolean' || (typeof v !== 'number' && typeof v !== 'string')) throw new SettingsError(key, `must be a whole number, got ${JSON.stringify(v)}`);
    env[SETTING_VARIABLES[key]] = String(v);
  }
  try {
    return loadConfig(env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    const prefix = `Invalid configuration: ${err.variable} `;
    const problem = err.message.startsWith(prefix) ? err.message.slice(prefix.length) : err.message;
    const key = SETTING_KEYS.find((k) => err.variable.split(', ').includes(SETTING_VARIABLES[k] ?? ''));
    if (key === undefined) throw err;
    throw new SettingsError(key, problem);
  }
}

/** The deployment's own bounds (see {@link AWS_LIMITS}), on values the handlers' rules accepted. */
function checkAwsLimits(config: Config): void {
  const value = (key: keyof typeof AWS_LIMITS): number => config[NUMERIC_SERVICE_SETTINGS[key]];
  const over = (key: keyof typeof AWS_LIMITS, why: string) => {
    if (value(key) > AWS_LIMITS[key]) throw new SettingsError(key, `must be at most ${AWS_LIMITS[key]} (${why}), got ${value(key)}`);
  };
  over('maxSnapshotBytes', "Lambda's 6 MB request payload");
  over('inlineResponseMaxBytes', "inline bodies are base64 inside Lambda's 6 MB response");
  over('presignTtlSeconds', 'uploads/ and materialized/ copies expire after a day');
  over('maxUploadBytes', 'the commit copies the upload with one S3 CopyObject, 5 GiB at most');
  over('multipartThresholdBytes', "S3's largest single PUT");
  over('multipartPartBytes', "S3's largest part");
  over('requestDeadlineMs', 'API Gateway ends every integration at 30 s');
  over('orphanGraceSeconds', '30 days');
  // The reconciler deletes materialized copies older than max(grace, 2 × its presign TTL + 60 s) and
  // reads only its own settings (not PRESIGN_TTL_SECONDS): the grace alone must cover a copy's URLs.
  if (2 * config.presignTtlSeconds + 60 > config.orphanGraceSeconds) {
    throw new SettingsError(
      'presignTtlSeconds',
      `2 × presignTtlSeconds + 60 must not exceed orphanGraceSeconds (${config.orphanGraceSeconds}), or the reconciler could delete a copy a URL still names; got ${config.presignTtlSeconds} (raise orphanGraceSeconds to at least ${2 * config.presignTtlSeconds + 60})`,
    );
  }
}

// ---------------------------------------------------------------- all of it

/**
 * Validates settings (typed props, or CDK context values: numbers and booleans may be text) and applies
 * every default. Throws SettingsError naming the first setting that is wrong; keys it does not know are
 * ignored here (settingsFromContext rejects unknown context keys).
 */
export function resolveSettings(settings: TranscriptStoreSettings | Readonly<Record<string, unknown>> = {}): StoreSettings {
  const input = settings as Readonly<Record<string, unknown>>;
  const jwt = jwtSettings(input);
  const config = handlerConfig(input, jwt);
  checkAwsLimits(config);

  const logRetentionDays = numberIn(input, 'logRetentionDays', 30, 1, 3653);
  if (!(LOG_RETENTION_DAYS as readonly number[]).includes(logRetentionDays)) {
    throw new SettingsError('logRetentionDays', `must be one of ${LOG_RETENTION_DAYS.join(', ')}, got ${logRetentionDays}`);
  }
  const alarmEmail = text(input, 'alarmEmail');
  if (alarmEmail !== undefined && !/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(alarmEmail)) throw new SettingsError('alarmEmail', `is not an email address: "${alarmEmail}"`);
  const alarmTopicArn = text(input, 'alarmTopicArn');
  if (alarmTopicArn !== undefined && !SNS_TOPIC_ARN.test(alarmTopicArn)) throw new SettingsError('alarmTopicArn', `must be an SNS topic ARN, got "${alarmTopicArn}"`);
  if (alarmEmail && alarmTopicArn) throw new SettingsError('alarmEmail', 'and "alarmTopicArn" are mutually exclusive (subscribe the email to your topic instead)');
  const serviceName = text(input, 'serviceName') ?? 'transcript-store';
  if (!SERVICE_NAME.test(serviceName)) throw new SettingsError('serviceName', `must be 1 to 64 letters, digits, ".", "_" or "-", got "${serviceName}"`);

  const numeric = Object.fromEntries(
    (Object.keys(NUMERIC_SERVICE_SETTINGS) as NumericServiceSetting[]).map((k) => [k, config[NUMERIC_SERVICE_SETTINGS[k]]]),
  ) as Record<NumericServiceSetting, number>;

  return Object.freeze({
    ...jwt,
    ...numeric,
    serviceName,
    bucketEncryption: oneOf(input, 'bucketEncryption', ['s3', 'kms'] as const, 's3'),
    removalPolicy: oneOf(input, 'removalPolicy', ['retain', 'destroy'] as const, 'retain'),
    s3AccessLogs: bool(input, 's3AccessLogs', true),
    logRetentionDays,
    logLevel: oneOf(input, 'logLevel', ['DEBUG', 'INFO', 'WARN', 'ERROR'] as const, 'INFO'),
    lambdaMemoryMb: numberIn(input, 'lambdaMemoryMb', 512, 128, 10_240),
    throttleRateLimit: numberIn(input, 'throttleRateLimit', 200, 1, 100_000),
    throttleBurstLimit: numberIn(input, 'throttleBurstLimit', 400, 1, 100_000),
    alarmEmail,
    alarmTopicArn,
    api5xxRatePercent: numberIn(input, 'api5xxRatePercent', 5, 0.01, 100, false),
    apiLatencyP99Ms: numberIn(input, 'apiLatencyP99Ms', 3000, 1, 30_000),
  });
}

/** Every default (what an empty configuration deploys). */
export const DEFAULT_SETTINGS: StoreSettings = resolveSettings({});

/** Anything with `tryGetContext`, e.g. `app.node`; `getAllContext` lets unknown keys be reported. */
export interface ContextSource {
  tryGetContext(key: string): unknown;
  getAllContext?(): Record<string, unknown>;
}

/** Edit distance, for "did you mean" (keys are short). */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const above = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, diagonal + (a[i - 1] === b[j - 1] ? 0 : 1));
      diagonal = above;
    }
  }
  return row[b.length]!;
}

/**
 * A plain camelCase context key (not a feature flag `@aws-cdk/...`, a lookup `key:...`, or CDK's own
 * `aws:cdk:...`) that this app does not read: almost always a typo that would otherwise be ignored
 * silently. Throws naming it, and the nearest known key.
 */
function rejectUnknownKeys(ctx: ContextSource): void {
  const all = ctx.getAllContext?.() ?? {};
  for (const key of Object.keys(all)) {
    if (!/^[a-z][A-Za-z0-9]*$/.test(key) || (CONTEXT_KEYS as readonly string[]).includes(key)) continue;
    const nearest = [...CONTEXT_KEYS].sort((a, b) => distance(key.toLowerCase(), a.toLowerCase()) - distance(key.toLowerCase(), b.toLowerCase()))[0]!;
    const hint = distance(key.toLowerCase(), nearest.toLowerCase()) <= 3 ? `did you mean "${nearest}"? ` : '';
    throw new Error(`Unknown CDK context key "${key}": ${hint}the settings are listed in README.md § Configuration`);
  }
}

/**
 * This repository's app: every setting from CDK context (see README.md § Configuration), validated by
 * {@link resolveSettings}, and the stack's name. Unknown camelCase context keys fail synth.
 */
export function settingsFromContext(ctx: ContextSource): AppSettings {
  rejectUnknownKeys(ctx);
  const input = Object.fromEntries(SETTING_KEYS.map((k) => [k, ctx.tryGetContext(k)]));
  const settings = resolveSettings(input);
  const stackName = text({ stackName: ctx.tryGetContext('stackName') }, 'stackName') ?? 'TranscriptStore';
  if (!/^[A-Za-z][A-Za-z0-9-]{0,127}$/.test(stackName)) throw new SettingsError('stackName', `is not a valid CloudFormation stack name: "${stackName}"`);
  return Object.freeze({ ...settings, stackName });
}
