import { Logger } from '@aws-lambda-powertools/logger';
import { createRoutes, type Routes } from './app.js';
import { createVerifier } from './auth.js';
import { createClients, loadSecretFromSecretsManager } from './aws.js';
import { loadConfig, storeLimits } from './config.js';
import { SnapshotStore } from './store.js';

/**
 * Production wiring, evaluated once per cold start by each handler module. Reading the config here
 * (not per request) makes a misconfigured function fail at init, naming the missing variable.
 */
const config = loadConfig();
const logger = new Logger({ serviceName: process.env['POWERTOOLS_SERVICE_NAME'] ?? 'transcript-store' });
const { s3, ddb } = createClients(config);

export const routes: Routes = createRoutes({
  store: new SnapshotStore({
    s3,
    ddb,
    bucket: config.bucketName,
    table: config.tableName,
    limits: storeLimits(config),
    onCleanupError: (what, err) => logger.warn('cleanup failed', { what, error: String(err) }),
  }),
  verify: createVerifier(config, (arn) => loadSecretFromSecretsManager(config.region, arn)),
  logger,
  maxSnapshotBytes: config.maxSnapshotBytes,
  requestDeadlineMs: config.requestDeadlineMs,
});
