import { DeleteItemCommand, GetItemCommand, PutItemCommand } from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import type { StoreContext } from './context.js';
import { batchGet } from './batch.js';
import { deleteObjects, listObjectPages } from './objects.js';
import { fromRunItem, generationOfHeadItem, headKey, itemKey, latestFromHeadItem, parseSnapshotKey, RECONCILER_PK, SNAPSHOT_PREFIX, type Item, type RunRecord } from './schema.js';
import { publish } from './write.js';

/**
 * The scheduled reconciler (bundled only into functions/reconcile.ts). Deletes snapshot objects that no
 * RUN record refers to: uploads whose commit never happened (the writer died between PutObject and its
 * claim), or a losing duplicate whose own cleanup failed; and publishes completed runs whose writer died
 * between its claim and its publish and never retried (roll-forward). Walks `snapshots/` in key order from a
 * cursor kept in DynamoDB, so successive runs cover any bucket size; stops at `deadlineAt` or after
 * `maxKeys` and saves where it stopped.
 *
 * Why deleting is safe: an object is only a candidate when it is older than `graceSeconds` (at least
 * 15 min, longer than any request can live), so its writer has finished: if it was ever going to claim
 * the run, the claim exists now. A RUN record is immutable and HEAD only ever points at a RUN's key, so
 * "no RUN record with this key" means nothing refers to the object or ever will.
 */
export interface ReconcileOptions {
  /** Only objects older than this many seconds (by the store clock) are candidates. */
  readonly graceSeconds: number;
  /** Execution budget (epoch ms, real time): no new page is started after it. */
  readonly deadlineAt: number;
  /** Stop after listing this many objects (default: no limit). */
  readonly maxKeys?: number;
  readonly signal?: AbortSignal;
}

export interface ReconcileResult {
  /** Objects listed in this run. */
  scanned: number;
  /** Unreferenced objects past the grace period, deleted. */
  deleted: number;
  /** Completed runs whose writer claimed but never published them (and no newer run is published), published now. */
  rolledForward: number;
  /** True when the pass reached the end of `snapshots/` (the next run starts from the beginning). */
  complete: boolean;
  cursor: string | undefined;
}

/** One reconciler pass. Throws SDK errors; the next pass resumes from the last saved cursor. */
export async function reconcile(ctx: StoreContext, opts: ReconcileOptions): Promise<ReconcileResult> {
  const abortSignal = opts.signal;
  const cursorKey = itemKey(RECONCILER_PK, 'CURSOR');
  const saved = await ctx.ddb.send(new GetItemCommand({ TableName: ctx.table, Key: cursorKey, ConsistentRead: true }), { abortSignal });
  const resumedFrom = saved.Item ? (unmarshall(saved.Item)['startAfter'] as string | undefined) : undefined;
  let startAfter = resumedFrom;
  const cutoff = ctx.now() - opts.graceSeconds * 1000;
  const maxKeys = opts.maxKeys ?? Number.POSITIVE_INFINITY;
  const result = { scanned: 0, deleted: 0, rolledForward: 0 };
  let done = true;

  const pages = listObjectPages(ctx, { prefix: SNAPSHOT_PREFIX, startAfter, pageSize: Math.min(1000, maxKeys) }, abortSignal);
  // The deadline is an execution budget (real time); `now()` only dates objects against the grace.
  for await (const objects of pages) {
    const candidates = objects.filter((o) => o.Key && o.LastModified && o.LastModified.getTime() < cutoff);
    const records = await recordsOf(ctx, candidates.map((o) => o.Key!), abortSignal);
    const orphans = candidates.map((o) => o.Key!).filter((k) => !records.has(k));
    await deleteObjects(ctx, orphans, abortSignal);
    result.rolledForward += await rollForward(ctx, [...records.values()].filter((r): r is Owned => r !== FOREIGN), abortSignal);
    result.scanned += objects.length;
    result.deleted += orphans.length;
    if (objects.length > 0) startAfter = objects[objects.length - 1]!.Key;
    if (result.scanned >= maxKeys || Date.now() >= opts.deadlineAt) {
      done = false;
      break;
    }
  }
  // A budget that ran out exactly at the end of the listing is still reported incomplete; the next
  // pass then finds nothing past the cursor and completes.

  // Save progress; a finished pass starts over from the beginning next time.
  if (done) {
    if (resumedFrom !== undefined) await ctx.ddb.send(new DeleteItemCommand({ TableName: ctx.table, Key: cursorKey }), { abortSignal });
  } else if (startAfter !== undefined) {
    await ctx.ddb.send(new PutItemCommand({ TableName: ctx.table, Item: { ...cursorKey, ...marshall({ startAfter }) } }), { abortSignal });
  }
  return { ...result, complete: done, cursor: done ? undefined : startAfter };
}

/** Marks an object key the reconciler does not understand: treated as referenced, never deleted. */
const FOREIGN = Symbol('foreign');
type Owned = RunRecord & { readonly pk: string };

/**
 * The RUN record that refers to each of `s3Keys` (consistent BatchGetItem of the records their paths
 * name). Keys absent from the result are referenced by nothing.
 */
async function recordsOf(ctx: StoreContext, s3Keys: readonly string[], abortSignal?: AbortSignal): Promise<Map<string, Owned | typeof FOREIGN>> {
  const out = new Map<string, Owned | typeof FOREIGN>();
  const wanted = new Map<string, Item>(); // "pk sk" → key
  for (const k of s3Keys) {
    const parsed = parseSnapshotKey(k);
    if (!parsed) out.set(k, FOREIGN);
    else wanted.set(`${parsed.pk} ${parsed.runSk}`, itemKey(parsed.pk, parsed.runSk));
  }
  for (const item of await batchGet(ctx, [...wanted.values()], abortSignal)) {
    const v = unmarshall(item);
    const run = fromRunItem(item);
    if (s3Keys.includes(run.s3Key)) out.set(run.s3Key, { ...run, pk: v['pk'] as string });
  }
  return out;
}

/**
 * Publishes completed runs whose writer died between its claim and its publish, when HEAD is still at
 * their generation and names no newer run (I3 without the writer's retry). The publish is the write
 * path's own conditional write, so it can never move HEAD backwards or across a reset: every claim was
 * admitted at HEAD's generation of its time (write.ts), so a run whose generation HEAD is still at was
 * claimed after the last reset.
 */
async function rollForward(ctx: StoreContext, runs: readonly Owned[], abortSignal?: AbortSignal): Promise<number> {
  const completed = runs.filter((r) => r.status === 'completed');
  if (completed.length === 0) return 0;
  const heads = new Map<string, Item>();
  for (const item of await batchGet(ctx, [...new Set(completed.map((r) => r.pk))].map(headKey), abortSignal)) heads.set(unmarshall(item)['pk'] as string, item);
  let published = 0;
  for (const r of completed) {
    const head = heads.get(r.pk);
    const latest = latestFromHeadItem(head);
    if (generationOfHeadItem(head) !== r.generation || (latest !== undefined && latest.runId >= r.runId)) continue;
    if ((await publish(ctx, r.pk, r, abortSignal)) === true) published += 1;
  }
  return published;
}
