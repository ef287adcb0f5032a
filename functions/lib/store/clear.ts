import { ConditionalCheckFailedException, DeleteItemCommand, paginateQuery, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { marshall } from '@aws-sdk/util-dynamodb';
import { conversationKey, type ConversationScope } from '../ids.js';
import type { CallOptions, StoreContext } from './context.js';
import { beforeFenceCondition, fenceAt, isAfterFence } from './fence.js';
import { deleteObjects, listObjectPages } from './objects.js';
import { fromRunItem, headKey, issuedAtOfKey, REMOVE_LATEST, runKey, RUN_SK_PREFIX, SNAPSHOT_PREFIX, UPLOAD_PREFIX, type Fence, type RunRecord } from './schema.js';

/**
 * Clear (DELETE, invariant I4):
 *   1. Fence first: HEAD gets the fence (fence.ts) and loses `latest` — from here on hydrate answers 404
 *      and no run from before the fence can publish.
 *   2. Delete every run from before the fence: objects first (DeleteObjects), then each record with the
 *      fence's exact negation as its condition. A crash in between leaves a record whose object is gone,
 *      but that record is before the fence, so it is never published; a retry deletes it. Runs after the
 *      fence belong to new runs and are left alone.
 *   3. Sweep objects no record points to — uploads never committed, writers that crashed before their
 *      claim — written with tokens from before the fence (their key carries the writer's iat).
 *
 * @returns the number of RUN records this call deleted. Throws SDK errors (the caller retries: every
 *          step is idempotent).
 */
export async function clearConversation(ctx: StoreContext, scope: ConversationScope, opts: CallOptions = {}): Promise<{ deleted: number }> {
  const pk = conversationKey(scope);
  const fence = fenceAt(ctx.now());
  const abortSignal = opts.signal;

  // 1. Fences only move forward; if a concurrent clear already set a later one, ours is subsumed by it
  //    (everything we delete below is also before that fence), so we leave HEAD alone.
  try {
    await ctx.ddb.send(
      new UpdateItemCommand({
        TableName: ctx.table,
        Key: headKey(pk),
        UpdateExpression: `SET clearedAtMs = :ms, clearedAtSec = :sec ${REMOVE_LATEST}`,
        ConditionExpression: 'attribute_not_exists(clearedAtMs) OR clearedAtMs <= :ms',
        ExpressionAttributeValues: marshall({ ':ms': fence.ms, ':sec': fence.sec }),
      }),
      { abortSignal },
    );
  } catch (err) {
    if (!(err instanceof ConditionalCheckFailedException)) throw err;
  }

  // 2. Every run from before the fence.
  let deleted = 0;
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
    const doomed = (page.Items ?? []).map(fromRunItem).filter((r) => !isAfterFence(r, fence));
    if (doomed.length === 0) continue;
    await deleteObjects(ctx, doomed.map((r) => r.s3Key), abortSignal);
    const removed = await Promise.all(doomed.map((r) => deleteRunBefore(ctx, pk, r, fence, abortSignal)));
    deleted += removed.filter(Boolean).length;
  }

  // 3. Orphans from before the fence: such a writer can never publish after it, so deleting its object
  //    cannot break a future HEAD.
  await sweep(ctx, `${SNAPSHOT_PREFIX}${pk}/`, fence, abortSignal);
  await sweep(ctx, `${UPLOAD_PREFIX}${pk}/`, fence, abortSignal);
  return { deleted };
}

/** Deletes the RUN record if it is still the one we read and still before the fence. */
async function deleteRunBefore(ctx: StoreContext, pk: string, r: RunRecord, fence: Fence, abortSignal?: AbortSignal): Promise<boolean> {
  const before = beforeFenceCondition(fence);
  try {
    const res = await ctx.ddb.send(
      new DeleteItemCommand({
        TableName: ctx.table,
        Key: runKey(pk, r.runId),
        // A new run may have re-claimed this runId after another clear deleted the old record.
        ConditionExpression: `s3Key = :key AND ${before.expression}`,
        ExpressionAttributeValues: { ...marshall({ ':key': r.s3Key }), ...before.values },
        ReturnValues: 'ALL_OLD',
      }),
      { abortSignal },
    );
    return res.Attributes !== undefined;
  } catch (err) {
    if (err instanceof ConditionalCheckFailedException) return false;
    throw err;
  }
}

async function sweep(ctx: StoreContext, prefix: string, fence: Fence, abortSignal?: AbortSignal): Promise<void> {
  for await (const objects of listObjectPages(ctx, { prefix }, abortSignal)) {
    const orphans = objects
      .map((o) => o.Key)
      .filter((k): k is string => {
        const iat = k === undefined ? undefined : issuedAtOfKey(k);
        return iat !== undefined && iat < fence.sec;
      });
    await deleteObjects(ctx, orphans, abortSignal);
  }
}
