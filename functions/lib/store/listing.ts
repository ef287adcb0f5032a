import { GetItemCommand, QueryCommand, type QueryCommandOutput } from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import { conversationKey, encodeId, type ConversationScope } from '../ids.js';
import type { CallOptions, StoreContext } from './context.js';
import { INDEX, orgPk, REGISTRY_SK_PREFIX } from './registry.js';
import { fromRunItem, generationOfHeadItem, headKey, HEAD_SK, RUN_SK_PREFIX, runKey, type Item, type RunRecord } from './schema.js';

/**
 * Read-only listings for the operator API (docs/DESIGN.md § Operator API): conversations (GSI `ByOrganization`
 * or `ByAgent`, newest activity first), the runs of one conversation (its partition, highest run first), one
 * run's record, and per-agent counts (the registry for the agents, `ByAgent` for their counters).
 *
 * Every key a listing touches is derived from the organization (and agent, conversation) it is given; a
 * page's resume key (`next`, DynamoDB's LastEvaluatedKey) is handed back to the caller, which must pass
 * it through the matching `is…StartKey` check before it is used again: a start key outside the partition
 * would let a listing continue in someone else's data.
 */

/** Encoded segments are `[A-Za-z0-9_%-]+` or `~` + 64 hex (ids.ts). */
const SEGMENT = /^(?:[A-Za-z0-9_%-]{1,200}|~[0-9a-f]{64})$/;

/** One page of a listing: the items and the key the next page starts after (undefined: the last page). */
export interface Page<T> {
  readonly items: T[];
  readonly next: Record<string, unknown> | undefined;
}

export interface PageOptions extends CallOptions {
  /** Most items on the page (DynamoDB `Limit`). */
  readonly limit: number;
  /** Resume key of the previous page (already checked by the matching `is…StartKey`). */
  readonly startKey?: Record<string, unknown> | undefined;
}

/** A listed conversation, from its HEAD's listing attributes (registry.ts) as the GSI projects them. */
export interface ConversationSummary {
  readonly agentId: string;
  readonly conversationId: string;
  /** Service clock (epoch ms) of the conversation's last write. */
  readonly lastActivityAtMs: number;
  /** The run hydrate serves, when one is published. */
  readonly latestRunId: number | undefined;
  readonly latestBytes: number | undefined;
  /** Runs written (approximate counters, registry.ts). */
  readonly runs: number;
  /** Stored (compressed) bytes written. */
  readonly bytes: number;
}

/** Which GSI partition a conversation listing reads: the organization's, or one agent's. */
export interface ConversationPartition {
  readonly index: typeof INDEX.byOrganization | typeof INDEX.byAgent;
  /** The partition key value: `<org>` or `<org>/<agent>` (encoded segments). */
  readonly value: string;
  /** Every HEAD in the partition has a `pk` that starts with this. */
  readonly pkPrefix: string;
}

/** The GSI partition that lists `organizationId`'s conversations, or only `agentId`'s when given. */
export function conversationPartition(organizationId: string, agentId?: string): ConversationPartition {
  const org = encodeId(organizationId);
  if (agentId === undefined) return { index: INDEX.byOrganization, value: org, pkPrefix: `${org}/` };
  const agent = encodeId(agentId);
  return { index: INDEX.byAgent, value: `${org}/${agent}`, pkPrefix: `${org}/${agent}/` };
}

const isSafeNumber = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const hasExactly = (o: Record<string, unknown>, names: readonly string[]) => {
  const keys = Object.keys(o);
  return keys.length === names.length && names.every((n) => Object.hasOwn(o, n));
};

/**
 * True when `key` is a resume key a conversation listing of `partition` can have handed out: exactly the
 * table key and the index key of a HEAD item inside the partition (`pk` = `<prefix><segment>`, `sk` =
 * HEAD, the partition attribute equal to the partition, a non-negative integer activity time).
 */
export function isConversationStartKey(partition: ConversationPartition, key: Record<string, unknown>): boolean {
  const { partitionKey, sortKey } = partition.index;
  if (!hasExactly(key, ['pk', 'sk', partitionKey, sortKey])) return false;
  const pk = key['pk'];
  return (
    key[partitionKey] === partition.value &&
    key['sk'] === HEAD_SK &&
    isSafeNumber(key[sortKey]) &&
    typeof pk === 'string' &&
    pk.startsWith(partition.pkPrefix) &&
    pk.slice(partition.pkPrefix.length).split('/').length === (partition.index === INDEX.byAgent ? 1 : 2) &&
    pk.slice(partition.pkPrefix.length).split('/').every((s) => SEGMENT.test(s))
  );
}

/**
 * One page of conversations, newest activity first: one Query of the partition's GSI (eventually
 * consistent, like every GSI read). Only conversations written since the listing attributes exist are
 * listed (registry.ts); erased ones are not (erasure removes the attributes).
 */
export async function listConversations(ctx: StoreContext, partition: ConversationPartition, opts: PageOptions): Promise<Page<ConversationSummary>> {
  const res = await ctx.ddb.send(
    new QueryCommand({
      TableName: ctx.table,
      IndexName: partition.index.name,
      KeyConditionExpression: '#p = :p',
      ExpressionAttributeNames: { '#p': partition.index.partitionKey },
      ExpressionAttributeValues: marshall({ ':p': partition.value }),
      ScanIndexForward: false,
      Limit: opts.limit,
      ...(opts.startKey && { ExclusiveStartKey: marshall(opts.startKey) }),
    }),
    { abortSignal: opts.signal },
  );
  return { items: (res.Items ?? []).map(fromListedHead), next: resumeKey(res) };
}

function fromListedHead(item: Item): ConversationSummary {
  const v = unmarshall(item);
  const num = (name: string) => (typeof v[name] === 'number' ? (v[name] as number) : undefined);
  return {
    agentId: String(v['agentId']),
    conversationId: String(v['conversationId']),
    lastActivityAtMs: num('activityAtMs') ?? 0,
    latestRunId: num('latestRunId'),
    latestBytes: num('latestBytes'),
    runs: num('runCount') ?? 0,
    bytes: num('storedBytesTotal') ?? 0,
  };
}

function resumeKey(res: QueryCommandOutput): Record<string, unknown> | undefined {
  return res.LastEvaluatedKey ? unmarshall(res.LastEvaluatedKey) : undefined;
}

/** What the runs listing needs from HEAD. */
export interface HeadSummary {
  readonly generation: number;
  readonly latestRunId: number | undefined;
}

/** A run's place in its conversation (docs/DESIGN.md § Operator API). */
export type RunState = 'latest' | 'fenced' | 'superseded';

/**
 * `latest`: HEAD serves it; `fenced`: of a generation before HEAD's (a reset came after it, it can never be
 * served); `superseded`: any other run (a completed run below the latest or not yet published, or a
 * non-completed run: stored, never served).
 */
export function runState(run: RunRecord, head: HeadSummary | undefined): RunState {
  const generation = head?.generation ?? 0;
  if (run.generation < generation) return 'fenced';
  if (head?.latestRunId === run.runId && run.status === 'completed' && run.generation === generation) return 'latest';
  return 'superseded';
}

/** True when `key` is a resume key of the runs listing of the conversation `pk`: `{pk, sk: RUN#<run16>}`. */
export function isRunStartKey(pk: string, key: Record<string, unknown>): boolean {
  return hasExactly(key, ['pk', 'sk']) && key['pk'] === pk && typeof key['sk'] === 'string' && /^RUN#\d{16}$/.test(key['sk']);
}

/**
 * One page of a conversation's runs, highest run id first (one Query of its partition), and its HEAD
 * (one consistent GetItem, in parallel): `head` is undefined when the conversation has no HEAD item (never
 * published nor touched, or never written at all).
 */
export async function listRuns(
  ctx: StoreContext,
  scope: ConversationScope,
  opts: PageOptions,
): Promise<{ head: HeadSummary | undefined; page: Page<RunRecord> }> {
  const pk = conversationKey(scope);
  const [head, res] = await Promise.all([
    readHeadSummary(ctx, pk, opts.signal),
    ctx.ddb.send(
      new QueryCommand({
        TableName: ctx.table,
        KeyConditionExpression: 'pk = :pk AND begins_with(sk, :run)',
        ExpressionAttributeValues: marshall({ ':pk': pk, ':run': RUN_SK_PREFIX }),
        ScanIndexForward: false,
        ConsistentRead: true,
        Limit: opts.limit,
        ...(opts.startKey && { ExclusiveStartKey: marshall(opts.startKey) }),
      }),
      { abortSignal: opts.signal },
    ),
  ]);
  return { head, page: { items: (res.Items ?? []).map(fromRunItem), next: resumeKey(res) } };
}

/** HEAD's generation and published run (consistent read), or undefined when there is no HEAD item. */
export async function readHeadSummary(ctx: StoreContext, pk: string, abortSignal?: AbortSignal): Promise<HeadSummary | undefined> {
  const res = await ctx.ddb.send(
    new GetItemCommand({ TableName: ctx.table, Key: headKey(pk), ConsistentRead: true, ProjectionExpression: 'generation, latestRunId' }),
    { abortSignal },
  );
  if (!res.Item) return undefined;
  const latest = res.Item['latestRunId']?.N;
  return { generation: generationOfHeadItem(res.Item), latestRunId: latest === undefined ? undefined : Number(latest) };
}

/** A run's record (consistent read), or undefined when there is none. */
export async function readRun(ctx: StoreContext, pk: string, runId: number, abortSignal?: AbortSignal): Promise<RunRecord | undefined> {
  const res = await ctx.ddb.send(new GetItemCommand({ TableName: ctx.table, Key: runKey(pk, runId), ConsistentRead: true }), { abortSignal });
  return res.Item ? fromRunItem(res.Item) : undefined;
}

/** Per-agent counts: its listed conversations and the sums of their HEAD counters. */
export interface AgentSummary {
  readonly agentId: string;
  readonly conversations: number;
  readonly runs: number;
  readonly bytes: number;
}

/** True when `after` can be an agents-listing resume point: an encoded agent segment. */
export function isAgentSegment(after: unknown): after is string {
  return typeof after === 'string' && SEGMENT.test(after);
}

/** How many agents' counters are summed at once. */
const AGENT_CONCURRENCY = 4;

/**
 * One page of an organization's agents, in the registry's (encoded agent segment) order: the registry
 * (org partition, `CONV#<agent>/<conv>`) names the agents — one `Limit: 1` Query per agent, each starting
 * past the previous agent's last possible key, so an agent with many conversations costs one call — and
 * each agent's counts are the sums over its `ByAgent` partition (paged Queries; eventually consistent,
 * approximate counters, registry.ts). `after`: the last agent segment of the previous page. Resolves with
 * the agents and the segment to resume after (undefined on the last page).
 */
export async function listAgents(
  ctx: StoreContext,
  organizationId: string,
  opts: CallOptions & { limit: number; after?: string | undefined },
): Promise<{ items: AgentSummary[]; next: string | undefined }> {
  const org = encodeId(organizationId);
  const found: { segment: string; agentId: string }[] = [];
  let after = opts.after;
  // One more than the page, to know whether another page exists.
  while (found.length <= opts.limit) {
    const next = await firstAgentAfter(ctx, org, after, opts.signal);
    if (!next) break;
    found.push(next);
    after = next.segment;
  }
  const page = found.slice(0, opts.limit);
  const items: AgentSummary[] = new Array(page.length);
  for (let i = 0; i < page.length; i += AGENT_CONCURRENCY) {
    await Promise.all(
      page.slice(i, i + AGENT_CONCURRENCY).map(async (a, j) => {
        items[i + j] = { agentId: a.agentId, ...(await agentCounts(ctx, `${org}/${a.segment}`, opts.signal)) };
      }),
    );
  }
  return { items, next: found.length > opts.limit ? page.at(-1)!.segment : undefined };
}

/**
 * The first registered agent whose segment sorts after `after`. Registry keys are `CONV#<agent>/<conv>`;
 * `CONV#<agent>0` ('0' follows '/') sorts after every key of `<agent>` and before every key of an agent
 * whose segment is greater (no segment contains `/`), so the Query skips `<agent>`'s conversations.
 */
async function firstAgentAfter(ctx: StoreContext, org: string, after: string | undefined, abortSignal?: AbortSignal): Promise<{ segment: string; agentId: string } | undefined> {
  const res = await ctx.ddb.send(
    new QueryCommand({
      TableName: ctx.table,
      KeyConditionExpression: 'pk = :pk AND sk BETWEEN :from AND :to',
      ExpressionAttributeValues: marshall({
        ':pk': orgPk(org),
        ':from': after === undefined ? REGISTRY_SK_PREFIX : `${REGISTRY_SK_PREFIX}${after}0`,
        // '$' follows '#': past every registry key, before anything else of the partition.
        ':to': `${REGISTRY_SK_PREFIX.slice(0, -1)}$`,
      }),
      ProjectionExpression: 'sk, agentId',
      Limit: 1,
    }),
    { abortSignal },
  );
  const item = res.Items?.[0];
  if (!item) return undefined;
  const v = unmarshall(item);
  const segment = String(v['sk']).slice(REGISTRY_SK_PREFIX.length).split('/')[0]!;
  return { segment, agentId: String(v['agentId']) };
}

async function agentCounts(ctx: StoreContext, agentKey: string, abortSignal?: AbortSignal): Promise<Omit<AgentSummary, 'agentId'>> {
  let conversations = 0;
  let runs = 0;
  let bytes = 0;
  let startKey: Item | undefined;
  do {
    const res: QueryCommandOutput = await ctx.ddb.send(
      new QueryCommand({
        TableName: ctx.table,
        IndexName: INDEX.byAgent.name,
        KeyConditionExpression: '#p = :p',
        ExpressionAttributeNames: { '#p': INDEX.byAgent.partitionKey },
        ExpressionAttributeValues: marshall({ ':p': agentKey }),
        ProjectionExpression: 'runCount, storedBytesTotal',
        ...(startKey && { ExclusiveStartKey: startKey }),
      }),
      { abortSignal },
    );
    for (const item of res.Items ?? []) {
      conversations += 1;
      runs += Number(item['runCount']?.N ?? 0);
      bytes += Number(item['storedBytesTotal']?.N ?? 0);
    }
    startKey = res.LastEvaluatedKey;
  } while (startKey);
  return { conversations, runs, bytes };
}
