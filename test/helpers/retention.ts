/**
 * Shared helpers of the retention tests: a clocked store over the local service's storage, the records of
 * a conversation's partition, the objects under its prefix, and the objects its records reference.
 */
import { paginateQuery } from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import type { LocalService } from '../../local/service.js';
import { INDEX, retentionShardOf } from '../../functions/lib/store/registry.js';
import type { RetentionSettings } from '../../functions/lib/store/retention-settings.js';
import { listObjectPages } from '../../functions/lib/store/objects.js';
import { CHAIN_SK_PREFIX, fromChainItem, fromRunItem, HEAD_SK, RUN_SK_PREFIX, type ChainRecord, type RunRecord } from '../../functions/lib/store/schema.js';
import type { SnapshotStore } from '../../functions/lib/store/index.js';
import { FaultPlan, faultyStore } from './faults.js';

export const MINUTE = 60_000;
export const HOUR = 60 * MINUTE;
export const DAY = 24 * HOUR;

/** A store over `svc`'s storage whose clock reads `now()` and whose AWS calls go through `plan`. */
export function clockedStore(svc: LocalService, now: () => number, opts: { plan?: FaultPlan; retention?: Partial<RetentionSettings> } = {}): SnapshotStore {
  return faultyStore(svc, opts.plan ?? new FaultPlan(), { now, ...(opts.retention && { retention: opts.retention }) });
}

export interface Partition {
  /** HEAD's attributes, unmarshalled (undefined: no HEAD). */
  head: Record<string, unknown> | undefined;
  runs: RunRecord[];
  chains: ChainRecord[];
}

/** Every record of the conversation `pk` (consistent Query). */
export async function partition(svc: LocalService, pk: string): Promise<Partition> {
  const out: Partition = { head: undefined, runs: [], chains: [] };
  const pages = paginateQuery(
    { client: svc.ddb },
    { TableName: svc.config.tableName, KeyConditionExpression: 'pk = :pk', ExpressionAttributeValues: marshall({ ':pk': pk }), ConsistentRead: true },
  );
  for await (const page of pages) {
    for (const item of page.Items ?? []) {
      const sk = item['sk']!.S!;
      if (sk === HEAD_SK) out.head = unmarshall(item);
      else if (sk.startsWith(RUN_SK_PREFIX)) out.runs.push(fromRunItem(item));
      else if (sk.startsWith(CHAIN_SK_PREFIX)) out.chains.push(fromChainItem(item));
    }
  }
  out.runs.sort((a, b) => a.runId - b.runId);
  return out;
}

/** The objects under `<prefix><pk>/` (default snapshots/), key → size in bytes. */
export async function objectsOf(svc: LocalService, pk: string, prefix = 'snapshots/'): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for await (const page of listObjectPages(svc.store, { prefix: `${prefix}${pk}/` })) for (const o of page) out.set(o.Key!, o.Size ?? 0);
  return out;
}

/** The objects the records reference: a non-chain run's object, every chain's extents. */
export function referencedKeys(p: Partition): Set<string> {
  const keys = new Set<string>();
  for (const r of p.runs) if (r.chainId === undefined) keys.add(r.s3Key);
  for (const c of p.chains) for (const e of c.extents) keys.add(e.key);
  return keys;
}

/** Sum of sizes of `objects`. */
export const bytesOf = (objects: Map<string, number>): number => [...objects.values()].reduce((n, b) => n + b, 0);

/** True when `pk` is in the retention work queue (ByRetentionDue) due by `now` — eventually consistent on AWS, exact on the emulators. */
export async function isDue(svc: LocalService, pk: string, now: number): Promise<boolean> {
  const pages = paginateQuery(
    { client: svc.ddb },
    {
      TableName: svc.config.tableName,
      IndexName: INDEX.byRetentionDue.name,
      KeyConditionExpression: 'retentionShard = :s AND retentionDueAtMs <= :now',
      ExpressionAttributeValues: marshall({ ':s': retentionShardOf(pk), ':now': now }),
    },
  );
  for await (const page of pages) if ((page.Items ?? []).some((i) => i['pk']?.S === pk)) return true;
  return false;
}
