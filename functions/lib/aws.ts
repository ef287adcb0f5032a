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

/** Loads an HS256 secret from Secrets Manager (the SDK is loaded only when this source is used). */
export async function loadSecretFromSecretsManager(region: string, arn: string): Promise<string> {
  const { SecretsManagerClient, GetSecretValueCommand } = await import('@aws-sdk/client-secrets-manager');
  const client = new SecretsManagerClient({ region });
  const res = await client.send(new GetSecretValueCommand({ SecretId: arn }));
  if (!res.SecretString) throw new Error('JWT secret in Secrets Manager has no SecretString');
  return res.SecretString;
}
