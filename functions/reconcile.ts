import { Logger } from '@aws-lambda-powertools/logger';
import { createClients } from './lib/aws.js';
import { loadStorageConfig } from './lib/config.js';
import { createStoreContext } from './lib/store/context.js';
import { reconcile, type ReconcileResult } from './lib/store/reconcile.js';

/**
 * Scheduled (EventBridge) orphan reconciler: deletes snapshot objects no record refers to and that
 * are older than ORPHAN_GRACE_SECONDS. It needs storage only — no JWT configuration.
 */
const config = loadStorageConfig();
const logger = new Logger({ serviceName: process.env['POWERTOOLS_SERVICE_NAME'] ?? 'transcript-store' });
const store = createStoreContext({ ...createClients(config), bucket: config.bucketName, table: config.tableName });

/** Leave this much of the Lambda's time for saving the cursor and logging. */
const RESERVE_MS = 10_000;

export const handler = async (_event: unknown, context?: { getRemainingTimeInMillis?: () => number }): Promise<ReconcileResult> => {
  const remaining = context?.getRemainingTimeInMillis?.() ?? 60_000;
  const deadlineAt = Date.now() + Math.max(1_000, remaining - RESERVE_MS);
  const result = await reconcile(store, { graceSeconds: config.orphanGraceSeconds, deadlineAt });
  logger.info('reconcile', { ...result });
  return result;
};
