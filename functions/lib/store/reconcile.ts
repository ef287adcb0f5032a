import {
  BatchGetItemCommand,
  DeleteItemCommand,
  GetItemCommand,
  PutItemCommand,
  type BatchGetItemCommandOutput,
  type KeysAndAttributes,
} from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import type { StoreContext } from './context.js';
import { deleteObjects, listObjectPages } from './objects.js';
import { itemKey, parseSnapshotKey, RECONCILER_PK, SNAPSHOT_PREFIX } from './schema.js';

/**
 * The scheduled orphan reconciler (bundled only into functions/reconcile.ts). Deletes snapshot objects
 * that no RUN record refers to: uploads whose commit never happened (the writer died between PutObject
 * and its claim), or a losing duplicate whose own cleanup failed. Walks `snapshots/` in key order from a
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
  const result = { scanned: 0, deleted: 0 };
  let done = true;

  const pages = listObjectPages(ctx, { prefix: SNAPSHOT_PREFIX, startAfter, pageSize: Math.min(1000, maxKeys) }, abortSignal);
  // The deadline is an execution budget (real time); `now()` only dates objects against the grace.
  for await (const objects of pages) {
    const candidates = objects.filter((o) => o.Key && o.LastModified && o.LastModified.getTime() < cutoff);
    const referenced = await referencedKeys(ctx, candidates.map((o) => o.Key!), abortSignal);
    const orphans = candidates.map((o) => o.Key!).filter((k) => !referenced.has(k));
    await deleteObjects(ctx, orphans, abortSignal);
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

/** BatchGetItem reads at most this many keys per call. */
const BATCH_GET_MAX_KEYS = 100;

/**
 * The subset of `s3Keys` that a RUN record refers to (consistent BatchGetItem of the records their paths
 * name, 100 per call, unprocessed keys retried). Keys we do not understand count as referenced: the
 * reconciler never deletes what it cannot attribute.
 */
async function referencedKeys(ctx: StoreContext, s3Keys: readonly string[], abortSignal?: AbortSignal): Promise<Set<string>> {
  const referenced = new Set<string>();
  const byRecord = new Map<string, string[]>(); // "pk\u0000sk" → object keys naming that record
  for (const k of s3Keys) {
    const parsed = parseSnapshotKey(k);
    if (!parsed) {
      referenced.add(k);
      continue;
    }
    const id = `${parsed.pk}\u0000${parsed.runSk}`;
    byRecord.set(id, [...(byRecord.get(id) ?? []), k]);
  }
  const ids = [...byRecord.keys()];
  for (let i = 0; i < ids.length; i += BATCH_GET_MAX_KEYS) {
    let request: KeysAndAttributes | undefined = {
      Keys: ids.slice(i, i + BATCH_GET_MAX_KEYS).map((id) => {
        const [pk, sk] = id.split('\u0000') as [string, string];
        return itemKey(pk, sk);
      }),
      ConsistentRead: true,
      ProjectionExpression: 's3Key',
    };
    for (let attempt = 0; request?.Keys?.length; attempt++) {
      // Unprocessed keys mean throttling: back off before asking again (AWS's advice for batch calls).
      if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, Math.min(1_000, 50 * 2 ** attempt)));
      const res: BatchGetItemCommandOutput = await ctx.ddb.send(new BatchGetItemCommand({ RequestItems: { [ctx.table]: request } }), { abortSignal });
      for (const item of res.Responses?.[ctx.table] ?? []) {
        const key = unmarshall(item)['s3Key'];
        if (typeof key === 'string') referenced.add(key);
      }
      request = res.UnprocessedKeys?.[ctx.table];
    }
  }
  return referenced;
}
