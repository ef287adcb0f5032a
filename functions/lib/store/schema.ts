import type { AttributeValue } from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import type { TerminalStatus } from '../contract.js';
import { padRunId, RUN_ID_DIGITS } from '../ids.js';
import { INITIAL_GENERATION, type ResetState } from './fence.js';

/**
 * Keys and item shapes: the one place that knows how records and objects are named.
 *
 * DynamoDB (one partition per conversation, pk = conversationKey = "org/agent/conv", each id encoded):
 *   HEAD   sk = "HEAD"          the latest completed run (what hydrate serves), the reset generation and
 *                               the time of the last clear (fence.ts)
 *   RUN    sk = "RUN#<run16>"   one immutable record per stored run, tagged with its generation
 *   CHAIN  sk = "CHAIN#<id>"    an append-only stream of deflate fragments shared by the completed runs
 *                               that extend one another (chain.ts): its objects, in order, and its length
 * S3:
 *   snapshots/<conversationKey>/<run16>/g<generation>-<uuid>.jsonl[.gz]  a fresh key per write: never overwritten
 *   snapshots/<conversationKey>/<run16>/g<generation>-<uuid>~<chain>.deflate  one object of chain <chain>
 *   materialized/<conversationKey>/g<generation>-<chain>-<end>.jsonl.gz  a chain prefix as one object, made
 *                                                      for a presigned redirect; a cache, deleted by age
 *   uploads/<conversationKey>/<run16>/<tag>-<uuid>     presigned uploads awaiting their commit; <tag> is
 *                                                      g<generation>, or the writer's token iat when it sent none
 * `<run16>` is the run id zero-padded to 16 digits, so key order is numeric order. Keys written before
 * generations existed carry `<iat>-` where `g<generation>-` stands now; they belong to generation 0.
 */
export const HEAD_SK = 'HEAD';
export const RUN_SK_PREFIX = 'RUN#';
export const SNAPSHOT_PREFIX = 'snapshots/';
export const UPLOAD_PREFIX = 'uploads/';
export const MATERIALIZED_PREFIX = 'materialized/';
export const CHAIN_SK_PREFIX = 'CHAIN#';
/** Partition of the reconciler's own bookkeeping; contains no `/`, so it can never be a conversation key. */
export const RECONCILER_PK = '~reconciler';

export type Encoding = 'gzip' | 'identity';
export type Item = Record<string, AttributeValue>;

/** What a stored snapshot is, as the worker wrote it. */
export interface SnapshotMeta {
  readonly runId: number;
  /** sha256 (lowercase hex) of the snapshot bytes as written (identity). */
  readonly sha256: string;
  /** Length in bytes of the snapshot as written (identity). */
  readonly bytes: number;
}

/** The RUN item: immutable once claimed. */
export interface RunRecord extends SnapshotMeta {
  readonly status: TerminalStatus;
  /** The object holding the bytes (possibly gzip: `encoding`, `storedBytes`). */
  readonly s3Key: string;
  readonly encoding: Encoding;
  /** Size of the object in bytes as stored. */
  readonly storedBytes: number;
  /** `iat` (seconds) of the token that wrote the run. */
  readonly iat: number;
  /** When the run was claimed (service clock, epoch ms). */
  readonly createdAtMs: number;
  /** The reset generation the run belongs to (fence.ts): it may publish only while HEAD is at it. */
  readonly generation: number;
  /** sha256 (hex) of the object's bytes as stored (gzip or not): verifies a read at the cost of the stored size. */
  readonly storedSha256: string | undefined;
  /**
   * Set for a run stored in a chain (chain.ts): its bytes are the chain's first `storedBytes` stored
   * bytes (raw deflate fragments), and `s3Key` is only the object this run's request wrote (its identity; compaction may have
   * merged it into another object since). Absent: the run's bytes are the object `s3Key`.
   */
  readonly chainId?: string | undefined;
  /** SHA-256 running state after the run's bytes (hash-wasm `save()`, 116 B): an append resumes it. */
  readonly hashState?: Uint8Array | undefined;
  /** CRC-32 running state after the run's bytes (hash-wasm `save()`, 8 B): an append resumes it. */
  readonly crcState?: Uint8Array | undefined;
  /** CRC-32 of the run's bytes: the trailer of the gzip member a chain run is served as (chain.ts). */
  readonly crc32?: number | undefined;
}

/** The HEAD item, as far as the write and clear paths need it. */
export interface HeadRecord extends ResetState {
  /** Object key of the published run, when there is one. */
  readonly latestKey: string | undefined;
  /** Run id of the published run, when there is one. */
  readonly latestRunId: number | undefined;
  /**
   * True when HEAD carries the listing attributes (registry.ts): the conversation is in its organization's
   * registry. False for a new conversation, one erased since, or one last written before listing existed.
   */
  readonly registered: boolean;
}

/** The published run as HEAD stores it: everything hydrate needs in one read. */
export interface LatestRecord extends SnapshotMeta {
  readonly s3Key: string;
  readonly encoding: Encoding;
  readonly storedBytes: number;
  readonly storedSha256: string | undefined;
  /** The chain holding the bytes, when the run is stored in one (then `extents` is a copy of its layout). */
  readonly chainId: string | undefined;
  /**
   * The chain's objects when the run was published: a cache that saves a read. Compaction may have
   * replaced them since; the CHAIN record is the truth (hydrate falls back to it when one is gone).
   */
  readonly extents: readonly Extent[] | undefined;
  /** The CHAIN record's `version` when `extents` was cached: an append on this run can skip reading the chain. */
  readonly chainVersion: number | undefined;
  readonly hashState: Uint8Array | undefined;
  readonly crcState: Uint8Array | undefined;
  readonly crc32: number | undefined;
}

/**
 * One object of a chain: `length` bytes (whole gzip members) whose sha256 is `sha256`. A chain's stored
 * stream is its extents' bytes in order; an extent's offset is the sum of the lengths before it.
 */
export interface Extent {
  readonly key: string;
  readonly length: number;
  readonly sha256: string;
}

/** A chain's objects and the CHAIN record's `version` they were read at. */
export interface ChainLayout {
  readonly extents: readonly Extent[];
  readonly version: number;
}

/** The CHAIN item. */
export interface ChainRecord {
  readonly chainId: string;
  readonly generation: number;
  readonly extents: readonly Extent[];
  /** Stored length of the chain (sum of the extents' lengths). */
  readonly end: number;
  /** Bumped by every change: appends and compactions are conditional on it. */
  readonly version: number;
}

/** HEAD attributes that describe the published run, each a copy of one RunRecord field. */
const LATEST_FIELDS = {
  latestRunId: 'runId',
  latestKey: 's3Key',
  latestSha256: 'sha256',
  latestBytes: 'bytes',
  latestStoredBytes: 'storedBytes',
  latestEncoding: 'encoding',
  latestCreatedAtMs: 'createdAtMs',
  latestStoredSha256: 'storedSha256',
  latestChainId: 'chainId',
  latestHashState: 'hashState',
  latestCrcState: 'crcState',
  latestCrc32: 'crc32',
} as const satisfies Record<string, keyof RunRecord>;
const LATEST_ATTRIBUTES = Object.keys(LATEST_FIELDS) as (keyof typeof LATEST_FIELDS)[];

/** More clauses for the same UpdateItem (registry.ts `listingUpdate`): `SET` and `ADD` parts and their values. */
export interface ExtraClauses {
  readonly set: readonly string[];
  readonly add: readonly string[];
  readonly values: Item;
}

/**
 * `SET latest… = :latest…` for publishing `r` on HEAD; placeholders are named after the attributes.
 * `layout`: the layout of `r`'s chain to cache on HEAD (chain runs only). `extra`: clauses to add (the
 * conversation's listing attributes and counters).
 */
export function setLatest(r: RunRecord, layout?: ChainLayout, extra?: ExtraClauses): { expression: string; values: Item } {
  const value = (a: (typeof LATEST_ATTRIBUTES)[number]) => r[LATEST_FIELDS[a]];
  const present = LATEST_ATTRIBUTES.filter((a) => value(a) !== undefined);
  const absent: string[] = LATEST_ATTRIBUTES.filter((a) => value(a) === undefined);
  const withLayout = r.chainId !== undefined && layout !== undefined;
  if (!withLayout) absent.push(...LAYOUT_ATTRIBUTES);
  const set = [...present.map((a) => `${a} = :${a}`), ...(withLayout ? LAYOUT_ATTRIBUTES.map((a) => `${a} = :${a}`) : []), ...(extra?.set ?? [])];
  return {
    expression:
      `SET ${set.join(', ')}${absent.length ? ` REMOVE ${absent.join(', ')}` : ''}` + (extra?.add.length ? ` ADD ${extra.add.join(', ')}` : ''),
    values: {
      ...extra?.values,
      ...marshall({
      ...Object.fromEntries(present.map((a) => [`:${a}`, value(a)])),
      ...(withLayout && { ':latestExtents': layout.extents.map(extentAttribute), ':latestChainVersion': layout.version }),
      }),
    },
  };
}

/** HEAD attributes that cache the published run's chain layout. */
const LAYOUT_ATTRIBUTES = ['latestExtents', 'latestChainVersion'];

/** `REMOVE latest…`: un-publishes whatever HEAD names. */
export const REMOVE_LATEST = `REMOVE ${[...LATEST_ATTRIBUTES, ...LAYOUT_ATTRIBUTES].join(', ')}`;

/** ProjectionExpression for everything hydrate needs from HEAD (the published run and the generation). */
export const LATEST_PROJECTION = [...LATEST_ATTRIBUTES, ...LAYOUT_ATTRIBUTES, 'generation'].join(', ');

export function itemKey(pk: string, sk: string): Item {
  return marshall({ pk, sk });
}

export function headKey(pk: string): Item {
  return itemKey(pk, HEAD_SK);
}

export function runKey(pk: string, runId: number): Item {
  return itemKey(pk, RUN_SK_PREFIX + padRunId(runId));
}

export function runItem(pk: string, r: RunRecord): Item {
  return marshall({
    pk,
    sk: RUN_SK_PREFIX + padRunId(r.runId),
    runId: r.runId,
    runStatus: r.status,
    s3Key: r.s3Key,
    sha256: r.sha256,
    bytes: r.bytes,
    storedBytes: r.storedBytes,
    encoding: r.encoding,
    iat: r.iat,
    createdAtMs: r.createdAtMs,
    generation: r.generation,
    ...(r.storedSha256 !== undefined && { storedSha256: r.storedSha256 }),
    ...(r.chainId !== undefined && { chainId: r.chainId }),
    ...(r.hashState !== undefined && { hashState: r.hashState }),
    ...(r.crcState !== undefined && { crcState: r.crcState }),
    ...(r.crc32 !== undefined && { crc32: r.crc32 }),
  });
}

export function fromRunItem(item: Item): RunRecord {
  const v = unmarshall(item);
  return {
    runId: requireNumber(v, 'runId'),
    status: requireString(v, 'runStatus') as TerminalStatus,
    s3Key: requireString(v, 's3Key'),
    sha256: requireString(v, 'sha256'),
    bytes: requireNumber(v, 'bytes'),
    storedBytes: typeof v['storedBytes'] === 'number' ? v['storedBytes'] : requireNumber(v, 'bytes'),
    encoding: v['encoding'] === 'gzip' ? 'gzip' : 'identity',
    iat: requireNumber(v, 'iat'),
    createdAtMs: requireNumber(v, 'createdAtMs'),
    // Records from before generations existed belong to generation 0.
    generation: typeof v['generation'] === 'number' ? v['generation'] : INITIAL_GENERATION,
    storedSha256: typeof v['storedSha256'] === 'string' ? v['storedSha256'] : undefined,
    chainId: typeof v['chainId'] === 'string' ? v['chainId'] : undefined,
    hashState: v['hashState'] instanceof Uint8Array ? v['hashState'] : undefined,
    crcState: v['crcState'] instanceof Uint8Array ? v['crcState'] : undefined,
    crc32: typeof v['crc32'] === 'number' ? v['crc32'] : undefined,
  };
}

export function fromHeadItem(item: Item | undefined): HeadRecord {
  const v = item ? unmarshall(item) : {};
  return {
    generation: typeof v['generation'] === 'number' ? v['generation'] : INITIAL_GENERATION,
    clearedAtMs: typeof v['clearedAtMs'] === 'number' ? v['clearedAtMs'] : undefined,
    latestKey: typeof v['latestKey'] === 'string' ? v['latestKey'] : undefined,
    latestRunId: typeof v['latestRunId'] === 'number' ? v['latestRunId'] : undefined,
    registered: typeof v['orgKey'] === 'string',
  };
}

/** The published run from a HEAD item, or undefined when nothing is published. */
export function latestFromHeadItem(item: Item | undefined): LatestRecord | undefined {
  if (!item?.['latestRunId']) return undefined;
  const v = unmarshall(item);
  const bytes = requireNumber(v, 'latestBytes');
  return {
    runId: requireNumber(v, 'latestRunId'),
    sha256: requireString(v, 'latestSha256'),
    bytes,
    s3Key: requireString(v, 'latestKey'),
    encoding: v['latestEncoding'] === 'gzip' ? 'gzip' : 'identity',
    storedBytes: typeof v['latestStoredBytes'] === 'number' ? v['latestStoredBytes'] : bytes,
    storedSha256: typeof v['latestStoredSha256'] === 'string' ? v['latestStoredSha256'] : undefined,
    chainId: typeof v['latestChainId'] === 'string' ? v['latestChainId'] : undefined,
    extents: Array.isArray(v['latestExtents']) ? (v['latestExtents'] as unknown[]).map(fromExtentAttribute) : undefined,
    chainVersion: typeof v['latestChainVersion'] === 'number' ? v['latestChainVersion'] : undefined,
    hashState: v['latestHashState'] instanceof Uint8Array ? v['latestHashState'] : undefined,
    crcState: v['latestCrcState'] instanceof Uint8Array ? v['latestCrcState'] : undefined,
    crc32: typeof v['latestCrc32'] === 'number' ? v['latestCrc32'] : undefined,
  };
}

/** An extent as stored in DynamoDB (short names: a chain's item holds a list of them). */
function extentAttribute(e: Extent): { k: string; n: number; h: string } {
  return { k: e.key, n: e.length, h: e.sha256 };
}

function fromExtentAttribute(a: unknown): Extent {
  const v = (a ?? {}) as Record<string, unknown>;
  return { key: requireString(v, 'k'), length: requireNumber(v, 'n'), sha256: requireString(v, 'h') };
}

export function chainKey(pk: string, chainId: string): Item {
  return itemKey(pk, CHAIN_SK_PREFIX + chainId);
}

export function chainItem(pk: string, c: ChainRecord): Item {
  return marshall({
    pk,
    sk: CHAIN_SK_PREFIX + c.chainId,
    generation: c.generation,
    extents: c.extents.map(extentAttribute),
    chainEnd: c.end,
    version: c.version,
  });
}

/** `extents = :extents, chainEnd = :chainEnd, version = :version` values for a chain update. */
export function chainLayoutValues(extents: readonly Extent[], end: number, version: number): Item {
  return marshall({ ':extents': extents.map(extentAttribute), ':chainEnd': end, ':version': version });
}

export function fromChainItem(item: Item): ChainRecord {
  const v = unmarshall(item);
  const sk = requireString(v, 'sk');
  return {
    chainId: sk.slice(CHAIN_SK_PREFIX.length),
    generation: requireNumber(v, 'generation'),
    extents: ((v['extents'] as unknown[] | undefined) ?? []).map(fromExtentAttribute),
    end: requireNumber(v, 'chainEnd'),
    version: requireNumber(v, 'version'),
  };
}

/** The generation a HEAD item is at (0 when absent or never cleared). */
export function generationOfHeadItem(item: Item | undefined): number {
  const g = item?.['generation']?.N;
  return g === undefined ? INITIAL_GENERATION : Number(g);
}

/** `snapshots/<conversationKey>/<run16>/g<generation>-<id>.jsonl[.gz]`. */
export function snapshotObjectKey(pk: string, runId: number, generation: number, id: string, encoding: Encoding): string {
  return `${SNAPSHOT_PREFIX}${pk}/${padRunId(runId)}/g${generation}-${id}.jsonl${encoding === 'gzip' ? '.gz' : ''}`;
}

/** `snapshots/<conversationKey>/<run16>/g<generation>-<id>~<chainId>.deflate`: an object of a chain (raw deflate fragments). */
export function chainObjectKey(pk: string, runId: number, generation: number, id: string, chainId: string): string {
  return `${SNAPSHOT_PREFIX}${pk}/${padRunId(runId)}/g${generation}-${id}~${chainId}.deflate`;
}

const CHAIN_OF_KEY = /~([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.deflate$/;

/** The chain an object key belongs to, or undefined for an object of no chain. */
export function chainOfKey(s3Key: string): string | undefined {
  return CHAIN_OF_KEY.exec(s3Key)?.[1];
}

/** `materialized/<conversationKey>/g<generation>-<chainId>-<end>.jsonl.gz`: the chain's first `end` stored bytes. */
export function materializedObjectKey(pk: string, generation: number, chainId: string, end: number): string {
  return `${MATERIALIZED_PREFIX}${pk}/g${generation}-${chainId}-${end}.jsonl.gz`;
}

/** What an upload key is tagged with: the writer's generation, or (when it sent none) its token iat. */
export type UploadTag = { readonly generation: number } | { readonly iat: number };

/** `uploads/<conversationKey>/<run16>/<tag>-<id>`. */
export function uploadObjectKey(pk: string, runId: number, tag: UploadTag, id: string): string {
  return `${UPLOAD_PREFIX}${pk}/${padRunId(runId)}/${'generation' in tag ? `g${tag.generation}` : tag.iat}-${id}`;
}

const SNAPSHOT_KEY = new RegExp(`^${SNAPSHOT_PREFIX}([^/]+/[^/]+/[^/]+)/(\\d{${RUN_ID_DIGITS}})/[^/]+$`);
const KEY_TAG = /\/(g?)(\d+)-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}[^/]*$/;

/** The conversation key and RUN sort key a snapshot object belongs to, or undefined for a foreign key. */
export function parseSnapshotKey(s3Key: string): { pk: string; runSk: string } | undefined {
  const m = SNAPSHOT_KEY.exec(s3Key);
  return m ? { pk: m[1]!, runSk: RUN_SK_PREFIX + m[2]! } : undefined;
}

/**
 * The tag of a snapshot or upload key: `g<n>` → its generation; a bare number → the writer's iat (uploads
 * of writers that sent no generation, and snapshot keys written before generations existed). Undefined
 * for a foreign key.
 */
export function tagOfKey(s3Key: string): UploadTag | undefined {
  const m = KEY_TAG.exec(s3Key);
  if (!m) return undefined;
  return m[1] === 'g' ? { generation: Number(m[2]) } : { iat: Number(m[2]) };
}

function requireString(v: Record<string, unknown>, name: string): string {
  const s = v[name];
  if (typeof s !== 'string') throw new Error(`item attribute ${name} missing`);
  return s;
}

function requireNumber(v: Record<string, unknown>, name: string): number {
  const n = v[name];
  if (typeof n !== 'number') throw new Error(`item attribute ${name} missing`);
  return n;
}
