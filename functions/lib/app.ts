import type { Logger } from '@aws-lambda-powertools/logger';
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { S3Client } from '@aws-sdk/client-s3';
import type { SecretLoader } from './auth.js';
import type { Config } from './config.js';
import type { LambdaHttpHandler } from './http.js';
import { adminAgentsRoute } from './routes/admin-agents.js';
import { adminConversationsRoute } from './routes/admin-conversations.js';
import { adminEraseRoute } from './routes/admin-erase.js';
import { adminReceiptRoute } from './routes/admin-receipt.js';
import { adminReceiptsRoute } from './routes/admin-receipts.js';
import { adminLinesRoute } from './routes/admin-lines.js';
import { adminRunRoute } from './routes/admin-run.js';
import { adminRunsRoute } from './routes/admin-runs.js';
import { createUploadRoute } from './routes/create-upload.js';
import { deleteSnapshotRoute } from './routes/delete-snapshot.js';
import { createRouteDeps, type RouteDeps } from './routes/deps.js';
import { getSnapshotRoute } from './routes/get-snapshot.js';
import { healthRoute } from './routes/health.js';
import { openApiRoute } from './routes/openapi.js';
import { postSnapshotRoute } from './routes/post-snapshot.js';
import { SnapshotStore } from './store/index.js';

/**
 * The whole service in one process: the local server (`npm start`) and the tests. Lambda entry points
 * never import this file — each builds only its own route (functions/*.ts), so its bundle holds only
 * what that route uses.
 */
export type AppDeps = RouteDeps;

export interface Routes {
  readonly getSnapshot: LambdaHttpHandler;
  readonly postSnapshot: LambdaHttpHandler;
  readonly deleteSnapshot: LambdaHttpHandler;
  readonly createUpload: LambdaHttpHandler;
  // Operator API (admin tokens).
  readonly adminConversations: LambdaHttpHandler;
  readonly adminRuns: LambdaHttpHandler;
  readonly adminRun: LambdaHttpHandler;
  readonly adminLines: LambdaHttpHandler;
  readonly adminAgents: LambdaHttpHandler;
  readonly adminErase: LambdaHttpHandler;
  readonly adminReceipt: LambdaHttpHandler;
  readonly adminReceipts: LambdaHttpHandler;
  // Public, no token and no storage (only the logger of the deps).
  readonly health: LambdaHttpHandler;
  readonly openApi: LambdaHttpHandler;
}

/** Every route over the same dependencies. */
export function createRoutes(deps: RouteDeps): Routes {
  return {
    getSnapshot: getSnapshotRoute(deps),
    postSnapshot: postSnapshotRoute(deps),
    deleteSnapshot: deleteSnapshotRoute(deps),
    createUpload: createUploadRoute(deps),
    adminConversations: adminConversationsRoute(deps),
    adminRuns: adminRunsRoute(deps),
    adminRun: adminRunRoute(deps),
    adminLines: adminLinesRoute(deps),
    adminAgents: adminAgentsRoute(deps),
    adminErase: adminEraseRoute(deps),
    adminReceipt: adminReceiptRoute(deps),
    adminReceipts: adminReceiptsRoute(deps),
    health: healthRoute(deps.logger),
    openApi: openApiRoute(deps.logger),
  };
}

/** The whole service from a config and SDK clients, with the store as one object for callers outside the routes. */
export function createApp(
  config: Config,
  clients: { s3: S3Client; ddb: DynamoDBClient; presigner?: S3Client },
  logger: Logger,
  loadSecret?: SecretLoader,
): { store: SnapshotStore; routes: Routes } {
  const deps = createRouteDeps(config, clients, logger, loadSecret);
  const store = new SnapshotStore(deps.store);
  return { store, routes: createRoutes({ ...deps, store }) };
}
