/**
 * Incremental sync (issue 12) over HTTP: appends (`appendJsonl` + `base` + `sha256`) and delta
 * hydrates (`A-IM: append` → 226). Every error case also checks that the store is unchanged.
 */
import { QueryCommand } from '@aws-sdk/client-dynamodb';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { randomBytes } from 'node:crypto';
import { gunzipSync, gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { ERRORS, errorBody } from '../../functions/lib/contract.js';
import { Api, freshScope, useLocalService, type Scope } from '../helpers/service.js';
import { sha, len, pkOf, line, ok, expectError, expectHydrate } from '../helpers/append.js';
import { rawGet as rawRequest } from '../helpers/raw-http.js';

const rawGet = (api: Api, token: string, headers: Record<string, string>) => rawRequest(api.url, { authorization: `Bearer ${token}`, ...headers });

const ctx = useLocalService();

interface Meta {
  runId: number;
  bytes: number;
  sha256: string;
}
const metaOf = (runId: number, content: string): Meta => ({ runId, bytes: len(content), sha256: sha(content) });

async function append(
  api: Api,
  scope: Scope,
  runId: number,
  base: Meta,
  appended: string,
  opts: { sha256?: string; status?: string; headers?: Record<string, string>; body?: Record<string, unknown> } = {},
): Promise<Response> {
  const token = await api.token(scope, { runId });
  const whole = opts.sha256 ?? sha(Buffer.concat([Buffer.from(''), Buffer.from(await contentOf(base)), Buffer.from(appended, 'utf8')]));
  return api.post(
    token,
    opts.body ?? { runId, terminalStatus: opts.status ?? 'completed', appendJsonl: appended, base: { runId: base.runId, bytes: base.bytes, sha256: base.sha256 }, sha256: whole },
    opts.headers,
  );
}

/** Content registry by sha256, so an append's whole digest can be computed from the base's meta. */
const contents = new Map<string, string>();
async function contentOf(m: Meta): Promise<string> {
  return contents.get(m.sha256) ?? '';
}
function remember(content: string): string {
  contents.set(sha(content), content);
  return content;
}

async function write(api: Api, scope: Scope, runId: number, content: string, status = 'completed', headers: Record<string, string> = {}): Promise<Response> {
  remember(content);
  const token = await api.token(scope, { runId });
  return api.post(token, { terminalStatus: status, snapshotJsonl: content, runId }, headers);
}

function deltaHeaders(base: Meta, acceptEncoding?: string): Record<string, string> {
  return {
    'a-im': 'append',
    'if-none-match': `"${base.sha256}"`,
    'x-snapshot-base-run-id': String(base.runId),
    ...(acceptEncoding !== undefined && { 'accept-encoding': acceptEncoding }),
  };
}

async function objects(scope: Scope, root = 'snapshots'): Promise<{ key: string; size: number }[]> {
  const { svc } = ctx;
  const res = await svc.s3.send(new ListObjectsV2Command({ Bucket: svc.config.bucketName, Prefix: `${root}/${pkOf(scope)}/` }));
  return (res.Contents ?? []).map((o) => ({ key: o.Key!, size: o.Size! }));
}

async function items(scope: Scope): Promise<{ sk: string; status?: string }[]> {
  const { svc } = ctx;
  const res = await svc.ddb.send(
    new QueryCommand({
      TableName: svc.config.tableName,
      KeyConditionExpression: 'pk = :pk',
      ExpressionAttributeValues: { ':pk': { S: pkOf(scope) } },
      ConsistentRead: true,
    }),
  );
  return (res.Items ?? []).map((i) => ({ sk: i['sk']!.S!, ...(i['runStatus']?.S !== undefined && { status: i['runStatus'].S }) }));
}

const A = remember(line({ role: 'user', text: 'héllo 🚀' }) + line({ role: 'assistant', text: 'hi' }));
const B = line({ role: 'user', text: 'second turn — ü' }) + '\r\n' + line({ t: 2 });
const C = line({ role: 'user', text: 'a fork' });

/** run 1 = A (full write), run 2 = A + B (append). */
async function seedTwo(api: Api, scope: Scope): Promise<{ m1: Meta; m2: Meta }> {
  await ok(write(api, scope, 1, A));
  const m1 = metaOf(1, A);
  const body = await ok(append(api, scope, 2, m1, B));
  const m2 = metaOf(2, remember(A + B));
  expect(body).toMatchObject({ runId: 2, sha256: m2.sha256, bytes: m2.bytes, latest: true });
  return { m1, m2 };
}

describe('append (POST appendJsonl)', () => {
  it('happy path: 200 with the whole file digest and length; hydrate byte-exact', async () => {
    const { api } = ctx;
    const scope = freshScope('app');
    await seedTwo(api, scope);
    await expectHydrate(api, scope, 2, A + B);
    const three = remember(A + B + '\n\n');
    const body = await ok(append(api, scope, 3, metaOf(2, A + B), '\n\n'));
    expect(body).toMatchObject({ id: 3, runId: 3, sha256: sha(three), bytes: len(three), latest: true });
    await expectHydrate(api, scope, 3, three);
  });

  it('an empty appendJsonl stores a run with the base content', async () => {
    const { api } = ctx;
    const scope = freshScope('app-empty');
    await ok(write(api, scope, 1, A));
    const body = await ok(append(api, scope, 2, metaOf(1, A), ''));
    expect(body).toMatchObject({ runId: 2, sha256: sha(A), bytes: len(A) });
    await expectHydrate(api, scope, 2, A);
  });

  it('a full POST whose body extends the latest run is stored as an append (one chain; fewer stored bytes than two copies)', async () => {
    const { api } = ctx;
    const scope = freshScope('app-legacy');
    const big = remember(Array.from({ length: 200 }, (_, i) => line({ i, r: randomBytes(48).toString('base64') })).join(''));
    const bigger = remember(big + B);
    await ok(write(api, scope, 1, big));
    await ok(write(api, scope, 2, bigger));
    await expectHydrate(api, scope, 2, bigger);
    const objs = await objects(scope);
    const stored = objs.reduce((n, o) => n + o.size, 0);
    const oneCopy = gzipSync(bigger).length;
    expect(stored).toBeGreaterThan(0);
    expect(stored).toBeLessThan(1.5 * oneCopy);
    expect((await items(scope)).filter((i) => i.sk.startsWith('CHAIN#'))).toHaveLength(1);
    // And a client holding run 1 gets only B.
    const d = await rawGet(api, await api.token(scope), deltaHeaders(metaOf(1, big), 'identity'));
    expect(d.status).toBe(226);
    expect(d.body.toString('utf8')).toBe(B);
  });

  it('appending to an older completed run (a fork) stores base + append; hydrate exact', async () => {
    const { api } = ctx;
    const scope = freshScope('app-fork');
    const { m1, m2 } = await seedTwo(api, scope);
    const forked = remember(A + C);
    const body = await ok(append(api, scope, 3, m1, C));
    expect(body).toMatchObject({ runId: 3, sha256: sha(forked), bytes: len(forked), latest: true });
    await expectHydrate(api, scope, 3, forked);
    // A client holding run 2 (other branch) gets the whole file, not a delta.
    const full = await rawGet(api, await api.token(scope), deltaHeaders(m2, 'identity'));
    expect(full.status).toBe(200);
    expect(full.body.toString('utf8')).toBe(forked);
    // A client holding run 1 (the fork's base, but in another chain) also gets the whole file.
    const full1 = await rawGet(api, await api.token(scope), deltaHeaders(m1, 'identity'));
    expect(full1.status).toBe(200);
    expect(full1.body.toString('utf8')).toBe(forked);
    // The fork extends further.
    await ok(append(api, scope, 4, metaOf(3, forked), B));
    await expectHydrate(api, scope, 4, remember(forked + B));
  });

  it('a non-completed append is stored (RUN record, status kept) but never served, and is not a base', async () => {
    const { api } = ctx;
    const scope = freshScope('app-failed');
    await ok(write(api, scope, 1, A));
    const body = await ok(append(api, scope, 2, metaOf(1, A), B, { status: 'failed' }));
    expect(body).toMatchObject({ runId: 2, sha256: sha(A + B), bytes: len(A + B), latest: false });
    await expectHydrate(api, scope, 1, A);
    expect(await items(scope)).toContainEqual({ sk: 'RUN#0000000000000002', status: 'failed' });
    remember(A + B);
    await expectError(append(api, scope, 3, metaOf(2, A + B), C), ERRORS.baseMismatch);
    await expectHydrate(api, scope, 1, A);
  });

  it('compaction after 14 appends: every hydrate exact, at most 5 objects in the chain, delta from an early run still exact', async () => {
    const { api } = ctx;
    const scope = freshScope('app-compact');
    let content = remember(A);
    await ok(write(api, scope, 1, content));
    const metas: Meta[] = [metaOf(1, content)];
    for (let run = 2; run <= 15; run++) {
      const add = line({ run, text: `turn ${run} ✓ `.repeat(run * 3) }) + (run % 3 === 0 ? '\r\n\n' : '');
      const prev = metas[metas.length - 1]!;
      await ok(append(api, scope, run, prev, add));
      content = remember(content + add);
      metas.push(metaOf(run, content));
      await expectHydrate(api, scope, run, content);
      const objs = await objects(scope);
      expect(objs.length, `after run ${run}: ${objs.map((o) => o.key).join(', ')}`).toBeLessThanOrEqual(5);
      expect(objs.length).toBeGreaterThan(0);
    }
    expect((await items(scope)).filter((i) => i.sk.startsWith('CHAIN#'))).toHaveLength(1);
    const token = await api.token(scope);
    for (const base of [metas[0]!, metas[5]!, metas[12]!]) {
      const tail = Buffer.from(content, 'utf8').subarray(base.bytes);
      const d = await rawGet(api, token, deltaHeaders(base, 'gzip'));
      expect(d.status).toBe(226);
      expect(gunzipSync(d.body).equals(tail)).toBe(true);
      expect(d.headers['x-snapshot-bytes']).toBe(String(len(content)));
    }
  });

  it('clear after appends removes every object and every RUN and CHAIN record', async () => {
    const { api } = ctx;
    const scope = freshScope('app-clear');
    const { m1 } = await seedTwo(api, scope);
    await ok(append(api, scope, 3, m1, C)); // a fork: a second chain
    let content = remember(A + B);
    for (let run = 4; run <= 9; run++) {
      const prev = metaOf(run === 4 ? 2 : run - 1, content);
      const add = line({ run });
      await ok(append(api, scope, run, prev, add));
      content = remember(content + add);
    }
    await expectHydrate(api, scope, 9, content);
    // a materialized copy? none expected inline; any would also have to go.
    expect((await items(scope)).filter((i) => i.sk.startsWith('CHAIN#')).length).toBeGreaterThanOrEqual(2);
    expect((await items(scope)).filter((i) => i.sk.startsWith('RUN#'))).toHaveLength(9);
    expect(await api.clear(scope)).toBeGreaterThanOrEqual(9);
    expect(await api.hydrate(scope)).toBeUndefined();
    expect(await objects(scope)).toEqual([]);
    expect(await objects(scope, 'materialized')).toEqual([]);
    expect((await items(scope)).map((i) => i.sk)).toEqual(['HEAD']);
  });
});

describe('append on other layouts', () => {
  it('an append on a run stored by presigned upload (one object) promotes it into a chain; later appends and deltas work', async () => {
    const { api } = ctx;
    const { uploadSnapshot } = await import('../helpers/uploads.js');
    const scope = freshScope('app-promote');
    for (const enc of ['identity', 'gzip'] as const) {
      const s = { ...scope, conv: `${scope.conv}-${enc}` };
      const up = await uploadSnapshot(api, s, 1, enc === 'gzip' ? gzipSync(A) : Buffer.from(A), enc);
      expect(up.status, await up.clone().text()).toBe(200);
      await expectHydrate(api, s, 1, A);
      await ok(append(api, s, 2, metaOf(1, A), B));
      await expectHydrate(api, s, 2, A + B);
      const full = await rawGet(api, await api.token(s), deltaHeaders(metaOf(1, A), 'identity'));
      expect(full.status).toBe(200);
      expect(full.body.toString('utf8')).toBe(A + B);
      await ok(append(api, s, 3, metaOf(2, A + B), C));
      await expectHydrate(api, s, 3, remember(A + B + C));
      const d = await rawGet(api, await api.token(s), deltaHeaders(metaOf(2, A + B), 'identity'));
      expect(d.status).toBe(226);
      expect(d.body.toString('utf8')).toBe(C);
    }
  });

  it('geometric compaction: a large first object survives small appends; every delta and hydrate exact', async () => {
    const { api } = ctx;
    const scope = freshScope('app-geo');
    let content = remember(Array.from({ length: 400 }, (_, i) => line({ i, r: randomBytes(64).toString('hex') })).join(''));
    await ok(write(api, scope, 1, content));
    const firstKey = (await objects(scope))[0]!.key;
    const metas: Meta[] = [metaOf(1, content)];
    for (let run = 2; run <= 13; run++) {
      const add = line({ run, t: 'ß'.repeat(run) });
      await ok(append(api, scope, run, metas[metas.length - 1]!, add));
      content = remember(content + add);
      metas.push(metaOf(run, content));
      const objs = await objects(scope);
      expect(objs.length).toBeLessThanOrEqual(4);
      expect(objs.map((o) => o.key)).toContain(firstKey);
    }
    await expectHydrate(api, scope, 13, content);
    const token = await api.token(scope);
    for (const base of metas.slice(0, -1)) {
      const d = await rawGet(api, token, deltaHeaders(base, base.runId % 2 ? 'gzip' : 'identity'));
      expect(d.status, `base ${base.runId}`).toBe(226);
      const body = base.runId % 2 ? gunzipSync(d.body) : d.body;
      expect(body.equals(Buffer.from(content, 'utf8').subarray(base.bytes)), `base ${base.runId}`).toBe(true);
    }
  });
});

describe('append errors leave the store unchanged', () => {
  it('412 base_mismatch: unknown base run, wrong bytes, wrong sha256', async () => {
    const { api } = ctx;
    const scope = freshScope('app-412');
    const { m2 } = await seedTwo(api, scope);
    const whole = sha(A + B + C);
    await expectError(append(api, scope, 3, { ...m2, runId: 77 }, C, { sha256: whole }), ERRORS.baseMismatch);
    await expectError(append(api, scope, 3, { ...m2, bytes: m2.bytes - 1 }, C, { sha256: whole }), ERRORS.baseMismatch);
    await expectError(append(api, scope, 3, { ...m2, bytes: m2.bytes + 1 }, C, { sha256: whole }), ERRORS.baseMismatch);
    await expectError(append(api, scope, 3, { ...m2, sha256: sha('something else') }, C, { sha256: whole }), ERRORS.baseMismatch);
    await expectHydrate(api, scope, 2, A + B);
    // The run id is still free: the same append with the right base succeeds.
    await ok(append(api, scope, 3, m2, C, { sha256: whole }));
    await expectHydrate(api, scope, 3, A + B + C);
  });

  it('412 base_mismatch: a base from before a clear (writer echoes the current generation)', async () => {
    const { api } = ctx;
    const scope = freshScope('app-412-clear');
    const { m2 } = await seedTwo(api, scope);
    await api.clear(scope);
    const g = await api.get(await api.token(scope));
    expect(g.status).toBe(404);
    const generation = g.headers.get('x-snapshot-generation')!;
    expect(Number(generation)).toBeGreaterThan(0);
    await write(api, scope, 5, C, 'completed', { 'x-snapshot-generation': generation }).then(ok);
    await expectError(append(api, scope, 6, m2, C, { headers: { 'x-snapshot-generation': generation } }), ERRORS.baseMismatch);
    await expectHydrate(api, scope, 5, C);
  });

  it('400 sha256_mismatch: the announced digest is not that of base + append', async () => {
    const { api } = ctx;
    const scope = freshScope('app-digest');
    const { m2 } = await seedTwo(api, scope);
    await expectError(append(api, scope, 3, m2, C, { sha256: sha(C) }), ERRORS.digestMismatch);
    await expectError(append(api, scope, 3, m2, C, { sha256: sha(A + B + C + ' ') }), ERRORS.digestMismatch);
    await expectHydrate(api, scope, 2, A + B);
    await ok(append(api, scope, 3, m2, C));
  });

  it('400 invalid_append: missing base, malformed base, malformed sha256, non-string appendJsonl', async () => {
    const { api } = ctx;
    const scope = freshScope('app-invalid');
    const { m2 } = await seedTwo(api, scope);
    const whole = sha(A + B + C);
    const base = { runId: 2, bytes: m2.bytes, sha256: m2.sha256 };
    const bad: Record<string, unknown>[] = [
      { runId: 3, terminalStatus: 'completed', appendJsonl: C, sha256: whole },
      { runId: 3, terminalStatus: 'completed', appendJsonl: C, base },
      { runId: 3, terminalStatus: 'completed', appendJsonl: C, base, sha256: whole.toUpperCase() },
      { runId: 3, terminalStatus: 'completed', appendJsonl: C, base, sha256: whole.slice(1) },
      { runId: 3, terminalStatus: 'completed', appendJsonl: C, base: { ...base, sha256: 'zz' }, sha256: whole },
      { runId: 3, terminalStatus: 'completed', appendJsonl: C, base: { ...base, bytes: -1 }, sha256: whole },
      { runId: 3, terminalStatus: 'completed', appendJsonl: C, base: { ...base, runId: 0 }, sha256: whole },
      { runId: 3, terminalStatus: 'completed', appendJsonl: C, base: { ...base, extra: 1 }, sha256: whole },
      { runId: 3, terminalStatus: 'completed', appendJsonl: 42, base, sha256: whole },
      { runId: 3, terminalStatus: 'completed', appendJsonl: '\ud800', base, sha256: whole },
    ];
    for (const body of bad) await expectError(append(api, scope, 3, m2, '', { body }), ERRORS.invalidAppend);
    await expectHydrate(api, scope, 2, A + B);
  });

  it('check order: terminalStatus and runId before the append fields', async () => {
    const { api } = ctx;
    const scope = freshScope('app-order');
    const { m2 } = await seedTwo(api, scope);
    await expectError(append(api, scope, 3, m2, '', { body: { runId: 3, terminalStatus: 'nope', appendJsonl: C } }), ERRORS.invalidTerminalStatus);
    await expectError(append(api, scope, 3, m2, '', { body: { runId: 'x', terminalStatus: 'completed', appendJsonl: C } }), ERRORS.invalidRunId);
    await expectError(append(api, scope, 3, m2, '', { body: { runId: 4, terminalStatus: 'completed', appendJsonl: C, base: m2, sha256: sha(A + B + C) } }), ERRORS.runOutOfScope);
    await expectHydrate(api, scope, 2, A + B);
  });

  it('a body with both snapshotJsonl and appendJsonl is a full write of snapshotJsonl (appendJsonl ignored)', async () => {
    const { api } = ctx;
    const scope = freshScope('app-both');
    const { m2 } = await seedTwo(api, scope);
    const res = await append(api, scope, 3, m2, '', {
      body: { runId: 3, terminalStatus: 'completed', snapshotJsonl: C, appendJsonl: B, base: m2, sha256: sha(A + B + B) },
    });
    expect(await res.json()).toMatchObject({ runId: 3, sha256: sha(C), bytes: len(C) });
    expect(res.status).toBe(200);
    await expectHydrate(api, scope, 3, C);
  });

  it('409 snapshot_exists: the same run appended twice (and a full write of an appended run)', async () => {
    const { api } = ctx;
    const scope = freshScope('app-dup');
    const { m1 } = await seedTwo(api, scope);
    await expectError(append(api, scope, 2, m1, B), ERRORS.alreadyExists);
    await expectError(append(api, scope, 2, m1, C), ERRORS.alreadyExists);
    await expectError(write(api, scope, 2, C), ERRORS.alreadyExists);
    await expectHydrate(api, scope, 2, A + B);
  });

  it('409 reset_fenced: an append that echoes a stale generation', async () => {
    const { api } = ctx;
    const scope = freshScope('app-fenced');
    await ok(write(api, scope, 1, A, 'completed', { 'x-snapshot-generation': '0' }));
    await api.clear(scope);
    await ok(write(api, scope, 2, C, 'completed', { 'x-snapshot-generation': '1' }));
    await expectError(append(api, scope, 3, metaOf(2, C), B, { headers: { 'x-snapshot-generation': '0' } }), ERRORS.resetFenced);
    await expectHydrate(api, scope, 2, C);
    await expectError(append(api, scope, 3, metaOf(2, C), B, { headers: { 'x-snapshot-generation': '2' } }), ERRORS.resetFenced);
    await expectHydrate(api, scope, 2, C);
    await ok(append(api, scope, 3, metaOf(2, C), B, { headers: { 'x-snapshot-generation': '1' } }));
    await expectHydrate(api, scope, 3, remember(C + B));
  });
});

describe('delta hydrate (GET A-IM: append)', () => {
  it('226 with only the missing tail: identity and gzip byte-exact, with IM, Delta-Base and x-snapshot-bytes', async () => {
    const { api } = ctx;
    const scope = freshScope('delta');
    const { m1, m2 } = await seedTwo(api, scope);
    const token = await api.token(scope);
    for (const enc of ['identity', 'gzip', undefined] as const) {
      const d = await rawGet(api, token, deltaHeaders(m1, enc));
      expect(d.status, String(enc)).toBe(226);
      expect(d.headers['im']).toBe('append');
      expect(d.headers['delta-base']).toBe(`"${m1.sha256}"`);
      expect(d.headers['x-snapshot-bytes']).toBe(String(m2.bytes));
      expect(d.headers['x-snapshot-sha256']).toBe(m2.sha256);
      expect(d.headers['x-snapshot-run-id']).toBe('2');
      expect(d.headers['etag']).toBe(`"${m2.sha256}"`);
      if (enc === 'gzip') {
        expect(d.headers['content-encoding']).toBe('gzip');
        expect(gunzipSync(d.body).toString('utf8')).toBe(B);
      } else {
        expect(d.headers['content-encoding']).toBeUndefined();
        expect(d.body.toString('utf8')).toBe(B);
      }
    }
    // Through fetch (decodes gzip transparently).
    const f = await api.get(token, deltaHeaders(m1, 'gzip'));
    expect(f.status).toBe(226);
    expect(Buffer.from(await f.arrayBuffer()).toString('utf8')).toBe(B);
  });

  it('304 when the client already holds the latest run', async () => {
    const { api } = ctx;
    const scope = freshScope('delta-304');
    const { m2 } = await seedTwo(api, scope);
    const d = await rawGet(api, await api.token(scope), deltaHeaders(m2, 'gzip'));
    expect(d.status).toBe(304);
    expect(d.body.length).toBe(0);
    expect(d.headers['x-snapshot-run-id']).toBe('2');
  });

  it('full 200 when the base run is unknown or its sha256 differs; 200 without A-IM', async () => {
    const { api } = ctx;
    const scope = freshScope('delta-200');
    const { m1 } = await seedTwo(api, scope);
    const token = await api.token(scope);
    for (const h of [
      deltaHeaders({ ...m1, runId: 99 }, 'identity'),
      deltaHeaders({ ...m1, sha256: sha('other') }, 'identity'),
      deltaHeaders({ ...m1, runId: 2, sha256: m1.sha256 }, 'identity'),
      { 'if-none-match': `"${m1.sha256}"`, 'x-snapshot-base-run-id': '1', 'accept-encoding': 'identity' },
    ]) {
      const d = await rawGet(api, token, h);
      expect(d.status, JSON.stringify(h)).toBe(200);
      expect(d.headers['im']).toBeUndefined();
      expect(d.body.toString('utf8')).toBe(A + B);
    }
    const g = await rawGet(api, token, deltaHeaders({ ...m1, runId: 99 }, 'gzip'));
    expect(g.status).toBe(200);
    expect(gunzipSync(g.body).toString('utf8')).toBe(A + B);
  });

  it('full 200 when the latest run started a new chain (a full write that does not extend)', async () => {
    const { api } = ctx;
    const scope = freshScope('delta-newchain');
    const { m2 } = await seedTwo(api, scope);
    const other = remember(C + A);
    await ok(write(api, scope, 3, other));
    expect((await items(scope)).filter((i) => i.sk.startsWith('CHAIN#'))).toHaveLength(2);
    const d = await rawGet(api, await api.token(scope), deltaHeaders(m2, 'identity'));
    expect(d.status).toBe(200);
    expect(d.body.toString('utf8')).toBe(other);
  });

  it('400 invalid_base_run_id on a malformed x-snapshot-base-run-id (with A-IM: append)', async () => {
    const { api } = ctx;
    const scope = freshScope('delta-badid');
    const { m1 } = await seedTwo(api, scope);
    const token = await api.token(scope);
    for (const id of ['abc', '0', '-1', '1.5', '99999999999999999', '01']) {
      const res = await api.get(token, { ...deltaHeaders(m1), 'x-snapshot-base-run-id': id });
      expect(res.status, id).toBe(400);
      expect(await res.json()).toEqual(errorBody(ERRORS.invalidBaseRunId));
    }
    // Without A-IM the header is ignored.
    const plain = await api.get(token, { 'x-snapshot-base-run-id': 'abc' });
    expect(plain.status).toBe(200);
    expect(Buffer.from(await plain.arrayBuffer()).toString('utf8')).toBe(A + B);
    await expectHydrate(api, scope, 2, A + B);
  });
});
