import { ConditionalCheckFailedException, DeleteItemCommand, paginateQuery, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import type { StoreContext } from './context.js';
import { currentGenerationCondition, INITIAL_GENERATION } from './fence.js';
import { deleteObjects } from './objects.js';
import { INDEX, RETENTION_SHARDS } from './registry.js';
import { DAY_MS, type RetentionSettings } from './retention-settings.js';
import {
  CHAIN_SK_PREFIX,
  chainKey,
  fromChainItem,
  fromRunItem,
  headKey,
  HEAD_SK,
  runKey,
  RUN_SK_PREFIX,
  type ChainRecord,
  type Item,
  type RunRecord,
} from './schema.js';

/**
 * The retention pass (docs/DESIGN.md § Retention; scheduled by functions/retention.ts, a timer under
 * `npm start`). Every write marks its conversation due (HEAD `retentionDueAtMs` = now, in the sparse GSI
 * `ByRetentionDue`, 16 shards); the pass Queries each shard for conversations due by now and, for each,
 * reads the whole partition consistently and deletes what the settings no longer keep:
 *
 *   - RUN records of a generation before HEAD's (left by a clear that died);
 *   - completed runs below the latest beyond the RETAIN_COMPLETED_RUNS − 1 highest;
 *   - runs that did not complete, once older than RETAIN_FAILED_DAYS (and completed runs above the latest
 *     that never published in that time: abandoned claims);
 *   - CHAIN records no run references, once nothing has referenced them for a grace period.
 *
 * Never touched: the latest run, its chain, completed runs above the latest (claimed, not yet published:
 * in flight) younger than RETAIN_FAILED_DAYS, and any record younger than ORPHAN_GRACE_SECONDS.
 *
 * Records before objects: each record is deleted first (conditional on being the one read, returning it
 * so only the call that removed it counts it), then the objects only it referred to (DeleteObjects). So no
 * record ever names a deleted object (I2), and a pass that dies in between leaves only unreferenced objects,
 * which the reconciler deletes (they are past its grace). An object of a chain goes only with its chain,
 * never with a run (the runs of a chain share its objects).
 *
 * Chains and appends: an append reads its base RUN at admission and may extend the base's chain up to one
 * request lifetime later (< 15 min ≤ the grace). So when a pass removes the last run that references a
 * chain, it does not delete the chain: it first stamps `updatedAtMs` = now (conditional on the version
 * read; an append in between bumps the version and keeps the chain alive), then deletes the runs, and a
 * later pass deletes the chain once the stamp is older than the grace — by then every request that could
 * have read a base in it is over. The chain's record goes before its objects, under the version and
 * stamp read: an append that comes after finds no chain and forks or answers 412, never a missing object.
 * A chain with no run and no `updatedAtMs` (written before the stamp existed) is stamped the same way.
 *
 * Finally HEAD: the counters lose what was removed (`ADD runCount -n, storedBytesTotal -bytes`) and
 * `retentionDueAtMs` becomes the next time something may be due (or is removed), conditional on
 * `activityAtMs` being the value read — a write in between has set it to now already, and then only the
 * counters are written.
 */

/** What a pass (or one conversation) removed. */
export interface RetentionCounts {
  /** Conversations examined (retained or expired). */
  conversations: number;
  /** RUN records deleted. */
  runs: number;
  /** S3 objects deleted. */
  objects: number;
  /** Stored (compressed) bytes of the objects deleted. */
  bytes: number;
}

/** The outcome of a pass. */
export interface RetentionResult extends RetentionCounts {
  /** Conversations handed to `expireConversation` (CONVERSATION_TTL_DAYS) and erased. */
  expired: number;
  /** Conversations (or shard queries) that failed; the next pass retries them (they stay due). */
  failed: number;
  /** False when the pass stopped at `deadlineAt` with conversations still due (the next pass continues). */
  complete: boolean;
}

/** What the expiry of an idle conversation is told about it (from the HEAD read consistently). */
export interface ExpiringConversation {
  /** The conversation key (DynamoDB partition, S3 prefix under snapshots/, uploads/, materialized/). */
  readonly pk: string;
  /** Service clock (epoch ms) of its last write, as read: an erasure may be made conditional on it. */
  readonly activityAtMs: number;
  /** Raw ids from HEAD's listing attributes, when present. */
  readonly agentId: string | undefined;
  readonly conversationId: string | undefined;
  /** Encoded organization segment (HEAD `orgKey`). */
  readonly orgKey: string | undefined;
}

/** A structured logger (Powertools Logger fits): the pass logs its counts and every failure. */
export interface RetentionLog {
  info(message: string, fields: Record<string, unknown>): void;
  warn(message: string, fields: Record<string, unknown>): void;
  error(message: string, fields: Record<string, unknown>): void;
}

export interface RetentionOptions {
  /** Execution budget (epoch ms, real time `Date.now`): no conversation is started after it. Default: none. */
  readonly deadlineAt?: number;
  readonly signal?: AbortSignal;
  /**
   * Erases an idle conversation (CONVERSATION_TTL_DAYS): the erasure of that conversation (erasure.ts),
   * injected by the caller. Returns what it removed, when it knows. Without it, no conversation expires
   * (and the pass logs a warning when CONVERSATION_TTL_DAYS is set).
   */
  readonly expireConversation?: (pk: string, conversation: ExpiringConversation) => Promise<Partial<Omit<RetentionCounts, 'conversations'>> | void>;
  /** Where the counts and failures are logged (default: nowhere). */
  readonly log?: RetentionLog;
  /**
   * Walk only these shards (0–15) of the work queue, in this order (default: all 16, from a starting shard
   * that rotates with the clock). For a pass spread over several invocations, or a look at one conversation's shard.
   */
  readonly shards?: readonly number[];
}

/**
 * One retention pass over every conversation due by now (`ctx.now()`): Queries each `ByRetentionDue`
 * shard (`retentionDueAtMs <= now`, SDK paginator) and retains each conversation it lists. A failing
 * conversation or shard does not stop the pass: it is logged, counted in `failed`, and stays due for the
 * next pass. Shards are walked from a starting shard that rotates with the clock, so a pass that runs out
 * of time does not starve the same shards every time.
 * @returns the counts (also logged as `retention` with the counts as fields, when `opts.log` is given).
 */
export async function runRetention(ctx: StoreContext, opts: RetentionOptions = {}): Promise<RetentionResult> {
  const result: RetentionResult = { conversations: 0, runs: 0, objects: 0, bytes: 0, expired: 0, failed: 0, complete: true };
  const now = ctx.now();
  if (ctx.retention.conversationTtlDays > 0 && !opts.expireConversation) {
    opts.log?.warn('retention: CONVERSATION_TTL_DAYS is set but no erasure is wired; no conversation expires', { conversationTtlDays: ctx.retention.conversationTtlDays });
  }
  const first = Math.floor(now / 60_000) % RETENTION_SHARDS;
  const order = opts.shards ?? Array.from({ length: RETENTION_SHARDS }, (_, i) => (first + i) % RETENTION_SHARDS);
  const bad = order.find((n) => !Number.isInteger(n) || n < 0 || n >= RETENTION_SHARDS);
  if (bad !== undefined) throw new RangeError(`retention: no shard ${bad} (0–${RETENTION_SHARDS - 1})`);
  shards: for (const n of order) {
    const shard = `r${n}`;
    try {
      const pages = paginateQuery(
        { client: ctx.ddb },
        {
          TableName: ctx.table,
          IndexName: INDEX.byRetentionDue.name,
          KeyConditionExpression: '#shard = :shard AND #due <= :now',
          ExpressionAttributeNames: { '#shard': INDEX.byRetentionDue.partitionKey, '#due': INDEX.byRetentionDue.sortKey },
          ExpressionAttributeValues: marshall({ ':shard': shard, ':now': now }),
          ProjectionExpression: 'pk',
        },
        { abortSignal: opts.signal },
      );
      for await (const page of pages) {
        // The whole page is read before any conversation is retained: retaining moves it out of the range.
        const pks = (page.Items ?? []).map((item) => item['pk']?.S).filter((pk): pk is string => pk !== undefined);
        for (const pk of pks) {
          if (opts.deadlineAt !== undefined && Date.now() >= opts.deadlineAt) {
            result.complete = false;
            break shards;
          }
          try {
            const done = await retainConversation(ctx, pk, { ...opts, tally: result });
            if (done.expired) result.expired += 1;
          } catch (err) {
            result.failed += 1;
            opts.log?.error('retention: conversation failed (it stays due; the next pass retries it)', { pk, error: errorFields(err) });
          }
        }
      }
    } catch (err) {
      result.failed += 1;
      opts.log?.error('retention: shard query failed (the next pass retries it)', { shard, error: errorFields(err) });
    }
  }
  opts.log?.info('retention', { ...result });
  return result;
}

/** What `retainConversation` did to one conversation. */
export interface ConversationRetention extends Omit<RetentionCounts, 'conversations'> {
  /** True when the conversation was past CONVERSATION_TTL_DAYS and handed to `expireConversation`. */
  expired: boolean;
  /** The `retentionDueAtMs` written back (undefined: removed, nothing is due any more). */
  nextDueAtMs: number | undefined;
}

/**
 * Retains one conversation (see the module comment): a consistent Query of its partition, then the
 * deletions {@link planRetention} decides, then the HEAD write-back. Every deletion is conditional on the
 * record read; `opts.tally` (if given) is increased as each deletion is confirmed, so a call that fails
 * midway still reports what it removed. Throws SDK errors; a retry (the next pass) converges.
 */
export async function retainConversation(
  ctx: StoreContext,
  pk: string,
  opts: RetentionOptions & { tally?: RetentionCounts } = {},
): Promise<ConversationRetention> {
  const abortSignal = opts.signal;
  const removed = { runs: 0, objects: 0, bytes: 0 };
  const count = (what: Partial<typeof removed>) => {
    for (const k of ['runs', 'objects', 'bytes'] as const) {
      removed[k] += what[k] ?? 0;
      if (opts.tally) opts.tally[k] += what[k] ?? 0;
    }
  };
  const state = await readPartition(ctx, pk, abortSignal);
  const now = ctx.now();
  const plan = planRetention(state, now, ctx.retention, { expiry: opts.expireConversation !== undefined });
  if (opts.tally) opts.tally.conversations += 1;

  if (plan.expire && state.head?.activityAtMs !== undefined) {
    const h = state.head;
    const erased = await opts.expireConversation!(pk, { pk, activityAtMs: h.activityAtMs!, agentId: h.agentId, conversationId: h.conversationId, orgKey: h.orgKey });
    count(erased ?? {});
    return { ...removed, expired: true, nextDueAtMs: undefined };
  }

  // 1. Chains that lose their last run in this pass: stamp them first, so that even if the pass dies right
  //    after deleting the runs, the chain's grace period counts from no earlier than this moment.
  for (const chain of plan.stampChains) await stampChain(ctx, pk, chain, now, abortSignal);

  // 2. RUN records, each only if it is still the record read (s3Key is unique per write), then the objects
  //    that only they referred to.
  const unreferenced: { key: string; bytes: number }[] = [];
  for (const run of plan.deleteRuns) {
    if (await deleteIfUnchanged(ctx, runKey(pk, run.runId), 's3Key = :key', marshall({ ':key': run.s3Key }), abortSignal)) {
      count({ runs: 1 });
      // A chain run's object belongs to its chain (shared with the chain's other runs).
      if (run.chainId === undefined) unreferenced.push({ key: run.s3Key, bytes: run.storedBytes });
    }
  }
  if (unreferenced.length > 0) {
    await deleteObjects(ctx, unreferenced.map((o) => o.key), abortSignal);
    count({ objects: unreferenced.length, bytes: unreferenced.reduce((n, o) => n + o.bytes, 0) });
  }

  // 3. Chains no run has referenced for a grace period: the record (still as read), then its objects.
  for (const chain of plan.deleteChains) {
    const values = marshall({ ':version': chain.version, ':updatedAtMs': chain.updatedAtMs });
    if (await deleteIfUnchanged(ctx, chainKey(pk, chain.chainId), 'version = :version AND updatedAtMs = :updatedAtMs', values, abortSignal)) {
      await deleteObjects(ctx, chain.extents.map((e) => e.key), abortSignal);
      count({ objects: chain.extents.length, bytes: chain.extents.reduce((n, e) => n + e.length, 0) });
    }
  }

  // 4. HEAD: counters and the next due time.
  await writeBack(ctx, pk, state.head, plan.nextDueAtMs, removed, abortSignal);
  return { ...removed, expired: false, nextDueAtMs: plan.nextDueAtMs };
}

/** HEAD as the pass needs it (absent attributes: undefined). */
export interface RetentionHead {
  readonly generation: number;
  readonly latestRunId: number | undefined;
  readonly latestChainId: string | undefined;
  /** Service clock of the last write (a listing attribute); undefined on a HEAD that is not listed. */
  readonly activityAtMs: number | undefined;
  readonly retentionDueAtMs: number | undefined;
  readonly agentId: string | undefined;
  readonly conversationId: string | undefined;
  readonly orgKey: string | undefined;
}

/** A conversation's partition as read: HEAD (undefined when there is none), its RUN and CHAIN records. */
export interface PartitionState {
  readonly head: RetentionHead | undefined;
  readonly runs: readonly RunRecord[];
  readonly chains: readonly ChainRecord[];
}

/** What a pass does to one conversation (a pure decision: {@link planRetention}). */
export interface RetentionPlan {
  /** The conversation is past CONVERSATION_TTL_DAYS: erase it (nothing else is done). */
  readonly expire: boolean;
  readonly deleteRuns: readonly RunRecord[];
  /** Chains no run will reference once `deleteRuns` are gone, not yet stamped: stamp `updatedAtMs` = now. */
  readonly stampChains: readonly ChainRecord[];
  /** Chains no run references whose stamp (`updatedAtMs`, always set) is older than the grace period. */
  readonly deleteChains: readonly ChainRecord[];
  /** When the conversation must next be looked at (undefined: nothing will be due until its next write). */
  readonly nextDueAtMs: number | undefined;
}

/**
 * The retention decision for one conversation at `now` (epoch ms), as a pure function of its records and
 * the settings (rules in the module comment). `expiry`: whether an expiry is wired (without it,
 * CONVERSATION_TTL_DAYS neither expires a conversation nor makes it due).
 *
 * Expiry: with CONVERSATION_TTL_DAYS = d > 0, a conversation whose HEAD `activityAtMs` (its last write) is
 * at least d days before `now` expires; a HEAD without `activityAtMs` (written before listing attributes
 * existed) never does. The next due time is then also bounded by activityAtMs + d days.
 */
export function planRetention(state: PartitionState, now: number, settings: RetentionSettings, opts: { expiry: boolean }): RetentionPlan {
  const head = state.head;
  const graceMs = settings.graceSeconds * 1000;
  const failedMs = settings.retainFailedDays * DAY_MS;
  const ttlMs = opts.expiry && settings.conversationTtlDays > 0 ? settings.conversationTtlDays * DAY_MS : undefined;
  if (ttlMs !== undefined && head?.activityAtMs !== undefined && head.activityAtMs + ttlMs <= now) {
    return { expire: true, deleteRuns: [], stampChains: [], deleteChains: [], nextDueAtMs: undefined };
  }

  const due: number[] = [];
  if (ttlMs !== undefined && head?.activityAtMs !== undefined) due.push(head.activityAtMs + ttlMs);
  const generation = head?.generation ?? INITIAL_GENERATION;
  const latest = head?.latestRunId;
  const deleteRuns: RunRecord[] = [];
  const keep: RunRecord[] = [];
  /** Deletes `run` once `at` (epoch ms) has passed, else keeps it and makes the conversation due then. */
  const deleteFrom = (run: RunRecord, at: number) => {
    if (at <= now) deleteRuns.push(run);
    else {
      keep.push(run);
      due.push(at);
    }
  };

  const earlier: RunRecord[] = []; // completed runs of the current generation below the latest
  for (const run of state.runs) {
    const pastGrace = run.createdAtMs + graceMs;
    if (run.generation < generation) deleteFrom(run, pastGrace); // a clear that died left it
    else if (run.generation > generation) keep.push(run); // never admitted (write.ts): not ours to judge
    else if (run.runId === latest) keep.push(run);
    else if (run.status === 'completed' && latest !== undefined && run.runId < latest) earlier.push(run);
    // Runs that did not complete, and completed runs above the latest (in flight until they publish;
    // abandoned if they never do in RETAIN_FAILED_DAYS): kept that long.
    else deleteFrom(run, Math.max(run.createdAtMs + failedMs, pastGrace));
  }
  earlier.sort((a, b) => b.runId - a.runId);
  earlier.forEach((run, i) => (i < settings.retainCompletedRuns - 1 ? keep.push(run) : deleteFrom(run, run.createdAtMs + graceMs)));

  // Chains: kept while a kept run (or HEAD) references them; stamped when the last reference goes;
  // deleted once the stamp is older than the grace.
  const kept = new Set(keep.map((r) => r.chainId).filter((c) => c !== undefined));
  if (head?.latestChainId !== undefined) kept.add(head.latestChainId);
  const losing = new Set(deleteRuns.map((r) => r.chainId).filter((c) => c !== undefined));
  const stampChains: ChainRecord[] = [];
  const deleteChains: ChainRecord[] = [];
  for (const chain of state.chains) {
    if (kept.has(chain.chainId)) continue;
    if (losing.has(chain.chainId) || chain.updatedAtMs === undefined) {
      stampChains.push(chain);
      due.push(now + graceMs);
    } else if (chain.updatedAtMs + graceMs <= now) {
      deleteChains.push(chain);
    } else {
      due.push(chain.updatedAtMs + graceMs);
    }
  }
  return { expire: false, deleteRuns, stampChains, deleteChains, nextDueAtMs: due.length > 0 ? Math.min(...due) : undefined };
}

/** Consistent Query of the whole partition (HEAD, RUN#, CHAIN#), paged with the SDK paginator. */
async function readPartition(ctx: StoreContext, pk: string, abortSignal?: AbortSignal): Promise<PartitionState> {
  let head: RetentionHead | undefined;
  const runs: RunRecord[] = [];
  const chains: ChainRecord[] = [];
  const pages = paginateQuery(
    { client: ctx.ddb },
    { TableName: ctx.table, KeyConditionExpression: 'pk = :pk', ExpressionAttributeValues: marshall({ ':pk': pk }), ConsistentRead: true },
    { abortSignal },
  );
  for await (const page of pages) {
    for (const item of page.Items ?? []) {
      const sk = item['sk']?.S ?? '';
      if (sk === HEAD_SK) head = headOf(item);
      else if (sk.startsWith(RUN_SK_PREFIX)) runs.push(fromRunItem(item));
      else if (sk.startsWith(CHAIN_SK_PREFIX)) chains.push(fromChainItem(item));
    }
  }
  return { head, runs, chains };
}

function headOf(item: Item): RetentionHead {
  const v = unmarshall(item);
  const num = (k: string) => (typeof v[k] === 'number' ? (v[k] as number) : undefined);
  const str = (k: string) => (typeof v[k] === 'string' ? (v[k] as string) : undefined);
  return {
    generation: num('generation') ?? INITIAL_GENERATION,
    latestRunId: num('latestRunId'),
    latestChainId: str('latestChainId'),
    activityAtMs: num('activityAtMs'),
    retentionDueAtMs: num('retentionDueAtMs'),
    agentId: str('agentId'),
    conversationId: str('conversationId'),
    orgKey: str('orgKey'),
  };
}

/** DeleteItem under `condition`; true when this call removed the item (ReturnValues ALL_OLD), false when it was gone or changed. */
async function deleteIfUnchanged(ctx: StoreContext, key: Item, condition: string, values: Item, abortSignal?: AbortSignal): Promise<boolean> {
  try {
    const res = await ctx.ddb.send(
      new DeleteItemCommand({ TableName: ctx.table, Key: key, ConditionExpression: condition, ExpressionAttributeValues: values, ReturnValues: 'ALL_OLD' }),
      { abortSignal },
    );
    return res.Attributes !== undefined;
  } catch (err) {
    if (err instanceof ConditionalCheckFailedException) return false;
    throw err;
  }
}

/** SET updatedAtMs = now on a chain still at the version read (an append since keeps it referenced and fresh anyway). */
async function stampChain(ctx: StoreContext, pk: string, chain: ChainRecord, now: number, abortSignal?: AbortSignal): Promise<void> {
  try {
    await ctx.ddb.send(
      new UpdateItemCommand({
        TableName: ctx.table,
        Key: chainKey(pk, chain.chainId),
        UpdateExpression: 'SET updatedAtMs = :now',
        ConditionExpression: 'version = :version',
        ExpressionAttributeValues: marshall({ ':now': now, ':version': chain.version }),
      }),
      { abortSignal },
    );
  } catch (err) {
    if (!(err instanceof ConditionalCheckFailedException)) throw err;
  }
}

/**
 * Writes the counters and the next due time back to HEAD, conditional on `activityAtMs` unchanged; when a
 * write came in between (it set the due time to now), only the counters. A HEAD that is not listed (no
 * `activityAtMs`) is neither in the index nor counted: left alone.
 */
async function writeBack(
  ctx: StoreContext,
  pk: string,
  head: RetentionHead | undefined,
  nextDueAtMs: number | undefined,
  removed: { runs: number; bytes: number },
  abortSignal?: AbortSignal,
): Promise<void> {
  if (head?.activityAtMs === undefined) return;
  const counted = removed.runs > 0 || removed.bytes > 0;
  if (!counted && nextDueAtMs === head.retentionDueAtMs) return;
  const add = counted ? ' ADD runCount :runs, storedBytesTotal :bytes' : '';
  const counters = counted ? { ':runs': -removed.runs, ':bytes': -removed.bytes } : {};
  try {
    await ctx.ddb.send(
      new UpdateItemCommand({
        TableName: ctx.table,
        Key: headKey(pk),
        UpdateExpression: `${nextDueAtMs === undefined ? 'REMOVE retentionDueAtMs' : 'SET retentionDueAtMs = :due'}${add}`,
        ConditionExpression: 'activityAtMs = :activity',
        ExpressionAttributeValues: marshall({ ':activity': head.activityAtMs, ...(nextDueAtMs !== undefined && { ':due': nextDueAtMs }), ...counters }),
      }),
      { abortSignal },
    );
  } catch (err) {
    if (!(err instanceof ConditionalCheckFailedException)) throw err;
    if (!counted) return;
    // A write came in between: it made the conversation due again; only subtract what was removed —
    // never on a HEAD an erasure has un-listed since (no counters to keep), nor on one of a later generation:
    // after an erasure (or a clear) the counters are those of what was written since, and what this pass
    // removed was never counted in them (they would go negative).
    const sameGeneration = currentGenerationCondition(head.generation);
    try {
      await ctx.ddb.send(
        new UpdateItemCommand({
          TableName: ctx.table,
          Key: headKey(pk),
          UpdateExpression: 'ADD runCount :runs, storedBytesTotal :bytes',
          ConditionExpression: `attribute_exists(runCount) AND ${sameGeneration.expression}`,
          ExpressionAttributeValues: { ...marshall(counters), ...sameGeneration.values },
        }),
        { abortSignal },
      );
    } catch (inner) {
      if (!(inner instanceof ConditionalCheckFailedException)) throw inner;
    }
  }
}

function errorFields(err: unknown): Record<string, unknown> {
  return err instanceof Error ? { name: err.name, message: err.message } : { message: String(err) };
}
