import type { AttributeValue } from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import type { TerminalStatus } from '../contract.js';
import { padRunId, RUN_ID_DIGITS } from '../ids.js';

/**
 * Keys and item shapes: the one place that knows how records and objects are named.
 *
 * DynamoDB (one partition per conversation, pk = conversationKey = "org/agent/conv", each id encoded):
 *   HEAD   sk = "HEAD"          the latest completed run (what hydrate serves) + the reset fence (I4)
 *   RUN    sk = "RUN#<run16>"   one immutable record per stored run
 * S3:
 *   snapshots/<conversationKey>/<run16>/<iat>-<uuid>.jsonl[.gz]   a fresh key per write: never overwritten
 *   uploads/<conversationKey>/<run16>/<iat>-<uuid>                presigned uploads awaiting their commit
 * `<run16>` is the run id zero-padded to 16 digits, so key order is numeric order.
 */
export const HEAD_SK = 'HEAD';
export const RUN_SK_PREFIX = 'RUN#';
export const SNAPSHOT_PREFIX = 'snapshots/';
export const UPLOAD_PREFIX = 'uploads/';
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
  /** `iat` (seconds) of the token that wrote the run: orders it against resets (see fence.ts). */
  readonly iat: number;
  /** When the run was claimed (service clock, epoch ms): orders it against resets (see fence.ts). */
  readonly createdAtMs: number;
}

/** The HEAD item, as far as the write and clear paths need it. */
export interface HeadRecord {
  /** The reset fence, when the conversation was ever cleared. */
  readonly fence: Fence | undefined;
  /** Object key of the published run, when there is one. */
  readonly latestKey: string | undefined;
}

/** The last clear of a conversation (service clock): ms, and the same instant in whole seconds. */
export interface Fence {
  readonly ms: number;
  readonly sec: number;
}

/** The published run as HEAD stores it: everything hydrate needs in one read. */
export interface LatestRecord extends SnapshotMeta {
  readonly s3Key: string;
  readonly encoding: Encoding;
  readonly storedBytes: number;
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
} as const satisfies Record<string, keyof RunRecord>;
const LATEST_ATTRIBUTES = Object.keys(LATEST_FIELDS) as (keyof typeof LATEST_FIELDS)[];

/** `SET latest… = :latest…` for publishing `r` on HEAD; placeholders are named after the attributes. */
export function setLatest(r: RunRecord): { expression: string; values: Item } {
  return {
    expression: `SET ${LATEST_ATTRIBUTES.map((a) => `${a} = :${a}`).join(', ')}`,
    values: marshall(Object.fromEntries(LATEST_ATTRIBUTES.map((a) => [`:${a}`, r[LATEST_FIELDS[a]]]))),
  };
}

/** `REMOVE latest…`: un-publishes whatever HEAD names. */
export const REMOVE_LATEST = `REMOVE ${LATEST_ATTRIBUTES.join(', ')}`;

/** ProjectionExpression for everything hydrate needs from HEAD. */
export const LATEST_PROJECTION = LATEST_ATTRIBUTES.join(', ');

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
  };
}

export function fromHeadItem(item: Item | undefined): HeadRecord {
  if (!item) return { fence: undefined, latestKey: undefined };
  const v = unmarshall(item);
  const latestKey = typeof v['latestKey'] === 'string' ? v['latestKey'] : undefined;
  if (typeof v['clearedAtMs'] !== 'number') return { fence: undefined, latestKey };
  return { fence: { ms: v['clearedAtMs'], sec: requireNumber(v, 'clearedAtSec') }, latestKey };
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
  };
}

/** `snapshots/<conversationKey>/<run16>/<iat>-<id>.jsonl[.gz]`. */
export function snapshotObjectKey(pk: string, runId: number, iat: number, id: string, encoding: Encoding): string {
  return `${SNAPSHOT_PREFIX}${pk}/${padRunId(runId)}/${iat}-${id}.jsonl${encoding === 'gzip' ? '.gz' : ''}`;
}

/** `uploads/<conversationKey>/<run16>/<iat>-<id>`. */
export function uploadObjectKey(pk: string, runId: number, iat: number, id: string): string {
  return `${UPLOAD_PREFIX}${pk}/${padRunId(runId)}/${iat}-${id}`;
}

const SNAPSHOT_KEY = new RegExp(`^${SNAPSHOT_PREFIX}([^/]+/[^/]+/[^/]+)/(\\d{${RUN_ID_DIGITS}})/[^/]+$`);
const KEY_ISSUED_AT = /\/(\d+)-[0-9a-f-]+(?:\.jsonl(?:\.gz)?)?$/;

/** The conversation key and RUN sort key a snapshot object belongs to, or undefined for a foreign key. */
export function parseSnapshotKey(s3Key: string): { pk: string; runSk: string } | undefined {
  const m = SNAPSHOT_KEY.exec(s3Key);
  return m ? { pk: m[1]!, runSk: RUN_SK_PREFIX + m[2]! } : undefined;
}

/** The writer's token `iat` embedded in a snapshot or upload key, or undefined for a foreign key. */
export function issuedAtOfKey(s3Key: string): number | undefined {
  const iat = KEY_ISSUED_AT.exec(s3Key)?.[1];
  return iat === undefined ? undefined : Number(iat);
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
