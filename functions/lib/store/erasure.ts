import { createHash } from 'node:crypto';
import {
  ConditionalCheckFailedException,
  DeleteItemCommand,
  GetItemCommand,
  paginateQuery,
  PutItemCommand,
  QueryCommand,
  UpdateItemCommand,
  type QueryCommandInput,
} from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import { ADMIN_PAGE_LIMITS } from '../contract.js';
import { decodeId, encodeId, isValidId } from '../ids.js';
import { batchPut } from './batch.js';
import { beforeFence, deleteStaleChain } from './clear.js';
import type { CallOptions, StoreContext } from './context.js';
import { StoreError } from './errors.js';
import { DELETE_OBJECTS_MAX_KEYS, deleteObjects, listObjectPages } from './objects.js';
import {
  agentFenceKey,
  ERASING_PK,
  ERASURE_MARK_SK_PREFIX,
  ERASURE_PROGRESS_SK_PREFIX,
  ERASURE_SK_PREFIX,
  LISTING_ATTRIBUTES,
  orgFenceKey,
  orgPk,
  REGISTRY_SK_PREFIX,
  registryKey,
} from './registry.js';
import {
  CHAIN_SK_PREFIX,
  fromChainItem,
  fromRunItem,
  headKey,
  itemKey,
  MATERIALIZED_PREFIX,
  REMOVE_LATEST,
  RUN_SK_PREFIX,
  SNAPSHOT_PREFIX,
  tagOfKey,
  UPLOAD_PREFIX,
  type ChainRecord,
  type Item,
  type RunRecord,
} from './schema.js';
import { deleteStaleRun } from './write.js';

/**
 * Erasure with receipts (docs/DESIGN.md § Erasure): removes every record and object of one conversation,
 * one agent or a whole organization, and keeps a receipt of what it removed.
 *
 * Crash safety without transactions (dynalite has none): every step is one idempotent or conditional
 * single-item write, and an erasure is resumed by starting it again (same scope → same receipt).
 * Counting never double counts because nothing is ever *incremented*: before an erasure deletes a RUN
 * record or an object it Puts a **mark** whose key is derived from what it deletes (`ERASED#<receipt>#
 * <agent>/<conv>#r|o#<digest>`, the object's stored size on it); a retry rewrites the same mark. A
 * conversation's counts are the sums over its marks, written to its progress item when it is done, and
 * the receipt's are the sums over its progress items.
 *
 * Order (each arrow: a crash in between is resumed by the next call):
 *   pointer `~erasing/<scope>` → receipt → [org/agent: fence the scope, `erasing` set] → each
 *   conversation (`eraseConversation`: fence its HEAD, marks + delete its records, marks + delete its
 *   objects, progress item done, registry item) → [org/agent: receipt phase `lifting` → REMOVE erasing]
 *   → receipt completed → delete the pointer.
 * A conversation is erased statelessly: running it again fences it once more and removes what is left.
 * So a write that overlaps a running erasure of its own conversation may be erased with it (a write
 * admitted after the erasure completed never is); org and agent scopes admit no write while they run.
 */

/** An erasure's scope: a whole organization, one agent (`agentId`), or one conversation (both ids). Raw ids. */
export interface ErasureScope {
  readonly organizationId: string;
  readonly agentId?: string | undefined;
  readonly conversationId?: string | undefined;
}

/** Options of {@link eraseScope} and {@link expireConversation}. */
export interface EraseOptions extends CallOptions {
  /**
   * No new unit of work (a conversation, a page of records or objects) is started at or after this time
   * (epoch ms on the store clock `ctx.now()`); the call then returns the running receipt. At least one
   * unit is done per call, so repeated calls always finish. Default: no limit.
   */
  readonly deadlineAt?: number | undefined;
  /** Same as `deadlineAt = ctx.now() + budgetMs` (the earlier of the two wins). */
  readonly budgetMs?: number | undefined;
  /** Who asked (the admin token's `sub`); kept on the receipt. Well-formed string ≤ 1,024 UTF-8 bytes. */
  readonly actor?: string | undefined;
  /** Why (`expired` for retention's expiry); kept on the receipt. Well-formed string ≤ 1,024 UTF-8 bytes. */
  readonly reason?: string | undefined;
}

/**
 * What an erasure removed. Counts are of what this erasure itself found and removed (a record or object
 * is counted once, however often the erasure was resumed); while `running`, they cover the conversations
 * finished so far.
 */
export interface ErasureReceipt {
  /** `<UTC yyyymmddThhmmssSSSZ of its start>-<uuid>`: sorts by start time. */
  readonly receiptId: string;
  /** Raw ids; `agentId`/`conversationId` absent for wider scopes. */
  readonly scope: { readonly organizationId: string; readonly agentId?: string; readonly conversationId?: string };
  readonly state: 'running' | 'completed';
  readonly reason: string | null;
  readonly actor: string | null;
  /** Conversations from which something was removed (a registry item, a record or an object). */
  readonly conversations: number;
  /** RUN records removed (any status, any generation). */
  readonly runs: number;
  /** S3 objects removed (snapshots, chain objects, uploads, materialized copies). */
  readonly objects: number;
  /** Stored (compressed) bytes of those objects, as S3 listed them. */
  readonly bytes: number;
  /** ISO 8601 (UTC). */
  readonly startedAt: string;
  /** ISO 8601 (UTC), null while running. */
  readonly completedAt: string | null;
}

/** A page of {@link listReceipts}. `nextCursor`: pass it back for the next page; null at the end. */
export interface ReceiptPage {
  readonly receipts: ErasureReceipt[];
  readonly nextCursor: string | null;
}

/** Default and largest page size of {@link listReceipts}. */
export const RECEIPTS_DEFAULT_LIMIT = ADMIN_PAGE_LIMITS.erasures.default;
export const RECEIPTS_MAX_LIMIT = ADMIN_PAGE_LIMITS.erasures.max;
/** Marks expire (DynamoDB TTL `expiresAt`) this long after they are written: far past any running erasure. */
export const ERASURE_MARK_TTL_SECONDS = 30 * 24 * 3600;

const PREFIXES = [SNAPSHOT_PREFIX, UPLOAD_PREFIX, MATERIALIZED_PREFIX] as const;
const SEGMENT = /^(?:[A-Za-z0-9_%-]+|~[0-9a-f]{64})$/;
const RECEIPT_ID = /^\d{8}T\d{9}Z-[A-Za-z0-9_-]{1,64}$/;
/** Everything HEAD loses when an erasure fences it: the published run and the listing attributes. */
const REMOVE_HEAD = `${REMOVE_LATEST}, ${LISTING_ATTRIBUTES.join(', ')}`;
/** Attribute names that are DynamoDB reserved words, or might become ones. */
const NAMES = { '#state': 'state', '#phase': 'phase', '#conversations': 'conversations', '#runs': 'runs', '#objects': 'objects', '#bytes': 'bytes' };

/** True for strings {@link eraseScope} hands out as receipt ids (a route answers 404 for anything else). */
export function isReceiptId(s: unknown): s is string {
  return typeof s === 'string' && RECEIPT_ID.test(s);
}

/**
 * Erases a scope (docs/DESIGN.md § Erasure), or resumes the running erasure of the same scope (same
 * receipt; its `actor`/`reason` are kept). Returns the receipt: `completed`, or `running` when the time
 * budget ran out first, or at once, untouched, while another call is working on it (it holds the erasure's
 * lease: {@link ERASURE_LEASE_MS}) — call again to resume. A running expiry (`expireConversation`, which
 * keeps a conversation written since its bound) is finished first, then this unconditional erasure starts
 * anew. A scope whose previous erasure completed gets a new receipt.
 *
 * Org and agent scopes fence the scope first (`erasing` on its fence item: writes answer `409
 * reset_fenced` until the erasure completes); a conversation scope fences only the conversation (its
 * HEAD generation, as a clear does), so a write that starts after that fence is new data and is kept.
 *
 * @throws TypeError for an invalid scope (an id that is not a valid id, `conversationId` without
 *   `agentId`) or an invalid `actor`/`reason`; SDK errors and AbortError (the `signal`): the erasure is
 *   then running and resumable; StoreError `CONTENDED` when the scope's running pointer changed under
 *   every attempt (transient).
 */
export async function eraseScope(ctx: StoreContext, scope: ErasureScope, opts: EraseOptions = {}): Promise<ErasureReceipt> {
  const target = targetOf(scope);
  return (await openAndRun(ctx, target, metaOf(opts), 'start', opts)).receipt;
}

/**
 * Erases one conversation for retention's `CONVERSATION_TTL_DAYS`, given its partition key
 * (`<org>/<agent>/<conv>`, encoded segments), with a receipt whose `reason` is `expired`. The raw ids
 * on the receipt come from HEAD's listing attributes (a segment that is not reversible stands in for an
 * id it cannot recover).
 *
 * `activeBeforeMs`: erase only if the conversation's last write (HEAD `activityAtMs`) is before it. It
 * is checked when the erasure starts (undefined is returned, nothing is written) and again in the
 * condition of the HEAD fence, so a write that lands in between keeps the conversation (the receipt
 * then completes with zero counts). Kept on the receipt, so a resumed expiry checks the same bound.
 *
 * @throws TypeError for a malformed `pk`; otherwise as {@link eraseScope}.
 */
export async function expireConversation(
  ctx: StoreContext,
  pk: string,
  opts: Omit<EraseOptions, 'reason'> & { readonly activeBeforeMs?: number | undefined } = {},
): Promise<ErasureReceipt | undefined> {
  const segments = pk.split('/');
  if (segments.length !== 3 || !segments.every((s) => SEGMENT.test(s))) throw new TypeError('invalid conversation key');
  const [org, agent, conv] = segments as [string, string, string];
  const head = await ctx.ddb.send(
    new GetItemCommand({ TableName: ctx.table, Key: headKey(pk), ConsistentRead: true, ProjectionExpression: 'activityAtMs, agentId, conversationId' }),
    { abortSignal: opts.signal },
  );
  const v = head.Item ? unmarshall(head.Item) : {};
  const activity = typeof v['activityAtMs'] === 'number' ? v['activityAtMs'] : undefined;
  if (opts.activeBeforeMs !== undefined && activity !== undefined && activity >= opts.activeBeforeMs) return undefined;
  const target: Target = {
    org,
    agent,
    conv,
    organizationId: decodeId(org),
    agentId: typeof v['agentId'] === 'string' ? v['agentId'] : decodeId(agent),
    conversationId: typeof v['conversationId'] === 'string' ? v['conversationId'] : decodeId(conv),
  };
  const meta = { ...metaOf({ actor: opts.actor }), reason: 'expired', activeBeforeMs: opts.activeBeforeMs };
  return (await openAndRun(ctx, target, meta, 'start', opts)).receipt;
}

/**
 * `expireConversation` in the shape the retention pass injects it (retention.ts
 * `RetentionOptions.expireConversation`): erases the conversation `pk` unless it was written after the pass
 * read it (`activeBeforeMs` = the `activityAtMs` the pass read + 1), and answers what it removed (nothing
 * when it was written since). An expiry the budget interrupts is finished by {@link resumeErasures}.
 */
export function retentionExpiry(
  ctx: StoreContext,
  opts: Pick<EraseOptions, 'signal' | 'deadlineAt' | 'budgetMs'> = {},
): (pk: string, conversation: { readonly activityAtMs: number }) => Promise<{ runs: number; objects: number; bytes: number }> {
  return async (pk, conversation) => {
    const r = await expireConversation(ctx, pk, { ...opts, activeBeforeMs: conversation.activityAtMs + 1 });
    return { runs: r?.runs ?? 0, objects: r?.objects ?? 0, bytes: r?.bytes ?? 0 };
  };
}

/**
 * Resumes every running erasure (all organizations), oldest pointer first, until the budget runs out:
 * for a scheduled job (the retention pass), so that an erasure whose caller died — an expiry, or an
 * operator who never repeated the POST — still finishes. It never starts an erasure: a pointer whose
 * receipt already completed (a crash before the pointer's deletion) is only deleted, and an erasure another
 * call is running (it holds the lease) is skipped. Returns the receipts of the erasures it ran.
 * @throws as {@link eraseScope}.
 */
export async function resumeErasures(ctx: StoreContext, opts: Pick<EraseOptions, 'signal' | 'deadlineAt' | 'budgetMs'> = {}): Promise<ErasureReceipt[]> {
  const deadlineAt = deadlineOf(ctx, opts);
  const out: ErasureReceipt[] = [];
  const pages = paginateQuery(
    { client: ctx.ddb },
    { TableName: ctx.table, KeyConditionExpression: 'pk = :pk', ExpressionAttributeValues: marshall({ ':pk': ERASING_PK }), ConsistentRead: true },
    { abortSignal: opts.signal },
  );
  const pointers: ReceiptRecord[] = [];
  for await (const page of pages) pointers.push(...(page.Items ?? []).map(fromReceiptItem));
  for (const p of pointers.sort((a, b) => a.receiptId.localeCompare(b.receiptId))) {
    if (deadlineAt !== undefined && ctx.now() >= deadlineAt) break;
    const { receipt, ran } = await openAndRun(ctx, p, p, 'resume', { signal: opts.signal, deadlineAt });
    if (!ran) continue; // completed already, or running in another call
    out.push(receipt!);
    if (receipt!.state === 'running') break; // out of time
  }
  return out;
}

/**
 * Opens the scope's erasure (`start`: the running one, or a new one; `resume`: only a running one) and runs
 * it if this call gets its lease. `ran` is false when another call holds the lease (`receipt`: as it
 * stands) or, for `resume`, when there was nothing left to run (`receipt` undefined). A call that fails
 * releases its lease (unless its signal aborted it: then the lease runs out), so a retry need not wait.
 */
async function openAndRun<M extends 'start' | 'resume'>(
  ctx: StoreContext,
  target: Target,
  meta: Meta,
  mode: M,
  opts: Pick<EraseOptions, 'signal' | 'deadlineAt' | 'budgetMs'>,
): Promise<M extends 'start' ? { receipt: ErasureReceipt; ran: boolean } : { receipt: ErasureReceipt | undefined; ran: boolean }> {
  type Out = M extends 'start' ? { receipt: ErasureReceipt; ran: boolean } : { receipt: ErasureReceipt | undefined; ran: boolean };
  const deadlineAt = deadlineOf(ctx, opts);
  const lease: Lease = { owner: ctx.newId(), until: leaseEnd(ctx, deadlineAt) };
  try {
    for (let attempt = 1; ; attempt++) {
      const opened = await openReceipt(ctx, target, meta, lease, mode, opts.signal);
      if (!opened) return { receipt: undefined, ran: false } as Out;
      if (!opened.leased) return { receipt: await currentReceipt(ctx, opened.rec, opts.signal), ran: false } as Out;
      const receipt = await runErasure(ctx, opened.rec, lease, { signal: opts.signal, deadlineAt });
      // The running erasure this call resumed was an expiry, which keeps a conversation written since its bound;
      // this call asks for an unconditional erasure (an operator's): now that the expiry is done, erase anew.
      const conditional = opened.rec.activeBeforeMs !== undefined && meta.activeBeforeMs === undefined;
      if (mode === 'start' && conditional && receipt.state === 'completed' && attempt < 3) continue;
      return { receipt, ran: true } as Out;
    }
  } catch (err) {
    if (!opts.signal?.aborted) await releaseLease(ctx, target, lease).catch(() => {});
    throw err;
  }
}

/**
 * The receipt `receiptId` of organization `organizationId` (consistent read), or undefined when there is
 * none in that organization (including a `receiptId` that is not one: see {@link isReceiptId}). A running
 * receipt carries the sums over the conversations finished so far (one more Query).
 * @throws TypeError for an invalid `organizationId`; SDK errors.
 */
export async function getReceipt(ctx: StoreContext, organizationId: string, receiptId: string, opts: CallOptions = {}): Promise<ErasureReceipt | undefined> {
  if (!isValidId(organizationId)) throw new TypeError('invalid organizationId');
  if (!isReceiptId(receiptId)) return undefined;
  const rec = await readReceipt(ctx, encodeId(organizationId), receiptId, opts.signal);
  if (!rec) return undefined;
  return toReceipt({ ...rec, organizationId }, rec.state === 'running' ? await sumProgress(ctx, rec, opts.signal) : undefined);
}

/**
 * The organization's receipts, newest first (one Query per page). `limit`: 1–100 (default 50);
 * `cursor`: a `nextCursor` from the previous page.
 * @throws StoreError `INVALID_CURSOR` for a cursor this function did not hand out; RangeError for a bad
 *   `limit`; TypeError for an invalid `organizationId`; SDK errors.
 */
export async function listReceipts(
  ctx: StoreContext,
  organizationId: string,
  page: { readonly cursor?: string | undefined; readonly limit?: number | undefined } = {},
  opts: CallOptions = {},
): Promise<ReceiptPage> {
  if (!isValidId(organizationId)) throw new TypeError('invalid organizationId');
  const limit = page.limit ?? RECEIPTS_DEFAULT_LIMIT;
  if (!Number.isInteger(limit) || limit < 1 || limit > RECEIPTS_MAX_LIMIT) throw new RangeError(`limit must be an integer 1–${RECEIPTS_MAX_LIMIT}`);
  if (page.cursor !== undefined && !isReceiptId(page.cursor)) throw new StoreError('INVALID_CURSOR', 'not a receipts cursor');
  const org = encodeId(organizationId);
  const res = await ctx.ddb.send(
    new QueryCommand({
      TableName: ctx.table,
      KeyConditionExpression: 'pk = :pk AND begins_with(sk, :receipts)',
      ExpressionAttributeValues: marshall({ ':pk': orgPk(org), ':receipts': ERASURE_SK_PREFIX }),
      ScanIndexForward: false,
      Limit: limit,
      ...(page.cursor !== undefined && { ExclusiveStartKey: itemKey(orgPk(org), ERASURE_SK_PREFIX + page.cursor) }),
    }),
    { abortSignal: opts.signal },
  );
  const recs = (res.Items ?? []).map(fromReceiptItem);
  const receipts = await Promise.all(
    recs.map(async (rec) => toReceipt({ ...rec, organizationId }, rec.state === 'running' ? await sumProgress(ctx, rec, opts.signal) : undefined)),
  );
  const last = recs[recs.length - 1];
  return { receipts, nextCursor: res.LastEvaluatedKey && last ? last.receiptId : null };
}

// ─── receipts and the running pointer ────────────────────────────────────────────────────────────

/** A scope as stored: encoded segments (the keys) and the raw ids when known. */
interface Target {
  readonly org: string;
  readonly agent?: string | undefined;
  readonly conv?: string | undefined;
  readonly organizationId?: string | undefined;
  readonly agentId?: string | undefined;
  readonly conversationId?: string | undefined;
}

interface Meta {
  readonly actor?: string | undefined;
  readonly reason?: string | undefined;
  /** Expiry only: the bound of `expireConversation`'s `activeBeforeMs`. */
  readonly activeBeforeMs?: number | undefined;
}

/** The receipt item (and the pointer, which carries a copy of it as it was created). */
interface ReceiptRecord extends Target, Meta {
  readonly receiptId: string;
  readonly state: 'running' | 'completed';
  /** `lifting`: every conversation is done; what is left is lifting the scope fence and completing. */
  readonly phase?: 'lifting' | undefined;
  readonly startedAtMs: number;
  readonly completedAtMs?: number | undefined;
  readonly conversations: number;
  readonly runs: number;
  readonly objects: number;
  readonly bytes: number;
}

type Counts = Pick<ReceiptRecord, 'conversations' | 'runs' | 'objects' | 'bytes'>;

function targetOf(scope: ErasureScope): Target {
  const { organizationId, agentId, conversationId } = scope;
  if (!isValidId(organizationId)) throw new TypeError('invalid organizationId');
  if (agentId !== undefined && !isValidId(agentId)) throw new TypeError('invalid agentId');
  if (conversationId !== undefined && !isValidId(conversationId)) throw new TypeError('invalid conversationId');
  if (conversationId !== undefined && agentId === undefined) throw new TypeError('conversationId requires agentId');
  return {
    org: encodeId(organizationId),
    agent: agentId === undefined ? undefined : encodeId(agentId),
    conv: conversationId === undefined ? undefined : encodeId(conversationId),
    organizationId,
    agentId,
    conversationId,
  };
}

function metaOf(opts: { actor?: string | undefined; reason?: string | undefined }): Meta {
  for (const [name, v] of [['actor', opts.actor], ['reason', opts.reason]] as const) {
    if (v !== undefined && !isValidId(v)) throw new TypeError(`invalid ${name}`);
  }
  return { actor: opts.actor, reason: opts.reason };
}

/** `<org>`, `<org>/<agent>` or `<org>/<agent>/<conv>`: the running pointer's sort key. */
function scopePath(t: Target): string {
  return [t.org, t.agent, t.conv].filter((s) => s !== undefined).join('/');
}

/** Org and agent scopes hold a scope fence while they run; a conversation scope does not. */
function scopeFenced(t: Target): boolean {
  return t.conv === undefined;
}

function receiptKey(org: string, receiptId: string): Item {
  return itemKey(orgPk(org), ERASURE_SK_PREFIX + receiptId);
}

function receiptAttributes(r: ReceiptRecord): Record<string, unknown> {
  return {
    receiptId: r.receiptId,
    orgSegment: r.org,
    agentSegment: r.agent,
    conversationSegment: r.conv,
    organizationId: r.organizationId,
    agentId: r.agentId,
    conversationId: r.conversationId,
    state: r.state,
    phase: r.phase,
    startedAtMs: r.startedAtMs,
    completedAtMs: r.completedAtMs,
    conversations: r.conversations,
    runs: r.runs,
    objects: r.objects,
    bytes: r.bytes,
    actor: r.actor,
    reason: r.reason,
    activeBeforeMs: r.activeBeforeMs,
  };
}

function fromReceiptItem(item: Item): ReceiptRecord {
  const v = unmarshall(item);
  const str = (k: string) => (typeof v[k] === 'string' ? (v[k] as string) : undefined);
  const num = (k: string) => (typeof v[k] === 'number' ? (v[k] as number) : undefined);
  return {
    receiptId: str('receiptId')!,
    org: str('orgSegment')!,
    agent: str('agentSegment'),
    conv: str('conversationSegment'),
    organizationId: str('organizationId'),
    agentId: str('agentId'),
    conversationId: str('conversationId'),
    state: v['state'] === 'completed' ? 'completed' : 'running',
    phase: v['phase'] === 'lifting' ? 'lifting' : undefined,
    startedAtMs: num('startedAtMs') ?? 0,
    completedAtMs: num('completedAtMs'),
    conversations: num('conversations') ?? 0,
    runs: num('runs') ?? 0,
    objects: num('objects') ?? 0,
    bytes: num('bytes') ?? 0,
    actor: str('actor'),
    reason: str('reason'),
    activeBeforeMs: num('activeBeforeMs'),
  };
}

function toReceipt(r: ReceiptRecord, counts?: Counts): ErasureReceipt {
  const c = counts ?? r;
  return {
    receiptId: r.receiptId,
    scope: {
      organizationId: r.organizationId ?? decodeId(r.org) ?? r.org,
      ...(r.agent !== undefined && { agentId: r.agentId ?? decodeId(r.agent) ?? r.agent }),
      ...(r.conv !== undefined && { conversationId: r.conversationId ?? decodeId(r.conv) ?? r.conv }),
    },
    state: r.state,
    reason: r.reason ?? null,
    actor: r.actor ?? null,
    conversations: c.conversations,
    runs: c.runs,
    objects: c.objects,
    bytes: c.bytes,
    startedAt: new Date(r.startedAtMs).toISOString(),
    completedAt: r.completedAtMs === undefined ? null : new Date(r.completedAtMs).toISOString(),
  };
}

/** `<UTC yyyymmddThhmmssSSSZ>-<id>`: receipt ids sort by start time. */
function newReceiptId(ctx: StoreContext, nowMs: number): string {
  return `${new Date(nowMs).toISOString().replace(/[-:.]/g, '')}-${ctx.newId()}`;
}

async function readReceipt(ctx: StoreContext, org: string, receiptId: string, abortSignal?: AbortSignal): Promise<ReceiptRecord | undefined> {
  const res = await ctx.ddb.send(new GetItemCommand({ TableName: ctx.table, Key: receiptKey(org, receiptId), ConsistentRead: true }), { abortSignal });
  return res.Item ? fromReceiptItem(res.Item) : undefined;
}

/** Put the receipt unless it exists (an SDK retry of our own put, or a concurrent resume that made it). */
async function putReceipt(ctx: StoreContext, rec: ReceiptRecord, abortSignal?: AbortSignal): Promise<void> {
  await putIfAbsent(ctx, { ...receiptKey(rec.org, rec.receiptId), ...marshall(receiptAttributes(rec), { removeUndefinedValues: true }) }, abortSignal);
}

/** Conditional PutItem (attribute_not_exists); false when the item existed. */
async function putIfAbsent(ctx: StoreContext, item: Item, abortSignal?: AbortSignal): Promise<boolean> {
  try {
    await ctx.ddb.send(new PutItemCommand({ TableName: ctx.table, Item: item, ConditionExpression: 'attribute_not_exists(pk)' }), { abortSignal });
    return true;
  } catch (err) {
    if (err instanceof ConditionalCheckFailedException) return false;
    throw err;
  }
}

/** Runs `send` and swallows a failed condition (the write's intent already holds, or is moot). */
async function ifStill(send: () => Promise<unknown>): Promise<void> {
  try {
    await send();
  } catch (err) {
    if (!(err instanceof ConditionalCheckFailedException)) throw err;
  }
}

/**
 * The lease a call holds on a running erasure (on its pointer: `leaseOwner`, `leaseUntil`, epoch ms on the
 * store clock). Only the holder works on the erasure: a second call for the same scope (a repeated POST, the
 * retention pass's {@link resumeErasures}) answers the receipt as it stands and does nothing, so no call
 * still working on an erasure can outlive its completion — and erase a write admitted after it.
 */
interface Lease {
  readonly owner: string;
  /** When the lease runs out: the call's deadline (or, without one, now) + {@link ERASURE_LEASE_MS}. */
  until: number;
}

/**
 * How long a lease outlasts its call's deadline (without a deadline: its last renewal), in ms. A call that
 * dies without releasing its lease (a Lambda timeout) delays the next call for the scope by at most this.
 */
export const ERASURE_LEASE_MS = 120_000;

function leaseEnd(ctx: StoreContext, deadlineAt: number | undefined): number {
  const now = ctx.now();
  return Math.max(deadlineAt ?? now, now) + ERASURE_LEASE_MS;
}

function pointerKey(t: Target): Item {
  return itemKey(ERASING_PK, scopePath(t));
}

/** Takes the lease of the running erasure `rec` when it is free (never taken, released or run out). */
async function acquireLease(ctx: StoreContext, rec: ReceiptRecord, lease: Lease, abortSignal?: AbortSignal): Promise<boolean> {
  try {
    await ctx.ddb.send(
      new UpdateItemCommand({
        TableName: ctx.table,
        Key: pointerKey(rec),
        UpdateExpression: 'SET leaseOwner = :me, leaseUntil = :until',
        ConditionExpression: 'receiptId = :rid AND (attribute_not_exists(leaseUntil) OR leaseUntil <= :now)',
        ExpressionAttributeValues: marshall({ ':me': lease.owner, ':until': lease.until, ':rid': rec.receiptId, ':now': ctx.now() }),
      }),
      { abortSignal },
    );
    return true;
  } catch (err) {
    if (err instanceof ConditionalCheckFailedException) return false;
    throw err;
  }
}

/** Gives the lease back (if still ours), so the next call for the scope can go on at once. */
async function releaseLease(ctx: StoreContext, target: Target, lease: Lease, abortSignal?: AbortSignal): Promise<void> {
  await ifStill(() =>
    ctx.ddb.send(
      new UpdateItemCommand({
        TableName: ctx.table,
        Key: pointerKey(target),
        UpdateExpression: 'REMOVE leaseOwner, leaseUntil',
        ConditionExpression: 'leaseOwner = :me',
        ExpressionAttributeValues: marshall({ ':me': lease.owner }),
      }),
      { abortSignal },
    ),
  );
}

/** Thrown inside an erasure whose lease another call has taken (it ran out): this call stops at once. */
class LeaseLost extends Error {}

/**
 * Before each unit of work: renews the lease when less than half of {@link ERASURE_LEASE_MS} is left (only
 * calls without a deadline, or a first unit that runs long past it, ever do), conditional on still holding
 * it; throws {@link LeaseLost} when another call took it over.
 */
async function holdLease(run: Run): Promise<void> {
  const { ctx, rec, lease } = run;
  if (ctx.now() < lease.until - ERASURE_LEASE_MS / 2) return;
  const until = leaseEnd(ctx, run.deadlineAt);
  try {
    await ctx.ddb.send(
      new UpdateItemCommand({
        TableName: ctx.table,
        Key: pointerKey(rec),
        UpdateExpression: 'SET leaseUntil = :until',
        ConditionExpression: 'leaseOwner = :me',
        ExpressionAttributeValues: marshall({ ':me': lease.owner, ':until': until }),
      }),
      { abortSignal: run.signal },
    );
  } catch (err) {
    if (err instanceof ConditionalCheckFailedException) throw new LeaseLost();
    throw err;
  }
  lease.until = until;
}

/** The receipt `rec` as it stands now (consistent read): completed, or running with the sums so far. */
async function currentReceipt(ctx: StoreContext, rec: ReceiptRecord, abortSignal?: AbortSignal): Promise<ErasureReceipt> {
  const stored = (await readReceipt(ctx, rec.org, rec.receiptId, abortSignal)) ?? rec;
  return stored.state === 'completed' ? toReceipt(stored) : toReceipt(stored, await sumProgress(ctx, stored, abortSignal));
}

/**
 * The running erasure of the scope, or (`start`) a new one, and whether this call holds its lease. The
 * pointer `~erasing/<scope>` is the one place that says "running": it is created (conditionally, with this
 * call's lease) before the receipt and deleted only after the receipt completed, so two concurrent starts
 * agree on one receipt, and a crash between the pointer and the receipt is repaired from the pointer's copy.
 * A running erasure is resumed only by the call that gets its lease (the others get `leased: false`).
 * `resume` never starts an erasure: undefined when the scope has none running (a pointer that outlived its
 * completed receipt is deleted).
 */
async function openReceipt(
  ctx: StoreContext,
  target: Target,
  meta: Meta,
  lease: Lease,
  mode: 'start' | 'resume',
  abortSignal?: AbortSignal,
): Promise<{ rec: ReceiptRecord; leased: boolean } | undefined> {
  const pointer = pointerKey(target);
  for (let attempt = 0; attempt < 5; attempt++) {
    const found = await ctx.ddb.send(new GetItemCommand({ TableName: ctx.table, Key: pointer, ConsistentRead: true }), { abortSignal });
    if (found.Item) {
      const copy = fromReceiptItem(found.Item);
      const stored = await readReceipt(ctx, target.org, copy.receiptId, abortSignal);
      if (stored?.state === 'completed') {
        // Completed, but the pointer outlived it (a crash before its deletion): remove it; start anew.
        await deletePointer(ctx, stored, abortSignal);
        if (mode === 'resume') return undefined;
        continue;
      }
      if (!stored) await putReceipt(ctx, copy, abortSignal);
      const rec = stored ?? copy;
      return { rec, leased: await acquireLease(ctx, rec, lease, abortSignal) };
    }
    if (mode === 'resume') return undefined;
    const nowMs = ctx.now();
    const rec: ReceiptRecord = {
      ...target,
      ...meta,
      receiptId: newReceiptId(ctx, nowMs),
      state: 'running',
      startedAtMs: nowMs,
      conversations: 0,
      runs: 0,
      objects: 0,
      bytes: 0,
    };
    const item = { ...pointer, ...marshall({ ...receiptAttributes(rec), leaseOwner: lease.owner, leaseUntil: lease.until }, { removeUndefinedValues: true }) };
    const created = await putIfAbsent(ctx, item, abortSignal);
    if (!created) continue; // a concurrent start won (or the SDK retried our put): resume whatever is there
    await putReceipt(ctx, rec, abortSignal);
    return { rec, leased: true };
  }
  throw new StoreError('CONTENDED', 'the running erasure of this scope changed under every attempt');
}

async function deletePointer(ctx: StoreContext, rec: ReceiptRecord, abortSignal?: AbortSignal): Promise<void> {
  await ifStill(() =>
    ctx.ddb.send(
      new DeleteItemCommand({
        TableName: ctx.table,
        Key: pointerKey(rec),
        ConditionExpression: 'receiptId = :rid',
        ExpressionAttributeValues: marshall({ ':rid': rec.receiptId }),
      }),
      { abortSignal },
    ),
  );
}

// ─── running an erasure ──────────────────────────────────────────────────────────────────────────

/** Thrown inside an erasure when its time budget is used up; the call then returns the running receipt. */
class OutOfTime extends Error {}

interface Run {
  readonly ctx: StoreContext;
  readonly rec: ReceiptRecord;
  readonly lease: Lease;
  readonly signal: AbortSignal | undefined;
  readonly deadlineAt: number | undefined;
  /** Something was erased in this call: only then may the budget stop it (every call makes progress). */
  progressed: boolean;
}

function deadlineOf(ctx: StoreContext, opts: Pick<EraseOptions, 'deadlineAt' | 'budgetMs'>): number | undefined {
  const fromBudget = opts.budgetMs === undefined ? undefined : ctx.now() + opts.budgetMs;
  if (opts.deadlineAt === undefined) return fromBudget;
  return fromBudget === undefined ? opts.deadlineAt : Math.min(opts.deadlineAt, fromBudget);
}

/**
 * Before each unit of work (a conversation, a chunk of objects): stops with {@link OutOfTime} once the budget
 * is spent (after at least one unit), and keeps the lease ({@link holdLease}).
 */
async function nextUnit(run: Run): Promise<void> {
  if (run.progressed && run.deadlineAt !== undefined && run.ctx.now() >= run.deadlineAt) throw new OutOfTime();
  await holdLease(run);
}

/** Runs the erasure `rec`, whose lease this call holds, until it completes or the budget is spent. */
async function runErasure(ctx: StoreContext, rec: ReceiptRecord, lease: Lease, opts: { signal: AbortSignal | undefined; deadlineAt: number | undefined }): Promise<ErasureReceipt> {
  const run: Run = { ctx, rec, lease, signal: opts.signal, deadlineAt: opts.deadlineAt, progressed: false };
  try {
    if (rec.phase !== 'lifting') {
      await eraseConversations(run);
      if (scopeFenced(rec)) await setLifting(run);
    }
    if (scopeFenced(rec)) await liftScopeFence(run);
    return await complete(run);
  } catch (err) {
    if (err instanceof OutOfTime) {
      await releaseLease(ctx, rec, lease, opts.signal);
      return toReceipt(rec, await sumProgress(ctx, rec, opts.signal));
    }
    if (err instanceof LeaseLost) return currentReceipt(ctx, rec, opts.signal);
    throw err;
  }
}

/**
 * Every conversation of the scope. A conversation scope is its one conversation, erased again by every
 * call until the receipt completes. Org and agent scopes: fence the scope (e1), then the conversations an
 * earlier call began that no registry item names, the registry (e2: consistent Query; a registered
 * conversation keeps its registry item until it is done), and conversations found by their objects.
 */
async function eraseConversations(run: Run): Promise<void> {
  const { ctx, rec } = run;
  if (rec.conv !== undefined) {
    await eraseConversation(run, { agent: rec.agent!, conv: rec.conv, agentId: rec.agentId, conversationId: rec.conversationId }, 'target');
    return;
  }

  // e1: from here on no write in the scope is admitted, and a first write that registers after this
  // sees the bump when it re-reads the fences (docs/DESIGN.md § Registration).
  await holdLease(run);
  await fenceScope(run);
  const seen = new Set<string>();
  for await (const p of progressItems(ctx, rec, run.signal)) {
    if (p.state === 'done' || seen.has(refKey(p))) continue;
    seen.add(refKey(p));
    await nextUnit(run);
    await eraseConversation(run, p, 'begun');
  }
  // e2: the registry, read consistently after the fence.
  const pages = paginateQuery(
    { client: ctx.ddb },
    {
      TableName: ctx.table,
      KeyConditionExpression: 'pk = :pk AND begins_with(sk, :conv)',
      ExpressionAttributeValues: marshall({ ':pk': orgPk(rec.org), ':conv': REGISTRY_SK_PREFIX + (rec.agent === undefined ? '' : `${rec.agent}/`) }),
      ConsistentRead: true,
    },
    { abortSignal: run.signal },
  );
  for await (const page of pages) {
    for (const item of page.Items ?? []) {
      const v = unmarshall(item);
      const [agent, conv] = String(v['sk']).slice(REGISTRY_SK_PREFIX.length).split('/');
      if (!agent || !conv || seen.has(`${agent}/${conv}`)) continue;
      seen.add(`${agent}/${conv}`);
      await nextUnit(run);
      await eraseConversation(run, { agent, conv, agentId: stringOr(v['agentId']), conversationId: stringOr(v['conversationId']) }, 'registered');
    }
  }
  // Conversations stored before the registry existed (never written since): found by their objects.
  // Everything registered is gone by now, so this lists only what is left in the scope. (A plain listing:
  // s3rver's ListObjectsV2 does not group nested keys by a delimiter.)
  const path = rec.agent === undefined ? rec.org : `${rec.org}/${rec.agent}`;
  for (const prefix of PREFIXES) {
    for await (const objects of listObjectPages(ctx, { prefix: `${prefix}${path}/` }, run.signal)) {
      for (const o of objects) {
        const [agent, conv] = (o.Key ?? '').slice(`${prefix}${rec.org}/`.length).split('/');
        if (!agent || !conv || !SEGMENT.test(agent) || !SEGMENT.test(conv) || seen.has(`${agent}/${conv}`)) continue;
        seen.add(`${agent}/${conv}`);
        await nextUnit(run);
        await eraseConversation(run, { agent, conv, agentId: decodeId(agent), conversationId: decodeId(conv) }, 'discovered');
      }
    }
  }
}

function stringOr(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

/** e1: `SET erasing = :receipt ADD epoch 1`, once the scope is this erasure's (or already was). */
async function fenceScope(run: Run): Promise<void> {
  const { ctx, rec } = run;
  try {
    await ctx.ddb.send(
      new UpdateItemCommand({
        TableName: ctx.table,
        Key: fenceKeyOf(rec),
        UpdateExpression: 'SET erasing = :rid ADD epoch :one',
        ConditionExpression: 'attribute_not_exists(erasing) OR erasing = :rid',
        ExpressionAttributeValues: marshall({ ':rid': rec.receiptId, ':one': 1 }),
      }),
      { abortSignal: run.signal },
    );
  } catch (err) {
    // Only the erasure that holds this scope's running pointer ever sets this fence, and it lifts the
    // fence before it completes: another holder means the invariant is broken. Loud, never skipped.
    if (err instanceof ConditionalCheckFailedException) throw new Error(`the scope fence is held by another erasure than ${rec.receiptId}`);
    throw err;
  }
}

function fenceKeyOf(t: Target): Item {
  return t.agent === undefined ? orgFenceKey(t.org) : agentFenceKey(t.org, t.agent);
}

async function setLifting(run: Run): Promise<void> {
  const { ctx, rec } = run;
  await ifStill(() =>
    ctx.ddb.send(
      new UpdateItemCommand({
        TableName: ctx.table,
        Key: receiptKey(rec.org, rec.receiptId),
        UpdateExpression: 'SET #phase = :lifting',
        ConditionExpression: '#state = :running',
        ExpressionAttributeNames: { '#phase': 'phase', '#state': 'state' },
        ExpressionAttributeValues: marshall({ ':lifting': 'lifting', ':running': 'running' }),
      }),
      { abortSignal: run.signal },
    ),
  );
}

/** `REMOVE erasing` if it is still this erasure's (the epoch stays bumped). */
async function liftScopeFence(run: Run): Promise<void> {
  const { ctx, rec } = run;
  await ifStill(() =>
    ctx.ddb.send(
      new UpdateItemCommand({
        TableName: ctx.table,
        Key: fenceKeyOf(rec),
        UpdateExpression: 'REMOVE erasing',
        ConditionExpression: 'erasing = :rid',
        ExpressionAttributeValues: marshall({ ':rid': rec.receiptId }),
      }),
      { abortSignal: run.signal },
    ),
  );
}

/** The receipt's final counts (sums over its progress items), `state = completed`; then the pointer goes. */
async function complete(run: Run): Promise<ErasureReceipt> {
  const { ctx, rec } = run;
  const counts = await sumProgress(ctx, rec, run.signal);
  const completedAtMs = ctx.now();
  let done: ReceiptRecord = { ...rec, ...counts, state: 'completed', phase: undefined, completedAtMs };
  try {
    await ctx.ddb.send(
      new UpdateItemCommand({
        TableName: ctx.table,
        Key: receiptKey(rec.org, rec.receiptId),
        UpdateExpression: 'SET #state = :completed, completedAtMs = :now, #conversations = :c, #runs = :r, #objects = :o, #bytes = :b REMOVE #phase',
        ConditionExpression: '#state = :running',
        ExpressionAttributeNames: NAMES,
        ExpressionAttributeValues: marshall({
          ':completed': 'completed',
          ':running': 'running',
          ':now': completedAtMs,
          ':c': counts.conversations,
          ':r': counts.runs,
          ':o': counts.objects,
          ':b': counts.bytes,
        }),
      }),
      { abortSignal: run.signal },
    );
  } catch (err) {
    if (!(err instanceof ConditionalCheckFailedException)) throw err;
    // Completed already (a concurrent resume, or the SDK retried our update): answer what is stored.
    done = (await readReceipt(ctx, rec.org, rec.receiptId, run.signal)) ?? done;
  }
  await deletePointer(ctx, rec, run.signal);
  return toReceipt(done);
}

// ─── one conversation ────────────────────────────────────────────────────────────────────────────

interface ConversationRef {
  readonly agent: string;
  readonly conv: string;
  readonly agentId?: string | undefined;
  readonly conversationId?: string | undefined;
}

/** A conversation's progress item: its counts once it is done (sums over its marks). */
interface Progress extends ConversationRef {
  readonly state: 'erasing' | 'done';
  readonly runs?: number | undefined;
  readonly objects?: number | undefined;
  readonly bytes?: number | undefined;
}

function refKey(r: ConversationRef): string {
  return `${r.agent}/${r.conv}`;
}

function progressItem(run: Run, r: ConversationRef, fields: Omit<Progress, keyof ConversationRef>): Item {
  return {
    ...itemKey(orgPk(run.rec.org), `${ERASURE_PROGRESS_SK_PREFIX}${run.rec.receiptId}#${refKey(r)}`),
    ...marshall({ agentId: r.agentId, conversationId: r.conversationId, ...fields }, { removeUndefinedValues: true }),
  };
}

function fromProgressItem(item: Item): Progress {
  const v = unmarshall(item);
  const [agent, conv] = String(v['sk']).split('#').pop()!.split('/') as [string, string];
  const num = (k: string) => (typeof v[k] === 'number' ? (v[k] as number) : undefined);
  return {
    agent,
    conv,
    agentId: stringOr(v['agentId']),
    conversationId: stringOr(v['conversationId']),
    state: v['state'] === 'done' ? 'done' : 'erasing',
    runs: num('runs'),
    objects: num('objects'),
    bytes: num('bytes'),
  };
}

async function* progressItems(ctx: StoreContext, rec: ReceiptRecord, abortSignal?: AbortSignal): AsyncGenerator<Progress> {
  const input: QueryCommandInput = {
    TableName: ctx.table,
    KeyConditionExpression: 'pk = :pk AND begins_with(sk, :progress)',
    ExpressionAttributeValues: marshall({ ':pk': orgPk(rec.org), ':progress': `${ERASURE_PROGRESS_SK_PREFIX}${rec.receiptId}#` }),
    ConsistentRead: true,
  };
  for await (const page of paginateQuery({ client: ctx.ddb }, input, { abortSignal })) for (const item of page.Items ?? []) yield fromProgressItem(item);
}

/** The receipt's counts: sums over its finished conversations (one Query). */
async function sumProgress(ctx: StoreContext, rec: ReceiptRecord, abortSignal?: AbortSignal): Promise<Counts> {
  const sum = { conversations: 0, runs: 0, objects: 0, bytes: 0 };
  for await (const p of progressItems(ctx, rec, abortSignal)) {
    if (p.state !== 'done') continue;
    const runs = p.runs ?? 0;
    const objects = p.objects ?? 0;
    if (runs > 0 || objects > 0) sum.conversations += 1;
    sum.runs += runs;
    sum.objects += objects;
    sum.bytes += p.bytes ?? 0;
  }
  return sum;
}

/**
 * How a conversation came to be erased: `target` (the conversation scope itself), `registered` (its
 * registry item), `discovered` (objects under the scope's prefixes, no registry item), `begun` (a
 * discovered one an earlier call began: its progress item exists).
 */
type Found = 'target' | 'registered' | 'discovered' | 'begun';

/**
 * Erases one conversation. Stateless and idempotent: a crash anywhere is repaired by running it again,
 * which fences once more and removes whatever is left (marks make the counts come out the same).
 *   1. A discovered conversation gets its progress item first: nothing else would find it again once its
 *      objects are gone. A conversation scope deletes the registry item now, before the HEAD fence: a
 *      write admitted after the fence finds HEAD unlisted and registers the conversation anew (new data).
 *   2. Fence HEAD: `ADD generation 1`, `clearedAtMs`, REMOVE the published run and the listing attributes
 *      (HEAD stays as a tombstone). Unconditional (a repeat only bumps again) except for an expiry, which
 *      is conditional on no write since its bound: otherwise the conversation is kept.
 *   3. Its records of older generations and its objects, each after its mark (`eraseContents`).
 *   4. The progress item, done, with the sums over the conversation's marks; then (org and agent scope)
 *      the registry item, last, so that a crash before it leaves the conversation findable.
 */
async function eraseConversation(run: Run, ref: ConversationRef, found: Found): Promise<void> {
  const { ctx, rec } = run;
  const pk = `${rec.org}/${ref.agent}/${ref.conv}`;
  const registry = registryKey({ org: rec.org, agent: ref.agent, conv: ref.conv });
  if (found === 'discovered') await putIfAbsent(ctx, progressItem(run, ref, { state: 'erasing' }), run.signal);
  if (found === 'target') await ctx.ddb.send(new DeleteItemCommand({ TableName: ctx.table, Key: registry }), { abortSignal: run.signal });

  const fence = await fenceConversation(run, pk);
  if (fence === 'kept') {
    await relist(run, ref, pk);
  } else {
    await eraseContents(run, ref, pk, { generation: fence.generation, clearedAtMs: fence.fencedAtMs });
  }
  await finishConversation(run, ref);
  // Org and agent scopes: the registry item goes last (for a discovered conversation: one a write fenced
  // by this erasure may have registered meanwhile).
  if (found !== 'target') await ctx.ddb.send(new DeleteItemCommand({ TableName: ctx.table, Key: registry }), { abortSignal: run.signal });
  run.progressed = true;
}

/**
 * The conversation's reset fence, as a clear sets it, in one UpdateItem that answers the generation it set
 * (`ReturnValues: UPDATED_NEW`). For an expiry, conditional on no write since `activeBeforeMs`; `'kept'`
 * when there was one.
 */
async function fenceConversation(run: Run, pk: string): Promise<{ generation: number; fencedAtMs: number } | 'kept'> {
  const { ctx, rec } = run;
  const fencedAtMs = ctx.now();
  try {
    const res = await ctx.ddb.send(
      new UpdateItemCommand({
        TableName: ctx.table,
        Key: headKey(pk),
        UpdateExpression: `SET clearedAtMs = :now ${REMOVE_HEAD} ADD generation :one`,
        ...(rec.activeBeforeMs !== undefined && { ConditionExpression: 'attribute_not_exists(activityAtMs) OR activityAtMs < :cutoff' }),
        ExpressionAttributeValues: marshall({ ':now': fencedAtMs, ':one': 1, ...(rec.activeBeforeMs !== undefined && { ':cutoff': rec.activeBeforeMs }) }),
        ReturnValues: 'UPDATED_NEW',
      }),
      { abortSignal: run.signal },
    );
    const generation = Number(res.Attributes?.['generation']?.N);
    if (!Number.isSafeInteger(generation)) throw new Error('the HEAD fence did not answer its generation');
    return { generation, fencedAtMs };
  } catch (err) {
    if (err instanceof ConditionalCheckFailedException) return 'kept';
    throw err;
  }
}

/**
 * An expiry that lost the race with a write: the conversation stays. Its registry item (deleted before
 * the fence) is put back when HEAD is listed — a write that registered the conversation itself already did.
 */
async function relist(run: Run, ref: ConversationRef, pk: string): Promise<void> {
  const { ctx, rec } = run;
  const head = await ctx.ddb.send(
    new GetItemCommand({ TableName: ctx.table, Key: headKey(pk), ConsistentRead: true, ProjectionExpression: 'orgKey, agentId, conversationId, activityAtMs' }),
    { abortSignal: run.signal },
  );
  const v = head.Item ? unmarshall(head.Item) : {};
  if (typeof v['orgKey'] !== 'string') return;
  const item = {
    ...registryKey({ org: rec.org, agent: ref.agent, conv: ref.conv }),
    ...marshall({ agentId: v['agentId'] ?? ref.agentId, conversationId: v['conversationId'] ?? ref.conversationId, registeredAtMs: ctx.now() }, { removeUndefinedValues: true }),
  };
  await putIfAbsent(ctx, item, run.signal);
}

/** A mark: the deterministic record of one removed RUN record (`r`) or object (`o`, with its stored size). */
function markItem(run: Run, ref: ConversationRef, kind: 'r' | 'o', what: string, bytes: number | undefined, nowMs: number): Item {
  const digest = createHash('sha256').update(what).digest('base64url').slice(0, 22);
  return marshall(
    {
      pk: orgPk(run.rec.org),
      sk: `${markPrefix(run, ref)}${kind}#${digest}`,
      bytes,
      // DynamoDB TTL: marks are needed only until the receipt completes.
      expiresAt: Math.floor(nowMs / 1000) + ERASURE_MARK_TTL_SECONDS,
    },
    { removeUndefinedValues: true },
  );
}

function markPrefix(run: Run, ref: ConversationRef): string {
  return `${ERASURE_MARK_SK_PREFIX}${run.rec.receiptId}#${refKey(ref)}#`;
}

/**
 * Everything the conversation stores from before the fence: its RUN and CHAIN records of older
 * generations (consistent Query of its partition) and the objects under its `snapshots/`, `uploads/` and
 * `materialized/` prefixes (listed after the fence, so they include what writers it fenced put until
 * then). Marks first (one BatchWriteItem per 25), then the deletes: RUN records (each conditional on being
 * the record read and still of an older generation: a run re-claimed since is never removed), CHAIN
 * records after every run (a run never names a missing chain), objects (DeleteObjects). Objects are
 * handled in chunks of 1,000 while listing; records with the last chunk.
 *
 * A conversation-scope erasure keeps objects whose key proves them newer than its fence (a write
 * admitted after it: new data); org and agent scopes admit no write while they run, so they remove every
 * object. An upload tagged with its writer's iat (a writer that echoes no generation) counts as newer
 * only from the second after the fence: unlike a clear, an erasure does not give the same second to the
 * writer.
 */
async function eraseContents(run: Run, ref: ConversationRef, pk: string, fence: { generation: number; clearedAtMs: number }): Promise<void> {
  const { ctx, rec } = run;
  const runs: RunRecord[] = [];
  const chains: ChainRecord[] = [];
  const pages = paginateQuery(
    { client: ctx.ddb },
    { TableName: ctx.table, KeyConditionExpression: 'pk = :pk', ExpressionAttributeValues: marshall({ ':pk': pk }), ConsistentRead: true },
    { abortSignal: run.signal },
  );
  for await (const page of pages) {
    for (const item of page.Items ?? []) {
      const sk = item['sk']?.S ?? '';
      if (sk.startsWith(RUN_SK_PREFIX)) runs.push(fromRunItem(item));
      else if (sk.startsWith(CHAIN_SK_PREFIX)) chains.push(fromChainItem(item));
    }
  }
  const window = Math.max(1, ctx.legacyFenceWindowSeconds);
  const keep = (key: string) => !scopeFenced(rec) && tagOfKey(key) !== undefined && !beforeFence(key, fence, window);
  let objects: { key: string; size: number }[] = [];

  const erase = async (last: boolean) => {
    const doomedRuns = last ? runs.filter((r) => r.generation < fence.generation) : [];
    const nowMs = ctx.now();
    const marks = [
      ...doomedRuns.map((r) => markItem(run, ref, 'r', `${r.runId}:${r.s3Key}`, undefined, nowMs)),
      ...objects.map((o) => markItem(run, ref, 'o', o.key, o.size, nowMs)),
    ];
    if (marks.length === 0 && !last) return;
    await batchPut(ctx, marks, run.signal);
    if (last) {
      await Promise.all(doomedRuns.map((r) => deleteStaleRun(ctx, pk, r, fence.generation, run.signal)));
      await Promise.all(chains.filter((c) => c.generation < fence.generation).map((c) => deleteStaleChain(ctx, pk, c, fence.generation, run.signal)));
    }
    await deleteObjects(ctx, objects.map((o) => o.key), run.signal);
    objects = [];
    if (marks.length > 0) run.progressed = true;
  };

  for (const prefix of PREFIXES) {
    for await (const page of listObjectPages(ctx, { prefix: `${prefix}${pk}/` }, run.signal)) {
      for (const o of page) if (o.Key !== undefined && !keep(o.Key)) objects.push({ key: o.Key, size: o.Size ?? 0 });
      if (objects.length >= DELETE_OBJECTS_MAX_KEYS) {
        await erase(false);
        await nextUnit(run);
      }
    }
  }
  await erase(true);
}

/** The conversation's counts (sums over its marks) on its progress item, `state = done`. Idempotent and monotonic. */
async function finishConversation(run: Run, ref: ConversationRef): Promise<void> {
  const { ctx } = run;
  const sum = { runs: 0, objects: 0, bytes: 0 };
  const prefix = markPrefix(run, ref);
  const pages = paginateQuery(
    { client: ctx.ddb },
    {
      TableName: ctx.table,
      KeyConditionExpression: 'pk = :pk AND begins_with(sk, :marks)',
      ExpressionAttributeValues: marshall({ ':pk': orgPk(run.rec.org), ':marks': prefix }),
      ProjectionExpression: 'sk, #bytes',
      ExpressionAttributeNames: { '#bytes': 'bytes' },
      ConsistentRead: true,
    },
    { abortSignal: run.signal },
  );
  for await (const page of pages) {
    for (const item of page.Items ?? []) {
      const sk = item['sk']?.S ?? '';
      if (sk.startsWith(`${prefix}r#`)) sum.runs += 1;
      else if (sk.startsWith(`${prefix}o#`)) {
        sum.objects += 1;
        sum.bytes += Number(item['bytes']?.N ?? 0);
      }
    }
  }
  // Marks only ever grow, so sums only grow: never replace larger sums (a concurrent call for the same
  // scope that counted a mark this one has not seen yet).
  await ifStill(() =>
    ctx.ddb.send(
      new PutItemCommand({
        TableName: ctx.table,
        Item: progressItem(run, ref, { state: 'done', ...sum }),
        ConditionExpression: 'attribute_not_exists(#runs) OR (#runs <= :r AND #objects <= :o)',
        ExpressionAttributeNames: { '#runs': 'runs', '#objects': 'objects' },
        ExpressionAttributeValues: marshall({ ':r': sum.runs, ':o': sum.objects }),
      }),
      { abortSignal: run.signal },
    ),
  );
}
