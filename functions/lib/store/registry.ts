import { createHash } from 'node:crypto';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import { encodeId, type ConversationScope } from '../ids.js';
import { itemKey, type Item } from './schema.js';

/**
 * The organization partition, listing attributes and erasure fences (docs/DESIGN.md § Retention, erasure and
 * the operator API). The one place that names them.
 *
 * Org partition `pk = ~org#<orgSegment>` (no `/`: never a conversation key):
 *   FENCE                          the organization's erasure fence: `epoch`, `erasing` (receipt id, while erasing)
 *   FENCE#<agentSegment>           an agent's erasure fence
 *   CONV#<agentSegment>/<convSeg>  registry: the conversation exists (read consistently by erasure)
 *   ERASURE#<receiptId>            an erasure receipt (erasure.ts)
 *   ERASING#<receiptId>#<agent>/<conv>        one conversation's progress within an erasure
 *   ERASED#<receiptId>#<agent>/<conv>#<mark>  one record or object an erasure removed (what it counts)
 * Partition `~erasing` (no `/`): one pointer per running erasure, `sk` = the scope's key path
 * (`<org>`, `<org>/<agent>` or `<org>/<agent>/<conv>`).
 */
export const ORG_PK_PREFIX = '~org#';
export const FENCE_SK = 'FENCE';
export const AGENT_FENCE_SK_PREFIX = 'FENCE#';
export const REGISTRY_SK_PREFIX = 'CONV#';
export const ERASURE_SK_PREFIX = 'ERASURE#';
/** Progress items sort apart from receipts, so a Query of `ERASURE#` lists receipts only. */
export const ERASURE_PROGRESS_SK_PREFIX = 'ERASING#';
export const ERASURE_MARK_SK_PREFIX = 'ERASED#';
/** Partition of the running-erasure pointers; contains no `/`, so it can never be a conversation key. */
export const ERASING_PK = '~erasing';

/** GSI names and their keys (all sparse: only registered HEAD items carry the attributes). */
export const INDEX = {
  byOrganization: { name: 'ByOrganization', partitionKey: 'orgKey', sortKey: 'activityAtMs' },
  byAgent: { name: 'ByAgent', partitionKey: 'agentKey', sortKey: 'activityAtMs' },
  byRetentionDue: { name: 'ByRetentionDue', partitionKey: 'retentionShard', sortKey: 'retentionDueAtMs' },
} as const;

/** Non-key attributes the GSIs project (INCLUDE): what a listing page shows without reading HEAD. */
export const INDEX_PROJECTION = [
  'agentId',
  'conversationId',
  'latestRunId',
  'latestBytes',
  'generation',
  'runCount',
  'storedBytesTotal',
] as const;

/** The retention pass walks this many `ByRetentionDue` partitions (spreads the index's writes). */
export const RETENTION_SHARDS = 16;

/** HEAD attributes that list a conversation; erasure removes them all (HEAD stays as a fence tombstone). */
export const LISTING_ATTRIBUTES = [
  'orgKey',
  'agentKey',
  'activityAtMs',
  'agentId',
  'conversationId',
  'retentionShard',
  'retentionDueAtMs',
  'runCount',
  'storedBytesTotal',
] as const;

/** `REMOVE orgKey, agentKey, …`: un-lists a conversation. */
export const REMOVE_LISTING = `REMOVE ${LISTING_ATTRIBUTES.join(', ')}`;

/** The encoded segments of a conversation scope. */
export interface Segments {
  readonly org: string;
  readonly agent: string;
  readonly conv: string;
}

export function segmentsOf(scope: ConversationScope): Segments {
  return { org: encodeId(scope.organizationId), agent: encodeId(scope.agentId), conv: encodeId(scope.conversationId) };
}

/** `~org#<orgSegment>`: the organization partition. */
export function orgPk(orgSegment: string): string {
  return ORG_PK_PREFIX + orgSegment;
}

export function orgFenceKey(orgSegment: string): Item {
  return itemKey(orgPk(orgSegment), FENCE_SK);
}

export function agentFenceKey(orgSegment: string, agentSegment: string): Item {
  return itemKey(orgPk(orgSegment), AGENT_FENCE_SK_PREFIX + agentSegment);
}

export function registryKey(s: Segments): Item {
  return itemKey(orgPk(s.org), `${REGISTRY_SK_PREFIX}${s.agent}/${s.conv}`);
}

/** `r<n>`, n = first byte of sha256(pk) mod {@link RETENTION_SHARDS}. */
export function retentionShardOf(pk: string): string {
  return `r${createHash('sha256').update(pk).digest()[0]! % RETENTION_SHARDS}`;
}

/** An erasure fence as read (absent item: epoch 0, not erasing). */
export interface ScopeFence {
  readonly epoch: number;
  readonly erasing: string | undefined;
}

export function fromFenceItem(item: Item | undefined): ScopeFence {
  const v = item ? unmarshall(item) : {};
  return {
    epoch: typeof v['epoch'] === 'number' ? v['epoch'] : 0,
    erasing: typeof v['erasing'] === 'string' ? v['erasing'] : undefined,
  };
}

/**
 * `ConditionCheck` expression that holds while the fence is still what admission read (`epoch` unchanged —
 * absent when it was 0) and no erasure runs. Placeholders are prefixed with `prefix` (one per fence).
 */
export function fenceUnchangedCondition(fence: ScopeFence, prefix: string): { expression: string; values: Item } {
  const epoch = `:${prefix}Epoch`;
  return {
    expression:
      fence.epoch === 0
        ? `(attribute_not_exists(epoch) OR epoch = ${epoch}) AND attribute_not_exists(erasing)`
        : `epoch = ${epoch} AND attribute_not_exists(erasing)`,
    values: marshall({ [epoch]: fence.epoch }),
  };
}

/**
 * `SET` clauses and values for a write's listing attributes on HEAD (placeholders `:l_…`), and the counter
 * increments (`ADD runCount :l_runs, storedBytesTotal :l_bytes`). `storedBytes`: what this write stored.
 */
export function listingUpdate(
  scope: ConversationScope,
  pk: string,
  nowMs: number,
  storedBytes: number,
): { set: string[]; add: string[]; values: Item } {
  const s = segmentsOf(scope);
  return {
    set: [
      'orgKey = :l_org',
      'agentKey = :l_agent',
      'activityAtMs = :l_now',
      'agentId = :l_agentId',
      'conversationId = :l_conversationId',
      'retentionShard = :l_shard',
      'retentionDueAtMs = :l_now',
    ],
    add: ['runCount :l_runs', 'storedBytesTotal :l_bytes'],
    values: marshall({
      ':l_org': s.org,
      ':l_agent': `${s.org}/${s.agent}`,
      ':l_now': nowMs,
      ':l_agentId': scope.agentId,
      ':l_conversationId': scope.conversationId,
      ':l_shard': retentionShardOf(pk),
      ':l_runs': 1,
      ':l_bytes': storedBytes,
    }),
  };
}

/**
 * The registry item of a conversation (Put before its first listed HEAD write: § Registration).
 * `registeredBy`: a token unique to the request that puts it, so that the request can remove its own
 * registration again when it is fenced (a conditional DeleteItem), and never one a later write put.
 */
export function registryItem(scope: ConversationScope, nowMs: number, registeredBy: string): Item {
  const s = segmentsOf(scope);
  return {
    ...registryKey(s),
    ...marshall({ agentId: scope.agentId, conversationId: scope.conversationId, registeredAtMs: nowMs, registeredBy }),
  };
}
