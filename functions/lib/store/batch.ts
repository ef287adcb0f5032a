import {
  BatchGetItemCommand,
  BatchWriteItemCommand,
  type BatchGetItemCommandOutput,
  type BatchWriteItemCommandOutput,
  type KeysAndAttributes,
  type WriteRequest,
} from '@aws-sdk/client-dynamodb';
import type { StoreContext } from './context.js';
import type { Item } from './schema.js';

/** BatchGetItem reads at most this many keys per call. */
const BATCH_GET_MAX_KEYS = 100;
/** BatchWriteItem writes at most this many items per call. */
const BATCH_WRITE_MAX_ITEMS = 25;

/** Backoff before asking again for unprocessed keys or items (AWS's advice for batch calls). */
function backoff(attempt: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.min(1_000, 50 * 2 ** attempt)));
}

/** Consistent BatchGetItem of `keys`, 100 per call, unprocessed keys retried with backoff. */
export async function batchGet(ctx: StoreContext, keys: readonly Item[], abortSignal?: AbortSignal): Promise<Item[]> {
  const items: Item[] = [];
  for (let i = 0; i < keys.length; i += BATCH_GET_MAX_KEYS) {
    let request: KeysAndAttributes | undefined = { Keys: keys.slice(i, i + BATCH_GET_MAX_KEYS), ConsistentRead: true };
    for (let attempt = 0; request?.Keys?.length; attempt++) {
      // Unprocessed keys mean throttling: back off before asking again.
      if (attempt > 0) await backoff(attempt);
      const res: BatchGetItemCommandOutput = await ctx.ddb.send(new BatchGetItemCommand({ RequestItems: { [ctx.table]: request } }), { abortSignal });
      items.push(...(res.Responses?.[ctx.table] ?? []));
      request = res.UnprocessedKeys?.[ctx.table];
    }
  }
  return items;
}

/**
 * Unconditional BatchWriteItem PutRequests of `items`, 25 per call, unprocessed items retried with backoff.
 * Only for items whose put is idempotent (the same key always gets the same attributes): a batch is not
 * atomic and cannot be conditional.
 */
export async function batchPut(ctx: StoreContext, items: readonly Item[], abortSignal?: AbortSignal): Promise<void> {
  for (let i = 0; i < items.length; i += BATCH_WRITE_MAX_ITEMS) {
    let requests: WriteRequest[] | undefined = items.slice(i, i + BATCH_WRITE_MAX_ITEMS).map((Item) => ({ PutRequest: { Item } }));
    for (let attempt = 0; requests?.length; attempt++) {
      if (attempt > 0) await backoff(attempt);
      const res: BatchWriteItemCommandOutput = await ctx.ddb.send(new BatchWriteItemCommand({ RequestItems: { [ctx.table]: requests } }), { abortSignal });
      requests = res.UnprocessedItems?.[ctx.table];
    }
  }
}
