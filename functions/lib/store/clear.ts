import { GetItemCommand, paginateQuery } from '@aws-sdk/client-dynamodb';
import { marshall } from '@aws-sdk/util-dynamodb';
import { conversationKey, type ConversationScope } from '../ids.js';
import type { CallOptions, StoreContext } from './context.js';
import { currentGenerationCondition, legacyGeneration, type ResetState } from './fence.js';
import { deleteObjects, listObjectPages } from './objects.js';
import { deleteStaleRun, updateHeadIf } from './write.js';
import { ConditionalCheckFailedException, DeleteItemCommand, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import {
  CHAIN_SK_PREFIX,
  chainKey,
  fromChainItem,
  fromRunItem,
  generationOfHeadItem,
  headKey,
  MATERIALIZED_PREFIX,
  REMOVE_LATEST,
  RUN_SK_PREFIX,
  SNAPSHOT_PREFIX,
  tagOfKey,
  UPLOAD_PREFIX,
  type ChainRecord,
} from './schema.js';

/**
 * Clear (DELETE, invariant I4), ordered by generations (fence.ts), never by clocks:
 *   1. Read HEAD's generation g (consistent).
 *   2. Fence: UpdateItem HEAD `generation = g+1, clearedAtMs = now, REMOVE latest` IF generation = g.
 *      From here on hydrate answers 404 and no run of generation ≤ g can publish.
 *      If the condition fails, HEAD moved past g after step 1: a concurrent clear, or this very
 *      UpdateItem retried by the SDK after its response was lost. Either way a clear took effect after
 *      this one started, so this one is done — and an SDK retry never bumps twice, so it never removes a run
 *      acknowledged after it.
 *   3. Delete every run of a generation < g+1: objects first (DeleteObjects), then each record under the
 *      fence's exact negation. A crash in between leaves a stale record whose object is gone; it can never
 *      publish, and a retry deletes it. Runs of newer generations are left alone.
 *   4. Delete every chain of a generation < g+1 the same way: its objects, then its record (chains
 *      are never shared across generations: an append's base must be of the current one).
 *   5. Sweep objects no record points to (uploads never committed, writers that died before their claim,
 *      materialized copies) whose key says they belong before the fence.
 *   6. The listing counters on HEAD lose what steps 3–4 removed, as retention does (`ADD runCount -n,
 *      storedBytesTotal -bytes`: the objects of the runs that are not in a chain, and the extents of the
 *      chains), only while HEAD is listed (`attribute_exists(runCount)`: never on a HEAD an erasure has
 *      un-listed). Only the call that deleted a record counts it, so a concurrent retention pass or clear
 *      never subtracts it twice. Skipped when nothing was removed.
 *
 * @returns the number of RUN records this call deleted. Throws SDK errors (every step is idempotent).
 */
export async function clearConversation(ctx: StoreContext, scope: ConversationScope, opts: CallOptions = {}): Promise<{ deleted: number }> {
  const pk = conversationKey(scope);
  const abortSignal = opts.signal;

  // 1–2. Bump the generation, once.
  const head = await ctx.ddb.send(
    new GetItemCommand({ TableName: ctx.table, Key: headKey(pk), ConsistentRead: true, ProjectionExpression: 'generation' }),
    { abortSignal },
  );
  const seen = generationOfHeadItem(head.Item);
  let reset: ResetState = { generation: seen + 1, clearedAtMs: ctx.now() };
  const current = currentGenerationCondition(seen);
  const fenced = await updateHeadIf(
    ctx,
    pk,
    {
      update: `SET generation = :next, clearedAtMs = :now ${REMOVE_LATEST}`,
      condition: current.expression,
      values: { ...marshall({ ':next': reset.generation, ':now': reset.clearedAtMs }), ...current.values },
    },
    abortSignal,
  );
  // Someone (maybe our own first attempt, retried by the SDK) fenced already: delete what is before THAT fence.
  if (fenced !== true) reset = { generation: fenced.head ? generationOfHeadItem(fenced.head) : seen + 1, clearedAtMs: reset.clearedAtMs };

  // 3. Every run of an older generation.
  let deleted = 0;
  let removedBytes = 0;
  const pages = paginateQuery(
    { client: ctx.ddb },
    {
      TableName: ctx.table,
      KeyConditionExpression: 'pk = :pk AND begins_with(sk, :run)',
      ExpressionAttributeValues: marshall({ ':pk': pk, ':run': RUN_SK_PREFIX }),
      ConsistentRead: true,
    },
    { abortSignal },
  );
  for await (const page of pages) {
    const doomed = (page.Items ?? []).map(fromRunItem).filter((r) => r.generation < reset.generation);
    if (doomed.length === 0) continue;
    await deleteObjects(ctx, doomed.map((r) => r.s3Key), abortSignal);
    const removed = await Promise.all(doomed.map((r) => deleteStaleRun(ctx, pk, r, reset.generation, abortSignal)));
    deleted += removed.filter(Boolean).length;
    // A chain run's object belongs to its chain (counted with the chain below).
    removedBytes += doomed.reduce((n, r, i) => n + (removed[i] && r.chainId === undefined ? r.storedBytes : 0), 0);
  }

  // 4. Every chain of an older generation (after the runs: a run is never left naming a missing chain).
  const chains = paginateQuery(
    { client: ctx.ddb },
    {
      TableName: ctx.table,
      KeyConditionExpression: 'pk = :pk AND begins_with(sk, :chain)',
      ExpressionAttributeValues: marshall({ ':pk': pk, ':chain': CHAIN_SK_PREFIX }),
      ConsistentRead: true,
    },
    { abortSignal },
  );
  for await (const page of chains) {
    const doomed = (page.Items ?? []).map(fromChainItem).filter((c) => c.generation < reset.generation);
    if (doomed.length === 0) continue;
    await deleteObjects(ctx, doomed.flatMap((c) => c.extents.map((e) => e.key)), abortSignal);
    const removed = await Promise.all(doomed.map((c) => deleteStaleChain(ctx, pk, c, reset.generation, abortSignal)));
    removedBytes += doomed.reduce((n, c, i) => n + (removed[i] ? c.extents.reduce((m, e) => m + e.length, 0) : 0), 0);
  }

  // 5. Orphans from before the fence: such a writer can never publish after it, so deleting its object
  //    cannot break a future HEAD.
  await sweep(ctx, `${SNAPSHOT_PREFIX}${pk}/`, reset, abortSignal);
  await sweep(ctx, `${UPLOAD_PREFIX}${pk}/`, reset, abortSignal);
  await sweep(ctx, `${MATERIALIZED_PREFIX}${pk}/`, reset, abortSignal);

  // 6. The listing counters (the operator API's runs and bytes) lose what this call removed.
  if (deleted > 0 || removedBytes > 0) await subtractCounters(ctx, pk, deleted, removedBytes, abortSignal);
  return { deleted };
}

/** `ADD runCount -runs, storedBytesTotal -bytes` on a listed HEAD; nothing on one that is not listed. */
async function subtractCounters(ctx: StoreContext, pk: string, runs: number, bytes: number, abortSignal?: AbortSignal): Promise<void> {
  try {
    await ctx.ddb.send(
      new UpdateItemCommand({
        TableName: ctx.table,
        Key: headKey(pk),
        UpdateExpression: 'ADD runCount :runs, storedBytesTotal :bytes',
        ConditionExpression: 'attribute_exists(runCount)',
        ExpressionAttributeValues: marshall({ ':runs': -runs, ':bytes': -bytes }),
      }),
      { abortSignal },
    );
  } catch (err) {
    if (!(err instanceof ConditionalCheckFailedException)) throw err;
  }
}

/**
 * Deletes a CHAIN record while it is still of a generation before `generation` (a chain is never re-created
 * under its id). True when this call deleted it (false: gone already, or of a newer generation).
 */
export async function deleteStaleChain(ctx: StoreContext, pk: string, c: ChainRecord, generation: number, abortSignal?: AbortSignal): Promise<boolean> {
  try {
    await ctx.ddb.send(
      new DeleteItemCommand({
        TableName: ctx.table,
        Key: chainKey(pk, c.chainId),
        ConditionExpression: 'generation < :fence',
        ExpressionAttributeValues: marshall({ ':fence': generation }),
      }),
      { abortSignal },
    );
    return true;
  } catch (err) {
    if (!(err instanceof ConditionalCheckFailedException)) throw err;
    return false;
  }
}

/**
 * True when an object with this key belongs before the fence `reset` (by its generation, or its writer's iat).
 * False for a key without a tag (`tagOfKey`): a clear never deletes what it does not understand.
 */
export function beforeFence(s3Key: string, reset: ResetState, windowSeconds: number): boolean {
  const tag = tagOfKey(s3Key);
  if (!tag) return false; // never delete what we do not understand
  if ('generation' in tag) return tag.generation < reset.generation;
  return legacyGeneration(tag.iat, tag.iat * 1000, reset, windowSeconds) === undefined;
}

async function sweep(ctx: StoreContext, prefix: string, reset: ResetState, abortSignal?: AbortSignal): Promise<void> {
  for await (const objects of listObjectPages(ctx, { prefix }, abortSignal)) {
    const orphans = objects.map((o) => o.Key).filter((k): k is string => k !== undefined && beforeFence(k, reset, ctx.legacyFenceWindowSeconds));
    await deleteObjects(ctx, orphans, abortSignal);
  }
}
