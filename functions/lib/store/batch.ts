import { BatchGetItemCommand, type BatchGetItemCommandOutput, type KeysAndAttributes } from '@aws-sdk/client-dynamodb';
import type { StoreContext } from './context.js';
import type { Item } from './schema.js';

/** BatchGetItem reads at most this many keys per call. */
const BATCH_GET_MAX_KEYS = 100;

/** Consistent BatchGetItem of `keys`, 100 per call, unprocessed keys retried with backoff. */
export async function batchGet(ctx: StoreContext, keys: readonly Item[], abortSignal?: AbortSignal): Promise<Item[]> {
  const items: Item[] = [];
  for (let i = 0; i < keys.length; i += BATCH_GET_MAX_KEYS) {
    let request: KeysAndAttributes | undefined = { Keys: keys.slice(i, i + BATCH_GET_MAX_KEYS), ConsistentRead: true };
    for (let attempt = 0; request?.Keys?.length; attempt++) {
      // Unprocessed keys mean throttling: back off before asking again (AWS's advice for batch calls).
      if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, Math.min(1_000, 50 * 2 ** attempt)));
      const res: BatchGetItemCommandOutput = await ctx.ddb.send(new BatchGetItemCommand({ RequestItems: { [ctx.table]: request } }), { abortSignal });
      items.push(...(res.Responses?.[ctx.table] ?? []));
      request = res.UnprocessedKeys?.[ctx.table];
    }
  }
  return items;
}
