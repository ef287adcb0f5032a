import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';
import type { Config } from './config.js';

/**
 * SDK clients, created once per cold start and reused by warm invocations. Endpoints come from the
 * standard AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL_DYNAMODB variables (LocalStack,
 * emulators); credentials from the default provider chain.
 */
export interface ClientOverrides {
  /** Explicit endpoints (the local emulators); otherwise the SDK's standard endpoint resolution. */
  endpoints?: { s3?: string | undefined; dynamodb?: string | undefined };
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /**
   * Extra S3 client settings. Production passes none (the SDK's defaults, checksums included);
   * emulator workarounds are set by local code only (local/service.ts).
   */
  s3?: Partial<S3ClientConfig>;
}

export interface Clients {
  readonly s3: S3Client;
  readonly ddb: DynamoDBClient;
  /**
   * Signs presigned URLs only (never sends a request). With the SDK's default checksum setting a
   * presigned PutObject/UploadPart URL carries `x-amz-checksum-crc32` of an EMPTY body, so every real
   * upload to it would fail on AWS; checksums "when required" leave them out. See test/unit/aws.test.ts.
   */
  readonly presigner: S3Client;
}

/** S3 (+ presigner) and DynamoDB clients with bounded timeouts and 3 attempts. */
export function createClients(config: Pick<Config, 'region' | 's3ForcePathStyle'>, overrides: ClientOverrides = {}): Clients {
  const requestHandler = { connectionTimeout: 2_000, requestTimeout: 10_000 };
  const common = { region: config.region, ...(overrides.credentials && { credentials: overrides.credentials }) };
  const s3Config: S3ClientConfig = {
    ...common,
    ...(overrides.endpoints?.s3 && { endpoint: overrides.endpoints.s3 }),
    forcePathStyle: config.s3ForcePathStyle,
    maxAttempts: 3,
    requestHandler,
    ...overrides.s3,
  };
  const s3 = new S3Client(s3Config);
  const presigner = new S3Client({ ...s3Config, requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' });
  const ddb = new DynamoDBClient({
    ...common,
    ...(overrides.endpoints?.dynamodb && { endpoint: overrides.endpoints.dynamodb }),
    maxAttempts: 3,
    requestHandler,
  });
  return { s3, ddb, presigner };
}

/**
 * A Secrets Manager loader for HS256 keys: Powertools Parameters' SecretsProvider, which caches each value for
 * `maxAgeSeconds` (SECRET_MAX_AGE_SECONDS) so a rotated secret is picked up without a cold start; `forceFetch`
 * bypasses the cache (auth.ts asks for it, rate-limited, when a signature does not verify with the cached
 * key). The SDK and Parameters are loaded only when this source is used. Throws when the secret has no
 * SecretString, or what Secrets Manager throws.
 */
export function secretsManagerLoader(
  region: string,
  maxAgeSeconds: number,
  /** Extra client settings (tests: a local endpoint and credentials). */
  clientConfig: Record<string, unknown> = {},
): (arn: string, opts?: { readonly forceFetch?: boolean }) => Promise<string> {
  let provider: Promise<{ get(name: string, options: { maxAge: number; forceFetch?: boolean }): Promise<unknown> }> | undefined;
  return async (arn, opts) => {
    provider ??= (async () => {
      const [{ SecretsProvider }, { SecretsManagerClient }] = await Promise.all([
        import('@aws-lambda-powertools/parameters/secrets'),
        import('@aws-sdk/client-secrets-manager'),
      ]);
      return new SecretsProvider({ awsSdkV3Client: new SecretsManagerClient({ region, ...clientConfig }) });
    })();
    const value = await (await provider).get(arn, { maxAge: maxAgeSeconds, ...(opts?.forceFetch && { forceFetch: true }) });
    if (typeof value !== 'string' || value === '') throw new Error('JWT secret in Secrets Manager has no SecretString');
    return value;
  };
}
