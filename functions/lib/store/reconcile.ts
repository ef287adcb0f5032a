import { DeleteItemCommand, GetItemCommand, PutItemCommand } from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import type { StoreContext } from './context.js';
import { batchGet } from './batch.js';
import { materializedExpiryMs } from './chain.js';
import { deleteObjects, listObjectPages } from './objects.js';
import {
  CHAIN_SK_PREFIX,
  chainKey,
  chainOfKey,
  fromChainItem,
  fromRunItem,
  generationOfHeadItem,
  headKey,
  itemKey,
  latestFromHeadItem,
  MATERIALIZED_PREFIX,
  parseSnapshotKey,
  RECONCILER_PK,
  SNAPSHOT_PREFIX,
  type Item,
  type RunRecord,
} from './schema.js';
import { publish } from './write.js';

/**
 * The scheduled reconciler (bundled only into functions/reconcile.ts). Deletes snapshot objects that no
 * record refers to: uploads whose commit never happened (the writer died between PutObject and its
 * claim), a losing duplicate whose own cleanup failed, chain objects whose append died before its chain
 * update (or whose compaction's deletion failed), and materialized copies past the grace; and publishes completed runs whose writer died
 * between its claim and its publish and never retried (roll-forward). Walks `snapshots/` in key order from a
 * cursor kept in DynamoDB, so successive runs cover any bucket size; stops at `deadlineAt` or after
 * `maxKeys` and saves where it stopped.
 *
 * Why deleting is safe: an object is only a candidate when it is older than `graceSeconds` (at least
 * 15 min, longer than any request can live), so its writer has finished: if it was ever going to claim
 * the run, the claim exists now. A RUN record is immutable and HEAD only ever points at a RUN's key, so
 * "no RUN record with this key" means nothing refers to the object or ever will. For a chain object
 * the same holds of its CHAIN record: an append names its object in the chain before any run refers
 * to it, and an object the chain no longer lists (merged by compaction) is never listed again;
 * HEAD's cached layout may still name it, and its readers fall back to the CHAIN record.
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
    const orphans = candidates.map((o) => o.Key!).filter((k) => !records.referenced.has(k));
    await deleteObjects(ctx, orphans, abortSignal);
    result.rolledForward += await rollForward(ctx, records.runs, abortSignal);
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

  // Materialized copies (chain.ts) are caches for presigned URLs: a copy is handed out only while it is
  // younger than one presign TTL, so past twice that (and the grace) no valid URL names it.
  if (done) {
    const expiry = ctx.now() - materializedExpiryMs(ctx, opts.graceSeconds);
    for await (const objects of listObjectPages(ctx, { prefix: MATERIALIZED_PREFIX }, abortSignal)) {
      const expired = objects.filter((o) => o.Key && o.LastModified && o.LastModified.getTime() < expiry).map((o) => o.Key!);
      await deleteObjects(ctx, expired, abortSignal);
      result.deleted += expired.length;
      if (Date.now() >= opts.deadlineAt) break;
    }
  }

  // Save progress; a finished pass starts over from the beginning next time.
  if (done) {
    if (resumedFrom !== undefined) await ctx.ddb.send(new DeleteItemCommand({ TableName: ctx.table, Key: cursorKey }), { abortSignal });
  } else if (startAfter !== undefined) {
    await ctx.ddb.send(new PutItemCommand({ TableName: ctx.table, Item: { ...cursorKey, ...marshall({ startAfter }) } }), { abortSignal });
  }
  return { ...result, complete: done, cursor: done ? undefined : startAfter };
}

type Owned = RunRecord & { readonly pk: string };

/**
 * Which of `s3Keys` something refers to (consistent BatchGetItem of the records their paths name), and
 * the RUN records that name them (for roll-forward). An object of a chain is referenced while its
 * CHAIN record lists it (compaction removes the objects it merged); any other object while the RUN
 * record of its path names it. A key the reconciler does not understand counts as referenced.
 */
async function recordsOf(ctx: StoreContext, s3Keys: readonly string[], abortSignal?: AbortSignal): Promise<{ referenced: Set<string>; runs: Owned[] }> {
  const referenced = new Set<string>();
  const wanted = new Map<string, Item>(); // "pk sk" → key
  for (const k of s3Keys) {
    const parsed = parseSnapshotKey(k);
    if (!parsed) {
      referenced.add(k);
      continue;
    }
    wanted.set(`${parsed.pk} ${parsed.runSk}`, itemKey(parsed.pk, parsed.runSk));
    const chainId = chainOfKey(k);
    if (chainId !== undefined) wanted.set(`${parsed.pk} ${CHAIN_SK_PREFIX}${chainId}`, chainKey(parsed.pk, chainId));
  }
  const keys = new Set(s3Keys);
  const runs: Owned[] = [];
  for (const item of await batchGet(ctx, [...wanted.values()], abortSignal)) {
    const v = unmarshall(item);
    if (String(v['sk']).startsWith(CHAIN_SK_PREFIX)) {
      for (const e of fromChainItem(item).extents) if (keys.has(e.key)) referenced.add(e.key);
      continue;
    }
    const run = fromRunItem(item);
    if (!keys.has(run.s3Key)) continue;
    runs.push({ ...run, pk: v['pk'] as string });
    if (run.chainId === undefined) referenced.add(run.s3Key);
  }
  return { referenced, runs };
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
