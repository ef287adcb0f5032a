import type { Context } from 'aws-lambda';
import { loadStorageConfig } from './lib/config.js';
import { lambdaRuntime } from './lib/lambda-runtime.js';
import { createStoreContext } from './lib/store/context.js';
import { reconcile, type ReconcileResult } from './lib/store/reconcile.js';
import { METRIC } from './lib/telemetry.js';

/**
 * Scheduled (EventBridge) orphan reconciler: deletes snapshot objects no record refers to and that
 * are older than ORPHAN_GRACE_SECONDS. It needs storage only — no JWT configuration.
 */
const config = loadStorageConfig();
const { logger, clients, telemetry, addContext, deadlineAt } = await lambdaRuntime(config);
const store = createStoreContext({ ...clients, bucket: config.bucketName, table: config.tableName });

/** Leave this much of the Lambda's time for saving the cursor and logging. */
const RESERVE_MS = 10_000;

export const handler = async (_event: unknown, context?: Partial<Context>): Promise<ReconcileResult> => {
  addContext(context);
  const result = await reconcile(store, { graceSeconds: config.orphanGraceSeconds, deadlineAt: deadlineAt(context, RESERVE_MS) });
  logger.info('reconcile', { ...result });
  telemetry.emit([{ name: METRIC.reconcilerDeletions, unit: 'Count', value: result.deleted, dimensions: {} }]);
  return result;
};
