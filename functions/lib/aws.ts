import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { S3Client } from '@aws-sdk/client-s3';
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
}

export function createClients(
  config: Pick<Config, 'region' | 's3ForcePathStyle'>,
  overrides: ClientOverrides = {},
): { s3: S3Client; ddb: DynamoDBClient } {
  const requestHandler = { connectionTimeout: 2_000, requestTimeout: 10_000 };
  const common = { region: config.region, ...(overrides.credentials && { credentials: overrides.credentials }) };
  const s3 = new S3Client({
    ...common,
    ...(overrides.endpoints?.s3 && { endpoint: overrides.endpoints.s3 }),
    forcePathStyle: config.s3ForcePathStyle,
    // Checksums only where the API requires them: with the default (WHEN_SUPPORTED) a streamed body is
    // sent aws-chunked, which s3rver stores framing and all (silent corruption). Valid on AWS too.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts: 3,
    requestHandler,
  });
  const ddb = new DynamoDBClient({
    ...common,
    ...(overrides.endpoints?.dynamodb && { endpoint: overrides.endpoints.dynamodb }),
    maxAttempts: 3,
    requestHandler,
  });
  return { s3, ddb };
}

/** Loads an HS256 secret from Secrets Manager (the SDK is loaded only when this source is used). */
export async function loadSecretFromSecretsManager(region: string, arn: string): Promise<string> {
  const { SecretsManagerClient, GetSecretValueCommand } = await import('@aws-sdk/client-secrets-manager');
  const client = new SecretsManagerClient({ region });
  const res = await client.send(new GetSecretValueCommand({ SecretId: arn }));
  if (!res.SecretString) throw new Error('JWT secret in Secrets Manager has no SecretString');
  return res.SecretString;
}
