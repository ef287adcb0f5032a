import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Logger } from '@aws-lambda-powertools/logger';
import { DeleteTableCommand, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { S3Client } from '@aws-sdk/client-s3';
import { createApp, type Routes } from '../functions/lib/app.js';
import { createClients, type ClientOverrides } from '../functions/lib/aws.js';
import { loadConfig, type Config } from '../functions/lib/config.js';
import { ADMIN_PATHS, HEALTH_PATH, OPENAPI_PATH, SNAPSHOT_PATH, UPLOADS_PATH } from '../functions/lib/contract.js';
import type { LambdaHttpHandler } from '../functions/lib/http.js';
import type { RetentionResult, SnapshotStore } from '../functions/lib/store/index.js';
import { startAdapter, type RouteTable } from './adapter.js';
import { consoleAssets, consoleRoute } from '../functions/lib/routes/console.js';
import { CONSOLE_PATH } from '../functions/lib/routes/console-files.js';
import { buildConsoleAssets } from '../console/build.js';
import { loadOrCreateDevSecret, mintDevAdminToken, mintDevToken, type DevAdminTokenClaims, type DevTokenClaims } from './dev-secret.js';
import { startEmulators, type Emulators } from './emulators.js';
import { ensureBucket, ensureTable } from './provision.js';

export interface LocalServiceOptions {
  /** Where emulator data and the dev secret live. Omitted: a temp dir, removed on stop (tests). */
  dataDir?: string;
  port?: number;
  host?: string;
  /**
   * Environment to configure from (defaults to process.env). Each store is chosen on its own:
   * `AWS_ENDPOINT_URL_S3` (or `AWS_ENDPOINT_URL`) makes S3 external, `AWS_ENDPOINT_URL_DYNAMODB` (or
   * `AWS_ENDPOINT_URL`) makes DynamoDB external; a store without an endpoint stays embedded.
   */
  env?: Readonly<Record<string, string | undefined>>;
  /**
   * Use a table of its own, `<TABLE_NAME>-<uuid>`, created on start and deleted on stop: for several
   * services sharing one external DynamoDB (parallel test files on DynamoDB Local). Defaults to
   * `LOCAL_FRESH_TABLE=1` in the env. Ignored when DynamoDB is embedded (each instance has its own).
   */
  freshTable?: boolean;
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
  /**
   * Embedded emulators, when at least one store is embedded (undefined when both are external:
   * LocalStack/AWS). Only the stores `storage` marks `embedded` are actually used.
   */
  readonly emulators: Emulators | undefined;
  /** Where each store lives. */
  readonly storage: { readonly s3: StoreLocation; readonly dynamodb: StoreLocation };
  /** The endpoint each client talks to (undefined: the SDK's standard resolution, i.e. AWS). */
  readonly endpoints: { readonly s3: string | undefined; readonly dynamodb: string | undefined };
  mintToken(claims: DevTokenClaims): Promise<string>;
  /** An admin token (operator API, console) for `claims.org`; HS256 with the same secret as {@link mintToken}. */
  mintAdminToken(claims: DevAdminTokenClaims): Promise<string>;
  /**
   * Runs a retention pass now (docs/DESIGN.md § Retention) and answers its counts. Passes never overlap: a
   * call while one runs (the timer's, or another call's) waits for it, then runs its own.
   */
  runRetention(): Promise<RetentionResult>;
  stop(): Promise<void>;
}

export const DEFAULT_LOCAL_NAME = 'transcript-store-local';

/** `embedded`: s3rver / dynalite in this process; `external`: the endpoint from the env. */
export type StoreLocation = 'embedded' | 'external';

/** Which store is external, from the standard SDK endpoint variables (each store on its own). */
export function storeLocations(env: Readonly<Record<string, string | undefined>>): { s3: StoreLocation; dynamodb: StoreLocation } {
  const any = Boolean(env['AWS_ENDPOINT_URL']);
  return {
    s3: any || env['AWS_ENDPOINT_URL_S3'] ? 'external' : 'embedded',
    dynamodb: any || env['AWS_ENDPOINT_URL_DYNAMODB'] ? 'external' : 'embedded',
  };
}

/**
 * The operator console's routes, as on AWS: one handler behind `GET /console` (the page) and
 * `GET /console/{asset}` (its files; an unknown one is the handler's `404 not_found`, with the console's
 * security headers).
 */
export function consoleRouteTable(handler: LambdaHttpHandler): RouteTable {
  return { [`GET ${CONSOLE_PATH}`]: handler, [`GET ${CONSOLE_PATH}/{asset}`]: handler };
}

/**
 * The local route table (`"<METHOD> <path>"` → handler) of the worker, operator and public routes, as on
 * API Gateway (infra/routes.ts); the console's paths are {@link consoleRouteTable}'s.
 */
export function routeTable(routes: Routes): RouteTable {
  return {
    [`GET ${SNAPSHOT_PATH}`]: routes.getSnapshot,
    [`POST ${SNAPSHOT_PATH}`]: routes.postSnapshot,
    [`DELETE ${SNAPSHOT_PATH}`]: routes.deleteSnapshot,
    [`POST ${UPLOADS_PATH}`]: routes.createUpload,
    [`GET ${ADMIN_PATHS.conversations}`]: routes.adminConversations,
    [`GET ${ADMIN_PATHS.runs}`]: routes.adminRuns,
    [`GET ${ADMIN_PATHS.run}`]: routes.adminRun,
    [`GET ${ADMIN_PATHS.lines}`]: routes.adminLines,
    [`GET ${ADMIN_PATHS.agents}`]: routes.adminAgents,
    [`POST ${ADMIN_PATHS.erasures}`]: routes.adminErase,
    [`GET ${ADMIN_PATHS.erasures}`]: routes.adminReceipts,
    [`GET ${ADMIN_PATHS.erasure}`]: routes.adminReceipt,
    [`GET ${HEALTH_PATH}`]: routes.health,
    [`GET ${OPENAPI_PATH}`]: routes.openApi,
  };
}

/**
 * Runs the real handlers behind the HTTP adapter. Each store is embedded (s3rver, dynalite) unless its
 * endpoint is set (`AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL_DYNAMODB`, or `AWS_ENDPOINT_URL` for both:
 * LocalStack, AWS, DynamoDB Local); setting one replaces only that store. Used by `npm start` and by
 * the integration tests.
 */
export async function startLocalService(opts: LocalServiceOptions = {}): Promise<LocalService> {
  const baseEnv = opts.env ?? process.env;
  const ephemeral = opts.dataDir === undefined;
  const dataDir = ephemeral ? await mkdtemp(join(tmpdir(), 'transcript-store-')) : resolve(opts.dataDir!);
  const where = storeLocations(baseEnv);
  const freshTable = where.dynamodb === 'external' && (opts.freshTable ?? baseEnv['LOCAL_FRESH_TABLE'] === '1');

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
    if (freshTable) env.TABLE_NAME = `${env.TABLE_NAME}-${randomUUID()}`;
    const config = loadConfig(env);

    let emulators: Emulators | undefined;
    if (where.s3 === 'embedded' || where.dynamodb === 'embedded') {
      emulators = await startEmulators({ dataDir, persistDynamo: !ephemeral, host: '127.0.0.1' });
      cleanup.push(() => emulators!.stop());
    }
    // External endpoints come from the env we were given (which may not be process.env), so pass
    // them explicitly rather than relying on the SDK reading process.env; likewise credentials.
    const pick = (name: string) => baseEnv[name] || baseEnv['AWS_ENDPOINT_URL'] || undefined;
    const keyId = baseEnv['AWS_ACCESS_KEY_ID'];
    const secretKey = baseEnv['AWS_SECRET_ACCESS_KEY'];
    const externalOverrides: ClientOverrides = {
      endpoints: { s3: pick('AWS_ENDPOINT_URL_S3'), dynamodb: pick('AWS_ENDPOINT_URL_DYNAMODB') },
      ...(keyId && secretKey && { credentials: { accessKeyId: keyId, secretAccessKey: secretKey, ...(baseEnv['AWS_SESSION_TOKEN'] && { sessionToken: baseEnv['AWS_SESSION_TOKEN'] }) } }),
    };
    const embeddedOverrides: ClientOverrides | undefined = emulators && {
      endpoints: { s3: emulators.s3Endpoint, dynamodb: emulators.dynamodbEndpoint },
      credentials: emulators.credentials,
      // s3rver stores a streamed body sent aws-chunked (the SDK's default checksum mode) framing and
      // all: silent corruption. Checksums only where the API requires them, for the emulator only.
      s3: { requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' },
    };
    // One client of each kind, each configured for where its store lives (s3rver only accepts its own
    // access key id, an external store wants the env's credentials).
    const clientsFor = (location: StoreLocation) =>
      location === 'embedded'
        ? createClients({ region: config.region, s3ForcePathStyle: true }, embeddedOverrides)
        : createClients({ region: config.region, s3ForcePathStyle: config.s3ForcePathStyle }, externalOverrides);
    const forS3 = clientsFor(where.s3);
    const forDdb = where.dynamodb === where.s3 ? forS3 : clientsFor(where.dynamodb);
    const { s3, presigner } = forS3;
    const { ddb } = forDdb;
    if (forDdb !== forS3) {
      forS3.ddb.destroy();
      forDdb.s3.destroy();
      forDdb.presigner.destroy();
    }
    cleanup.push(async () => {
      s3.destroy();
      ddb.destroy();
      presigner.destroy();
    });
    await ensureBucket(s3, config.bucketName);
    if (freshTable) {
      cleanup.push(async () => {
        await ddb.send(new DeleteTableCommand({ TableName: config.tableName }));
      });
    }
    // Only the embedded emulator's table (a dev DATA_DIR) is ever rebuilt to add indexes; an external one
    // (DynamoDB Local, LocalStack, AWS) that lacks them is an error naming them.
    await ensureTable(ddb, config.tableName, where.dynamodb === 'embedded' ? dataDir : undefined);

    const logger = opts.logger ?? new Logger({ serviceName: 'transcript-store' });
    const { store, routes } = createApp(config, { s3, ddb, presigner }, logger);
    // The console is built from its sources on its first request (esbuild, in memory): nothing built is committed.
    const consoleHandler = consoleRoute(async () => consoleAssets(await buildConsoleAssets()), logger);
    const http = await startAdapter({ ...routeTable(routes), ...consoleRouteTable(consoleHandler) }, { host: opts.host ?? '127.0.0.1', port: opts.port ?? 0 });
    cleanup.push(() => http.close());
    // Retention as the schedule runs it on AWS: a pass every RETENTION_INTERVAL_MINUTES (stopped first on stop()).
    const retention = retentionTimer(store, config.retentionIntervalMinutes * 60_000, logger);
    cleanup.push(() => retention.stop());

    let stopped = false;
    return {
      url: http.url,
      config,
      s3,
      ddb,
      store,
      routes,
      emulators,
      storage: where,
      endpoints: {
        s3: where.s3 === 'embedded' ? emulators!.s3Endpoint : externalOverrides.endpoints?.s3,
        dynamodb: where.dynamodb === 'embedded' ? emulators!.dynamodbEndpoint : externalOverrides.endpoints?.dynamodb,
      },
      mintToken: (claims) => {
        if (secret === undefined) throw new Error('mintToken needs an HS256 secret (JWT_SECRET or the dev secret)');
        return mintDevToken(secret, claims);
      },
      mintAdminToken: (claims) => {
        if (secret === undefined) throw new Error('mintAdminToken needs an HS256 secret (JWT_SECRET or the dev secret)');
        return mintDevAdminToken(secret, claims);
      },
      runRetention: () => retention.runNow(),
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

/**
 * Runs `store.runScheduledRetention` (retention, expiry, resumed erasures) every `intervalMs` on an unref'd timer (it never keeps the process alive) and on
 * demand; passes never overlap (a tick while one runs is skipped; `runNow` waits for it, then runs). `stop`
 * clears the timer and waits for a pass in progress, so storage is never closed under it.
 */
export function retentionTimer(
  store: Pick<SnapshotStore, 'runScheduledRetention'>,
  intervalMs: number,
  logger: Logger,
): { runNow(): Promise<RetentionResult>; stop(): Promise<void> } {
  let running: Promise<RetentionResult> | undefined;
  let stopped = false;
  const start = (): Promise<RetentionResult> => {
    const pass = store.runScheduledRetention({ log: logger });
    running = pass;
    const clear = () => {
      if (running === pass) running = undefined;
    };
    pass.then(clear, clear);
    return pass;
  };
  const timer = setInterval(() => {
    if (running || stopped) return;
    start().catch((err: unknown) => logger.error('retention pass failed', { error: String(err) }));
  }, intervalMs);
  timer.unref();
  return {
    async runNow() {
      while (running) await running.catch(() => undefined);
      if (stopped) throw new Error('the local service is stopped');
      return start();
    },
    async stop() {
      stopped = true;
      clearInterval(timer);
      while (running) await running.catch(() => undefined);
    },
  };
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
