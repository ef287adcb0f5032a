/**
 * Shared helpers of the erasure tests: a conversation with every kind of stored thing, an independent
 * inventory of what an erasure must remove, a byte-exact picture of what it must not touch, and the
 * check that nothing of an erased conversation remains but its HEAD tombstone.
 */
import { createHash } from 'node:crypto';
import { BatchWriteItemCommand, QueryCommand, type AttributeValue, type BatchWriteItemCommandOutput, type WriteRequest } from '@aws-sdk/client-dynamodb';
import { CopyObjectCommand, GetObjectCommand, ListObjectsV2Command, paginateListObjectsV2 } from '@aws-sdk/client-s3';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import { expect } from 'vitest';
import { UPLOADS_PATH } from '../../functions/lib/contract.js';
import { conversationKey, encodeId } from '../../functions/lib/ids.js';
import type { LocalService } from '../../local/service.js';
import type { Api, Scope } from './service.js';
import { putUpload, type Ticket } from './uploads.js';

export const PREFIXES = ['snapshots/', 'uploads/', 'materialized/'] as const;

let counter = 0;
/** A scope in an organization of its own (org-scope erasures in one test never reach another test's data). */
export function isolatedScope(tag: string, org?: string): Scope {
  counter += 1;
  return { org: org ?? `org-${tag}-${process.pid}-${counter}`, agent: 'agent-a', conv: `conv-${counter}` };
}

export const pkOf = (s: Scope): string => conversationKey({ organizationId: s.org, agentId: s.agent, conversationId: s.conv });
const turn = (s: Scope, run: number) => JSON.stringify({ conv: s.conv, run, text: `turn ${run} — ü 🚀 `.repeat(3) }) + '\n';

async function ok(res: Promise<Response>, what: string): Promise<Response> {
  const r = await res;
  if (r.status !== 200) throw new Error(`${what}: ${r.status} ${await r.text()}`);
  return r;
}

/**
 * Stores one of everything in `scope` through the HTTP routes: completed runs 1–3 (one chain of three
 * objects: 2 and 3 extend 1), a failed run 4 (an object of its own), a hydrate that makes a
 * materialized copy when the service's inline limit is below the chain's size, and an uncommitted
 * presigned upload for run 5. `full: false` stores only run 1. Returns the bytes hydrate serves.
 */
export async function seedConversation(api: Api, scope: Scope, opts: { full?: boolean } = {}): Promise<string> {
  let content = turn(scope, 1);
  await ok(api.write(scope, 1, content), 'write 1');
  if (opts.full === false) return content;
  for (const run of [2, 3]) {
    content += turn(scope, run);
    await ok(api.write(scope, run, content), `write ${run}`);
  }
  await ok(api.write(scope, 4, content + 'partial', 'failed'), 'write 4');
  const h = await api.hydrate(scope);
  if (h?.body.toString('utf8') !== content) throw new Error('seed: hydrate does not serve run 3');
  const data = Buffer.from(content + turn(scope, 5));
  const token = await api.token(scope, { runId: 5 });
  const res = await ok(
    fetch(`${api.baseUrl}${UPLOADS_PATH}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ runId: 5, bytes: data.length, contentEncoding: 'identity' }),
    }),
    'upload ticket',
  );
  await putUpload((await res.json()) as Ticket, data);
  return content;
}

export interface Inventory {
  runs: number;
  objects: number;
  bytes: number;
  keys: string[];
}

/** Every object under the conversation's three prefixes, with its listed size. */
export async function objectsOf(svc: LocalService, scope: Scope): Promise<{ key: string; size: number }[]> {
  const out: { key: string; size: number }[] = [];
  for (const prefix of PREFIXES) {
    for await (const page of paginateListObjectsV2({ client: svc.s3 }, { Bucket: svc.config.bucketName, Prefix: `${prefix}${pkOf(scope)}/` })) {
      for (const o of page.Contents ?? []) out.push({ key: o.Key!, size: o.Size ?? 0 });
    }
  }
  return out.sort((a, b) => a.key.localeCompare(b.key));
}

/** Every item of a partition (consistent), unmarshalled. */
export async function itemsOf(svc: LocalService, pk: string): Promise<Record<string, unknown>[]> {
  const out: Record<string, unknown>[] = [];
  let start: Record<string, AttributeValue> | undefined;
  do {
    const res = await svc.ddb.send(
      new QueryCommand({
        TableName: svc.config.tableName,
        KeyConditionExpression: 'pk = :pk',
        ExpressionAttributeValues: { ':pk': { S: pk } },
        ConsistentRead: true,
        ...(start && { ExclusiveStartKey: start }),
      }),
    );
    out.push(...(res.Items ?? []).map((i) => unmarshall(i)));
    start = res.LastEvaluatedKey;
  } while (start);
  return out;
}

/** What an erasure of these conversations must report, computed without the erasure's code. */
export async function inventoryOf(svc: LocalService, scopes: readonly Scope[]): Promise<Inventory> {
  const inv: Inventory = { runs: 0, objects: 0, bytes: 0, keys: [] };
  for (const s of scopes) {
    inv.runs += (await itemsOf(svc, pkOf(s))).filter((i) => String(i['sk']).startsWith('RUN#')).length;
    for (const o of await objectsOf(svc, s)) {
      inv.objects += 1;
      inv.bytes += o.size;
      inv.keys.push(o.key);
    }
  }
  return inv;
}

/** A byte-exact picture of conversations: every item as stored and every object's sha256. */
export async function pictureOf(svc: LocalService, scopes: readonly Scope[]): Promise<unknown> {
  const out: Record<string, unknown> = {};
  for (const s of scopes) {
    const objects: Record<string, string> = {};
    for (const o of await objectsOf(svc, s)) {
      const got = await svc.s3.send(new GetObjectCommand({ Bucket: svc.config.bucketName, Key: o.key }));
      objects[o.key] = createHash('sha256').update(await got.Body!.transformToByteArray()).digest('hex');
    }
    out[pkOf(s)] = { items: await itemsOf(svc, pkOf(s)), objects };
  }
  return out;
}

/** Asserts that nothing of the conversation remains but its HEAD tombstone (generation, clearedAtMs). */
export async function expectErased(svc: LocalService, scope: Scope): Promise<void> {
  expect(await objectsOf(svc, scope), `objects of ${scope.conv}`).toEqual([]);
  const items = await itemsOf(svc, pkOf(scope));
  expect(items.map((i) => i['sk']), `items of ${scope.conv}`).toEqual(['HEAD']);
  expect(Object.keys(items[0]!).sort(), 'HEAD is a tombstone').toEqual(['clearedAtMs', 'generation', 'pk', 'sk']);
}

/** {@link expectErased} for conversations of one agent, with one listing per prefix for all of them. */
export async function expectAgentErased(svc: LocalService, scopes: readonly Scope[]): Promise<void> {
  const [{ org, agent }] = scopes as [Scope];
  for (const prefix of PREFIXES) {
    const res = await svc.s3.send(new ListObjectsV2Command({ Bucket: svc.config.bucketName, Prefix: `${prefix}${encodeId(org)}/${encodeId(agent)}/` }));
    expect(res.Contents ?? [], `objects under ${prefix}`).toEqual([]);
  }
  for (const s of scopes) {
    const items = await itemsOf(svc, pkOf(s));
    expect(items.map((i) => i['sk']), `items of ${s.conv}`).toEqual(['HEAD']);
    expect(Object.keys(items[0]!).sort(), 'HEAD is a tombstone').toEqual(['clearedAtMs', 'generation', 'pk', 'sk']);
  }
}

/** The organization partition's items whose sort key starts with `prefix`. */
export async function orgItems(svc: LocalService, orgSegment: string, prefix: string): Promise<Record<string, unknown>[]> {
  return (await itemsOf(svc, `~org#${orgSegment}`)).filter((i) => String(i['sk']).startsWith(prefix));
}

/** Every item and object key of `scopes` (all of one organization) and of the organization's partition. */
export interface OrganizationCopy {
  readonly org: string;
  readonly scopes: readonly Scope[];
  readonly items: readonly Record<string, AttributeValue>[];
  readonly keys: readonly string[];
}

export async function copyOf(svc: LocalService, scopes: readonly Scope[]): Promise<OrganizationCopy> {
  const org = scopes[0]!.org;
  if (scopes.some((s) => s.org !== org)) throw new Error('copyOf: one organization at a time');
  const items: Record<string, AttributeValue>[] = [];
  for (const pk of [...scopes.map(pkOf), `~org#${encodeId(org)}`]) for (const item of await itemsOf(svc, pk)) items.push(marshall(item));
  const keys = (await Promise.all(scopes.map((s) => objectsOf(svc, s)))).flat().map((o) => o.key);
  return { org, scopes, items, keys };
}

/** `value` with every string (and object key) that names organization `from` naming `to` instead. */
export function renameOrg<T>(value: T, from: string, to: string): T {
  const [f, t] = [encodeId(from), encodeId(to)];
  const walk = (v: unknown): unknown => {
    if (typeof v === 'string') return v.split(f).join(t);
    if (Array.isArray(v)) return v.map(walk);
    if (v && typeof v === 'object' && !(v instanceof Uint8Array) && !(v instanceof Set)) {
      return Object.fromEntries(Object.entries(v).map(([k, x]) => [walk(k) as string, walk(x)]));
    }
    return v;
  };
  return walk(value) as T;
}

/**
 * Writes a copy of `copy` to organization `toOrg`: the same items and object bytes under keys (and
 * key-valued attributes) that name `toOrg`, without writing them through the service again (the fault
 * sweeps need one fresh world per injected fault). Returns the copied scopes.
 */
export async function cloneOrganization(svc: LocalService, copy: OrganizationCopy, toOrg: string): Promise<Scope[]> {
  const items = copy.items.map((i) => renameOrg(i, copy.org, toOrg));
  for (let i = 0; i < items.length; i += 25) {
    let requests: WriteRequest[] | undefined = items.slice(i, i + 25).map((Item) => ({ PutRequest: { Item } }));
    while (requests?.length) {
      const res: BatchWriteItemCommandOutput = await svc.ddb.send(new BatchWriteItemCommand({ RequestItems: { [svc.config.tableName]: requests } }));
      requests = res.UnprocessedItems?.[svc.config.tableName];
    }
  }
  await Promise.all(
    copy.keys.map((key) =>
      svc.s3.send(new CopyObjectCommand({ Bucket: svc.config.bucketName, CopySource: `${svc.config.bucketName}/${encodeURI(key)}`, Key: renameOrg(key, copy.org, toOrg) })),
    ),
  );
  return copy.scopes.map((s) => ({ ...s, org: toOrg }));
}
