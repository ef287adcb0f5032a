import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Logger } from '@aws-lambda-powertools/logger';
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { S3Client } from '@aws-sdk/client-s3';
import { createApp, type Routes } from '../functions/lib/app.js';
import { createClients, type ClientOverrides } from '../functions/lib/aws.js';
import { loadConfig, type Config } from '../functions/lib/config.js';
import { SNAPSHOT_PATH, UPLOADS_PATH } from '../functions/lib/contract.js';
import type { SnapshotStore } from '../functions/lib/store/index.js';
import { startAdapter, type RouteTable } from './adapter.js';
import { loadOrCreateDevSecret, mintDevToken, type DevTokenClaims } from './dev-secret.js';
import { startEmulators, type Emulators } from './emulators.js';
import { ensureBucket, ensureTable } from './provision.js';

export interface LocalServiceOptions {
  /** Where emulator data and the dev secret live. Omitted: a temp dir, removed on stop (tests). */
  dataDir?: string;
  port?: number;
  host?: string;
  /** Environment to configure from (defaults to process.env). AWS_ENDPOINT_URL* switch off the emulators. */
  env?: Readonly<Record<string, string | undefined>>;
  /** Logger for the handlers; defaults to a Powertools logger honouring POWERTOOLS_LOG_LEVEL. */
  logger?: Logger;
}

export interface LocalService {
  readonly url: string;
  readonly config: Config;
  readonly s3: S3Client;
  readonly ddb: DynamoDBClient;
  readonly store: SnapshotStore;
  readonly routes: Routes;
  /** Embedded emulators, when used (undefined against LocalStack/AWS). */
  readonly emulators: Emulators | undefined;
  mintToken(claims: DevTokenClaims): Promise<string>;
  stop(): Promise<void>;
}

export const DEFAULT_LOCAL_NAME = 'transcript-store-local';

export function routeTable(routes: Routes): RouteTable {
  return {
    [`GET ${SNAPSHOT_PATH}`]: routes.getSnapshot,
    [`POST ${SNAPSHOT_PATH}`]: routes.postSnapshot,
    [`DELETE ${SNAPSHOT_PATH}`]: routes.deleteSnapshot,
    [`POST ${UPLOADS_PATH}`]: routes.createUpload,
  };
}

/**
 * Runs the real handlers behind the HTTP adapter, on the embedded emulators (or on the endpoints in
 * AWS_ENDPOINT_URL* — LocalStack or AWS). Used by `npm start` and by the integration tests.
 */
export async function startLocalService(opts: LocalServiceOptions = {}): Promise<LocalService> {
  const baseEnv = opts.env ?? process.env;
  const ephemeral = opts.dataDir === undefined;
  const dataDir = ephemeral ? await mkdtemp(join(tmpdir(), 'transcript-store-')) : resolve(opts.dataDir!);
  const external = Boolean(baseEnv['AWS_ENDPOINT_URL'] || baseEnv['AWS_ENDPOINT_URL_S3'] || baseEnv['AWS_ENDPOINT_URL_DYNAMODB']);

  const cleanup: (() => Promise<void>)[] = [];
  try {
    const secret =
      baseEnv['JWT_SECRET_ARN'] || baseEnv['JWKS_URL'] ? undefined : await loadOrCreateDevSecret(dataDir, baseEnv);
    const env = {
      AWS_REGION: 'us-east-1',
      BUCKET_NAME: DEFAULT_LOCAL_NAME,
      TABLE_NAME: DEFAULT_LOCAL_NAME,
      ...baseEnv,
      ...(secret !== undefined && { JWT_SECRET: secret }),
      // With a JWKS there is no shared secret to derive the upload-id signing key from: a dev one.
      ...(baseEnv['JWKS_URL'] &&
        !baseEnv['UPLOAD_ID_SECRET'] &&
        !baseEnv['UPLOAD_ID_SECRET_ARN'] && { UPLOAD_ID_SECRET: await loadOrCreateDevSecret(dataDir, baseEnv, { name: 'UPLOAD_ID_SECRET', file: 'dev-upload-id-secret' }) }),
    };
    const config = loadConfig(env);

    let emulators: Emulators | undefined;
    // External endpoints come from the env we were given (which may not be process.env), so pass
    // them explicitly rather than relying on the SDK reading process.env; likewise credentials.
    const pick = (name: string) => baseEnv[name] || baseEnv['AWS_ENDPOINT_URL'] || undefined;
    const keyId = baseEnv['AWS_ACCESS_KEY_ID'];
    const secretKey = baseEnv['AWS_SECRET_ACCESS_KEY'];
    let overrides: ClientOverrides = {
      endpoints: { s3: pick('AWS_ENDPOINT_URL_S3'), dynamodb: pick('AWS_ENDPOINT_URL_DYNAMODB') },
      ...(keyId && secretKey && { credentials: { accessKeyId: keyId, secretAccessKey: secretKey, ...(baseEnv['AWS_SESSION_TOKEN'] && { sessionToken: baseEnv['AWS_SESSION_TOKEN'] }) } }),
    };
    if (!external) {
      emulators = await startEmulators({ dataDir, persistDynamo: !ephemeral, host: '127.0.0.1' });
      cleanup.push(() => emulators!.stop());
      overrides = {
        endpoints: { s3: emulators.s3Endpoint, dynamodb: emulators.dynamodbEndpoint },
        credentials: emulators.credentials,
        // s3rver stores a streamed body sent aws-chunked (the SDK's default checksum mode) framing and
        // all: silent corruption. Checksums only where the API requires them, for the emulator only.
        s3: { requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' },
      };
    }
    const { s3, ddb, presigner } = createClients({ region: config.region, s3ForcePathStyle: external ? config.s3ForcePathStyle : true }, overrides);
    cleanup.push(async () => {
      s3.destroy();
      ddb.destroy();
      presigner.destroy();
    });
    await ensureBucket(s3, config.bucketName);
    await ensureTable(ddb, config.tableName);

    const logger = opts.logger ?? new Logger({ serviceName: 'transcript-store' });
    const { store, routes } = createApp(config, { s3, ddb, presigner }, logger);
    const http = await startAdapter(routeTable(routes), { host: opts.host ?? '127.0.0.1', port: opts.port ?? 0 });
    cleanup.push(() => http.close());

    let stopped = false;
    return {
      url: http.url,
      config,
      s3,
      ddb,
      store,
      routes,
      emulators,
      mintToken: (claims) => {
        if (secret === undefined) throw new Error('mintToken needs an HS256 secret (JWT_SECRET or the dev secret)');
        return mintDevToken(secret, claims);
      },
      async stop() {
        if (stopped) return;
        stopped = true;
        await runCleanup(cleanup);
        if (ephemeral) await rm(dataDir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await runCleanup(cleanup);
    if (ephemeral) await rm(dataDir, { recursive: true, force: true });
    throw err;
  }
}

async function runCleanup(steps: (() => Promise<void>)[]): Promise<void> {
  for (const step of steps.reverse()) {
    try {
      await step();
    } catch {
      // best effort on shutdown
    }
  }
}
