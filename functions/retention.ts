import type { Context } from 'aws-lambda';
import { loadStorageConfig, retentionSettings } from './lib/config.js';
import { lambdaRuntime } from './lib/lambda-runtime.js';
import { createStoreContext } from './lib/store/context.js';
import { SnapshotStore } from './lib/store/index.js';
import type { RetentionResult } from './lib/store/retention.js';
import { METRIC } from './lib/telemetry.js';

/**
 * Scheduled (EventBridge, every RETENTION_INTERVAL_MINUTES) retention pass: deletes what RETAIN_COMPLETED_RUNS
 * and RETAIN_FAILED_DAYS no longer keep (docs/DESIGN.md § Retention). Storage settings only — no JWT key.
 * Logs the counts (`retention`) and every failure; a pass with failures throws after logging, so the
 * function's Errors metric (and the RetentionErrors alarm) sees it; what failed stays due for the next pass.
 */
const config = loadStorageConfig();
const { logger, clients, telemetry, addContext, deadlineAt } = await lambdaRuntime(config);
const store = new SnapshotStore(createStoreContext({
  ...clients,
  bucket: config.bucketName,
  table: config.tableName,
  retention: retentionSettings(config),
  onCleanupError: (what, err) => logger.warn('cleanup failed', { what, error: String(err) }),
}));

/** Leave this much of the Lambda's time for the conversation in progress and the log line. */
const RESERVE_MS = 30_000;

export const handler = async (_event: unknown, context?: Partial<Context>): Promise<RetentionResult> => {
  addContext(context);
  // Expires idle conversations (CONVERSATION_TTL_DAYS) by erasure, then finishes erasures whose caller died.
  const result = await store.runScheduledRetention({ deadlineAt: deadlineAt(context, RESERVE_MS), log: logger });
  telemetry.emit([{ name: METRIC.retentionDeletions, unit: 'Count', value: result.objects, dimensions: {} }]);
  if (result.failed > 0) throw new Error(`retention pass: ${result.failed} conversation(s) or shard(s) failed (see the log); they stay due`);
  return result;
};
