/**
 * Adversarial review of issue 12: interleavings of appends with clears, other appends and hydrates
 * (forced with FaultPlan.onCall gates), the generation fence on appends, forks, and promotion of a
 * base stored as one object (including a corrupted one).
 */
import { GetItemCommand, QueryCommand } from '@aws-sdk/client-dynamodb';
import { ListObjectsV2Command, PutObjectCommand } from '@aws-sdk/client-s3';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { ERRORS, errorBody } from '../../functions/lib/contract.js';
import { FaultPlan, gate, withFaultyService } from '../helpers/faults.js';
import { Api, freshScope, useLocalService, type Scope } from '../helpers/service.js';
import { sha, len, pkOf, line, ok, expectError, expectHydrate } from '../helpers/append.js';
import { rawGet as rawRequest } from '../helpers/raw-http.js';
import { uploadSnapshot } from '../helpers/uploads.js';

const rawGet = (api: Api, token: string, headers: Record<string, string>) => rawRequest(api.url, { authorization: `Bearer ${token}`, ...headers });

const ctx = useLocalService();

async function append(api: Api, scope: Scope, runId: number, baseRunId: number, base: string, added: string, headers: Record<string, string> = {}, status = 'completed'): Promise<Response> {
  const token = await api.token(scope, { runId });
  return api.post(
    token,
    { runId, terminalStatus: status, appendJsonl: added, base: { runId: baseRunId, bytes: len(base), sha256: sha(base) }, sha256: sha(base + added) },
    headers,
  );
}

async function storeState(scope: Scope): Promise<string> {
  const { svc } = ctx;
  const res = await svc.ddb.send(
    new QueryCommand({ TableName: svc.config.tableName, KeyConditionExpression: 'pk = :pk', ExpressionAttributeValues: { ':pk': { S: pkOf(scope) } }, ConsistentRead: true }),
  );
  const objs = await svc.s3.send(new ListObjectsV2Command({ Bucket: svc.config.bucketName, Prefix: `snapshots/${pkOf(scope)}/` }));
  return JSON.stringify({ items: res.Items ?? [], objects: (objs.Contents ?? []).map((o) => [o.Key, o.Size]) });
}

const turn = (run: number) => line({ run, text: `turn ${run} — ü 🚀`.repeat(3) });
const A = turn(1);
const B = turn(2);
const C = turn(3);

async function seed(api: Api, scope: Scope): Promise<void> {
  await ok(api.write(scope, 1, A));
  await ok(append(api, scope, 2, 1, A, B));
}

describe('append racing a clear at every step', () => {
  // An append with no compaction makes 5 AWS calls: BatchGetItem, PutObject, UpdateItem CHAIN,
  // PutItem RUN, UpdateItem HEAD (HEAD caches the chain's layout). The clear lands just before call n.
  for (const n of [1, 2, 3, 4, 5]) {
    it(`a clear landing before append call ${n} answers 409 reset_fenced (DESIGN § Chains failure table) and leaves nothing served`, async () => {
      const { api } = ctx;
      const scope = freshScope(`adv-clr${n}`);
      await seed(api, scope);
      const reached = gate();
      const release = gate();
      const plan = new FaultPlan().onCall(async (_name, k) => {
        if (k === n) {
          reached.open();
          await release.wait;
        }
      });
      const pending = withFaultyService(ctx.svc, plan, async (a) => {
        const res = await append(a, scope, 3, 2, A + B, C, { 'x-snapshot-generation': '0' });
        return { status: res.status, body: await res.text(), calls: [...plan.calls] };
      });
      await reached.wait;
      await api.clear(scope);
      release.open();
      const r = await pending;
      expect(r.status, `${r.body} calls=${r.calls.join(',')}`).toBe(409);
      expect(JSON.parse(r.body)).toEqual(errorBody(ERRORS.resetFenced));
      expect(await api.hydrate(scope)).toBeUndefined();
      // the conversation keeps working
      await ok(api.write(scope, 4, C));
      await expectHydrate(api, scope, 4, C);
    });
  }
});

describe('legacy whole-file POST (a prefix-extension of latest, stored as an append) racing a clear', () => {
  // Existing workers only ever send whole files; one that extends HEAD's run takes the append path
  // inside writeSnapshot (5 calls, as an append). Their contract has no 412: a clear must fence them.
  for (const n of [2, 3, 4]) {
    it(`a clear landing before call ${n} of a whole-file POST answers 409 reset_fenced, never 412 base_mismatch`, async () => {
      const { api } = ctx;
      const scope = freshScope(`adv-lclr${n}`);
      await seed(api, scope);
      const reached = gate();
      const release = gate();
      const plan = new FaultPlan().onCall(async (_name, k) => {
        if (k === n) {
          reached.open();
          await release.wait;
        }
      });
      const pending = withFaultyService(ctx.svc, plan, async (a) => {
        const token = await a.token(scope, { runId: 3 });
        const res = await a.post(token, { runId: 3, terminalStatus: 'completed', snapshotJsonl: A + B + C }, { 'x-snapshot-generation': '0' });
        return { status: res.status, body: await res.text(), calls: [...plan.calls] };
      });
      await reached.wait;
      await api.clear(scope);
      release.open();
      const r = await pending;
      expect(r.status, `${r.body} calls=${r.calls.join(',')}`).toBe(409);
      expect(JSON.parse(r.body)).toEqual(errorBody(ERRORS.resetFenced));
      expect(await api.hydrate(scope)).toBeUndefined();
    });
  }
});

describe('append vs append, append vs hydrate', () => {
  it('two appends on the same base (one compacts, one forks): both 200; hydrate and deltas from each side byte-exact', async () => {
    const { api } = ctx;
    const scope = freshScope('adv-twin');
    await seed(api, scope);
    const [r3, r4] = await Promise.all([append(api, scope, 3, 2, A + B, C), append(api, scope, 4, 2, A + B, 'fork-4\n')]);
    await ok(r3);
    await ok(r4);
    await expectHydrate(api, scope, 4, A + B + 'fork-4\n');
    const token = await api.token(scope);
    for (const [runId, content] of [[1, A], [2, A + B]] as const) {
      const d = await rawGet(api, token, { 'a-im': 'append', 'if-none-match': `"${sha(content)}"`, 'x-snapshot-base-run-id': String(runId), 'accept-encoding': 'identity' });
      expect([200, 226]).toContain(d.status);
      const whole = d.status === 226 ? content + d.body.toString('utf8') : d.body.toString('utf8');
      expect(whole).toBe(A + B + 'fork-4\n');
    }
    // a delta from run 3 (the other side of the fork) is never a 226 on the wrong base
    const d3 = await rawGet(api, token, { 'a-im': 'append', 'if-none-match': `"${sha(A + B + C)}"`, 'x-snapshot-base-run-id': '3', 'accept-encoding': 'identity' });
    expect(d3.status).toBe(200);
    expect(d3.body.toString('utf8')).toBe(A + B + 'fork-4\n');
    // both sides keep growing
    await ok(append(api, scope, 5, 3, A + B + C, 'five\n'));
    await expectHydrate(api, scope, 5, A + B + C + 'five\n');
    await ok(append(api, scope, 6, 4, A + B + 'fork-4\n', 'six\n'));
    await expectHydrate(api, scope, 6, A + B + 'fork-4\n' + 'six\n');
  });

  it('a delta hydrate racing a compacting append: 226 over the right base, byte-exact (or a whole 200)', async () => {
    const { api } = ctx;
    const scope = freshScope('adv-dcomp');
    let content = A;
    await ok(api.write(scope, 1, content));
    for (let run = 2; run <= 4; run++) {
      await ok(append(api, scope, run, run - 1, content, turn(run)));
      content += turn(run);
    }
    const baseContent = A + turn(2);
    const token = await api.token(scope);
    const headRead = gate();
    const g = gate();
    const plan = new FaultPlan().onCall(async (_name, k) => {
      if (k === 1) headRead.open();
      if (k >= 2) await g.wait;
    });
    const pending = withFaultyService(ctx.svc, plan, async (a) => {
      const res = await a.get(token, { 'a-im': 'append', 'if-none-match': `"${sha(baseContent)}"`, 'x-snapshot-base-run-id': '2', 'accept-encoding': 'identity' });
      return { status: res.status, body: Buffer.from(await res.arrayBuffer()).toString('utf8'), bytes: res.headers.get('x-snapshot-bytes') };
    });
    await headRead.wait;
    await ok(append(api, scope, 5, 4, content, turn(5))); // compacts (4 objects → merge)
    g.open();
    const r = await pending;
    expect(r.status).toBe(226);
    expect(baseContent + r.body).toBe(content);
    expect(Number(r.bytes)).toBe(len(content));
  });
});

describe('generation fence with appends', () => {
  it('a stale generation echo is 409 reset_fenced, before the base is looked at; a future one too', async () => {
    const { api } = ctx;
    const scope = freshScope('adv-fence');
    await seed(api, scope);
    await api.clear(scope);
    await ok(api.write(scope, 10, A, 'completed'));
    const before = await storeState(scope);
    await expectError(append(api, scope, 11, 10, A, B, { 'x-snapshot-generation': '0' }), ERRORS.resetFenced);
    await expectError(append(api, scope, 11, 10, A, B, { 'x-snapshot-generation': '7' }), ERRORS.resetFenced);
    await expectError(append(api, scope, 11, 10, A, B, { 'x-snapshot-generation': '-1' }), ERRORS.invalidGeneration);
    // base from before the reset, current generation echoed: 412
    await expectError(append(api, scope, 11, 2, A + B, C, { 'x-snapshot-generation': '1' }), ERRORS.baseMismatch);
    expect(await storeState(scope)).toBe(before);
    await ok(append(api, scope, 11, 10, A, B, { 'x-snapshot-generation': '1' }));
    await expectHydrate(api, scope, 11, A + B);
  });

  it('no echo: a token issued before the clear is fenced (legacy iat rule)', async () => {
    const { api } = ctx;
    const scope = freshScope('adv-iat');
    await seed(api, scope);
    const old = await api.token(scope, { runId: 3, issuedAt: Math.floor(Date.now() / 1000) - 3600 } as never);
    await api.clear(scope);
    await ok(api.write(scope, 10, A));
    const res = await api.post(old, { runId: 3, terminalStatus: 'completed', appendJsonl: B, base: { runId: 10, bytes: len(A), sha256: sha(A) }, sha256: sha(A + B) });
    await expectError(res, ERRORS.resetFenced);
    await expectHydrate(api, scope, 10, A);
  });

  it('a non-completed base is 412; a non-completed append on a chain is stored, never served, and does not move the chain', async () => {
    const { api } = ctx;
    const scope = freshScope('adv-failed');
    await seed(api, scope);
    await ok(append(api, scope, 3, 2, A + B, C, {}, 'failed'));
    await expectHydrate(api, scope, 2, A + B);
    await expectError(append(api, scope, 4, 3, A + B + C, 'x\n'), ERRORS.baseMismatch);
    // the chain's end is still run 2: this append extends it (a 226 from run 1 covers it)
    await ok(append(api, scope, 4, 2, A + B, 'x\n'));
    const token = await api.token(scope);
    const d = await rawGet(api, token, { 'a-im': 'append', 'if-none-match': `"${sha(A)}"`, 'x-snapshot-base-run-id': '1', 'accept-encoding': 'identity' });
    expect(d.status).toBe(226);
    expect(d.body.toString('utf8')).toBe(B + 'x\n');
  });
});

describe('promotion of a base stored as one object', () => {
  for (const encoding of ['identity', 'gzip'] as const) {
    it(`an upload-committed ${encoding} base is promoted: 200, byte-exact, then cheap appends`, async () => {
      const { api } = ctx;
      const scope = freshScope(`adv-promo-${encoding}`);
      const data = Buffer.from(A + B, 'utf8');
      await ok(uploadSnapshot(api, scope, 1, encoding === 'gzip' ? gzipSync(data) : data, encoding));
      await ok(append(api, scope, 2, 1, A + B, C));
      await expectHydrate(api, scope, 2, A + B + C);
      await ok(append(api, scope, 3, 2, A + B + C, 'more\n'));
      await expectHydrate(api, scope, 3, A + B + C + 'more\n');
    });

    it(`a corrupted upload-committed ${encoding} base object: the append is 500 (INTEGRITY), never stored, never wrong bytes`, async () => {
      const { api, svc } = ctx;
      const scope = freshScope(`adv-promo-bad-${encoding}`);
      const data = Buffer.from(A + B, 'utf8');
      const transfer = encoding === 'gzip' ? gzipSync(data) : data;
      await ok(uploadSnapshot(api, scope, 1, transfer, encoding));
      const item = await svc.ddb.send(new GetItemCommand({ TableName: svc.config.tableName, Key: { pk: { S: pkOf(scope) }, sk: { S: 'RUN#' + '1'.padStart(16, '0') } }, ConsistentRead: true }));
      const key = item.Item!['s3Key']!.S!;
      // same length, one byte flipped (for gzip: a byte in the deflate stream)
      const stored = encoding === 'gzip' ? gzipSync(data) : Buffer.from(data);
      const mid = Math.floor(stored.length / 2);
      stored[mid] = stored[mid]! ^ 0x01;
      await svc.s3.send(new PutObjectCommand({ Bucket: svc.config.bucketName, Key: key, Body: stored, ...(encoding === 'gzip' && { ContentEncoding: 'gzip' }) }));
      const before = await storeState(scope);
      const res = await append(api, scope, 2, 1, A + B, C);
      const text = await res.text();
      expect(res.status, text).toBe(500);
      expect(JSON.parse(text)).toEqual(errorBody(ERRORS.internal));
      expect(await storeState(scope)).toBe(before);
    });
  }
});
