import type { Context } from 'aws-lambda';
import { Logger } from '@aws-lambda-powertools/logger';
import { createClients } from './lib/aws.js';
import { loadStorageConfig } from './lib/config.js';
import { createStoreContext } from './lib/store/context.js';
import { reconcile, type ReconcileResult } from './lib/store/reconcile.js';
import { METRIC, powertoolsTelemetry } from './lib/telemetry.js';
import { Tracer } from '@aws-lambda-powertools/tracer';

/**
 * Scheduled (EventBridge) orphan reconciler: deletes snapshot objects no record refers to and that
 * are older than ORPHAN_GRACE_SECONDS. It needs storage only — no JWT configuration.
 */
const config = loadStorageConfig();
const serviceName = process.env['POWERTOOLS_SERVICE_NAME'] ?? 'transcript-store';
const logger = new Logger({ serviceName });
const clients = createClients(config);
const tracer = new Tracer({ serviceName });
tracer.captureAWSv3Client(clients.s3);
tracer.captureAWSv3Client(clients.ddb);
const telemetry = await powertoolsTelemetry(serviceName);
const store = createStoreContext({ ...clients, bucket: config.bucketName, table: config.tableName });

/** Leave this much of the Lambda's time for saving the cursor and logging. */
const RESERVE_MS = 10_000;

export const handler = async (_event: unknown, context?: Partial<Context>): Promise<ReconcileResult> => {
  if (context?.awsRequestId !== undefined && context.functionName !== undefined) logger.addContext(context as Context);
  const remaining = context?.getRemainingTimeInMillis?.() ?? 60_000;
  const deadlineAt = Date.now() + Math.max(1_000, remaining - RESERVE_MS);
  const result = await reconcile(store, { graceSeconds: config.orphanGraceSeconds, deadlineAt });
  logger.info('reconcile', { ...result });
  telemetry.emit([{ name: METRIC.reconcilerDeletions, unit: 'Count', value: result.deleted, dimensions: {} }]);
  return result;
};
