/**
 * The retention settings (docs/DESIGN.md § Retention): a leaf module (no imports), shared by the
 * configuration (config.ts, from the environment), the store context and the write path, which stamps
 * the DynamoDB TTL backstop on runs that did not complete.
 */

/** What the retention pass keeps (functions/lib/store/retention.ts); each from the variable of the same name. */
export interface RetentionSettings {
  /** `RETAIN_COMPLETED_RUNS` (≥ 1, default 3): the latest completed run plus this many − 1 earlier completed runs are kept. */
  readonly retainCompletedRuns: number;
  /** `RETAIN_FAILED_DAYS` (≥ 1, default 7): runs that did not complete (failed, timeout, cancelled) are kept this many days. */
  readonly retainFailedDays: number;
  /** `CONVERSATION_TTL_DAYS` (default 0 = off): a conversation is erased this many days after its last write. */
  readonly conversationTtlDays: number;
  /** `RETENTION_INTERVAL_MINUTES` (≥ 1, default 60): how often the pass runs (schedule on AWS, timer under `npm start`). */
  readonly intervalMinutes: number;
  /**
   * `ORPHAN_GRACE_SECONDS` (default 3,600): the pass never touches a record younger than this (a request
   * in flight may still need it; no request lives that long).
   */
  readonly graceSeconds: number;
}

export const DEFAULT_RETENTION: RetentionSettings = Object.freeze({
  retainCompletedRuns: 3,
  retainFailedDays: 7,
  conversationTtlDays: 0,
  intervalMinutes: 60,
  graceSeconds: 3600,
});

export const DAY_MS = 86_400_000;

/**
 * DynamoDB TTL backstop of a run that did not complete (epoch SECONDS, the unit DynamoDB TTL reads):
 * its creation + `retainFailedDays` + 1 day. The retention pass deletes such a run a day before (with its
 * object); TTL only removes the item if the pass did not, and the reconciler then deletes the object.
 */
export function failedRunExpiresAt(createdAtMs: number, retainFailedDays: number): number {
  return Math.floor(createdAtMs / 1000) + (retainFailedDays + 1) * 86_400;
}
