import { describe, expect, it } from 'vitest';
import { SnapshotStore } from '../../functions/lib/store/index.js';
import { generationOf, ids, nowSeconds, reconcileFully as reconcileFullyOn, twoHoursLater, writeWithGeneration } from '../helpers/generation.js';
import { FaultPlan, faultyStore, gate } from '../helpers/faults.js';
import { freshScope, useLocalService, type Api, type Scope } from '../helpers/service.js';

/**
 * Adversarial: clears interleaved with claims, publishes, other clears and the reconciler's
 * roll-forward; legacy (no generation) writers at the window boundary.
 */
const ctx = useLocalService();
const now = nowSeconds;
const later = twoHoursLater;
const writeAt = (api: Api, scope: Scope, runId: number, body: string, generation: number) => writeWithGeneration(api, scope, runId, body, generation);
const reconcileFully = () => reconcileFullyOn(ctx.svc);

describe('concurrent clears', () => {
  it('two clears that both read generation 0 end with HEAD at generation 1 and nothing served', async () => {
    const { api, svc } = ctx;
    const scope = freshScope('two-clears');
    expect((await writeAt(api, scope, 1, 'before\n', 0)).status).toBe(200);
    const bothRead = gate();
    let reads = 0;
    const plan = new FaultPlan().onCall(async (cmd) => {
      if (cmd === 'GetItemCommand') {
        if (++reads === 2) bothRead.open();
        await bothRead.wait;
      }
    });
    const a = faultyStore(svc, plan);
    // Clear A and clear B read HEAD (generation 0) before either fences.
    const pending = [a.clear(ids(scope)), a.clear(ids(scope))];
    await Promise.all(pending);
    expect(await generationOf(api, scope)).toBe(1);
    expect(await api.hydrate(scope)).toBeUndefined();
  });

  it('clear B finishing its sweep after a run of the new generation was acknowledged leaves that run served', async () => {
    const { api, svc } = ctx;
    const scope = freshScope('late-sweep');
    expect((await writeAt(api, scope, 1, 'before\n', 0)).status).toBe(200);
    const bReadHead = gate();
    const aDone = gate();
    let first = true;
    const planB = new FaultPlan().onCall(async (cmd) => {
      if (cmd === 'UpdateItemCommand' && first) {
        first = false;
        bReadHead.open();
        await aDone.wait;
      }
    });
    const clearingB = faultyStore(svc, planB).clear(ids(scope)); // reads 0, then waits before its fence
    await bReadHead.wait;
    await api.clear(scope); // A: 0 → 1
    expect((await writeAt(api, scope, 2, 'after the reset\n', await generationOf(api, scope))).status).toBe(200);
    aDone.open();
    await clearingB; // B's fence fails (HEAD moved): it must not delete run 2
    expect((await api.hydrate(scope))?.body.toString()).toBe('after the reset\n');
  });
});

describe('clear vs. roll-forward', () => {
  it('a clear between the reconciler\'s HEAD read and its publish: the stale run is not published', async () => {
    const { api, svc } = ctx;
    const scope = freshScope('rf-clear');
    // A claimed-but-unpublished run of generation 0 (BatchGetItem, PutObject, PutItem chain, PutItem claim, ✗ UpdateItem).
    await expect(
      faultyStore(svc, new FaultPlan().failBeforeCommand('UpdateItemCommand')).write({ ...ids(scope), issuedAt: now(), generation: 0 }, { runId: 1, status: 'completed', body: Buffer.from('claimed\n') }),
    ).rejects.toThrow('injected');
    let cleared = false;
    const plan = new FaultPlan().onCall(async (cmd) => {
      if (cmd === 'UpdateItemCommand' && !cleared) {
        cleared = true;
        await api.clear(scope);
      }
    });
    const rec = faultyStore(svc, plan, { now: later });
    for (let i = 0; i < 100 && !cleared; i++) await rec.reconcile({ graceSeconds: 3600, deadlineAt: Date.now() + 60_000 });
    expect(cleared).toBe(true);
    expect(await api.hydrate(scope)).toBeUndefined();
    await reconcileFully();
    expect(await api.hydrate(scope)).toBeUndefined();
  }, 60_000);

  it('roll-forward never moves HEAD backwards past a newer published run', async () => {
    const { api, svc } = ctx;
    const scope = freshScope('rf-backwards');
    await expect(
      faultyStore(svc, new FaultPlan().failBeforeCommand('UpdateItemCommand')).write({ ...ids(scope), issuedAt: now(), generation: 0 }, { runId: 1, status: 'completed', body: Buffer.from('claimed\n') }),
    ).rejects.toThrow('injected');
    expect((await writeAt(api, scope, 2, 'newer\n', 0)).status).toBe(200);
    await reconcileFully();
    expect((await api.hydrate(scope))?.body.toString()).toBe('newer\n');
  }, 60_000);
});

describe('legacy writers (no generation) at the window boundary (LEGACY_FENCE_WINDOW_SECONDS = 0)', () => {
  it('a legacy run with iat in the second before the clear is fenced', async () => {
    const { api, svc } = ctx;
    const scope = freshScope('legacy-before');
    const t = now();
    await faultyStore(svc, new FaultPlan(), { now: () => t * 1000 }).clear(ids(scope));
    const res = await api.write(scope, 1, 'old\n', 'completed', { issuedAt: t - 1 });
    expect(res.status).toBe(409);
    expect(await api.hydrate(scope)).toBeUndefined();
  });

  it('DOCUMENTED LIMIT: a legacy run acknowledged before a clear in the same second, retried after it, is served after the reset (window 0); a 1 s window fences it', async () => {
    // fence.ts / RELIABILITY § Clock model: with LEGACY_FENCE_WINDOW_SECONDS=0 a token issued in the same
    // second as the clear counts as after it — the accepted price of not dropping genuine new runs. A
    // writer that echoes its generation has no such window; a window of 1 s closes this case.
    const { api, svc } = ctx;
    const scope = freshScope('legacy-retry');
    const t = now();
    const token = await api.token(scope, { runId: 1, issuedAt: t });
    const post = () => api.post(token, { terminalStatus: 'completed', snapshotJsonl: 'acknowledged before the reset\n', runId: 1 });
    expect((await post()).status).toBe(200);
    // The clear lands in the same second as the token's iat (clock pinned to t.999 s).
    await faultyStore(svc, new FaultPlan(), { now: () => t * 1000 + 999 }).clear(ids(scope));
    expect(await api.hydrate(scope)).toBeUndefined();
    const retry = await post(); // the worker's retry after it lost the first answer
    await retry.body?.cancel();
    expect((await api.hydrate(scope))?.body.toString()).toBe('acknowledged before the reset\n');
    // The same retry judged with a 1 s window is fenced.
    await faultyStore(svc, new FaultPlan(), { now: () => t * 1000 + 999 }).clear(ids(scope));
    const strict = new SnapshotStore({ s3: svc.s3, ddb: svc.ddb, bucket: svc.config.bucketName, table: svc.config.tableName, legacyFenceWindowSeconds: 1 });
    expect(await strict.write({ ...ids(scope), issuedAt: t }, { runId: 1, status: 'completed', body: Buffer.from('acknowledged before the reset\n') })).toEqual({ kind: 'fenced' });
    expect(await api.hydrate(scope)).toBeUndefined();
  });
});

describe('stale run records left by an interrupted clear or a fenced writer that died', () => {
  it('a clear that died after deleting the objects but before the records: a post-reset run reusing the run id is stored and served', async () => {
    // Expected (I4 + DESIGN "a run started after the clear publishes normally, even with a lower runId
    // than before"): the stale RUN record of generation 0 can never publish again, so it must not stop a
    // run of generation 1 from claiming the same run id. Before the fix: the claim is attribute_not_exists
    // only; the new run gets 409 snapshot_exists, its bytes are deleted, and GET stays 404 — the post-reset
    // run is silently lost (until some later clear removes the stale record).
    const { api, svc } = ctx;
    const scope = freshScope('stale-squat');
    expect((await writeAt(api, scope, 1, 'before the reset\n', 0)).status).toBe(200);
    const crash = new FaultPlan().onCall((cmd) => {
      if (cmd === 'DeleteItemCommand') throw new Error('injected: clear died before deleting the records');
    });
    await expect(faultyStore(svc, crash).clear(ids(scope))).rejects.toThrow('injected');
    const g = await generationOf(api, scope);
    expect(g).toBe(1);
    expect(await api.hydrate(scope)).toBeUndefined();
    const res = await writeAt(api, scope, 1, 'first run after the reset\n', g);
    const status = res.status;
    await res.body?.cancel();
    expect({ status, served: (await api.hydrate(scope))?.body.toString() }).toEqual({ status: 200, served: 'first run after the reset\n' });
  });

  it('a fenced writer that died before removing its claim: a post-reset run reusing the run id is stored and served', async () => {
    // Same expectation; here the stale record comes from a run of generation 0 that claimed after the
    // clear's sweep, was fenced at its publish, and died before deleting its own claim.
    const { api, svc } = ctx;
    const scope = freshScope('stale-fenced');
    expect((await writeAt(api, scope, 1, 'history\n', 0)).status).toBe(200);
    await api.clear(scope);
    const crash = new FaultPlan().onCall((cmd) => {
      if (cmd === 'DeleteItemCommand') throw new Error('injected: died before removing its claim');
    });
    // The pre-reset run 2 (generation 0) arrives after the clear: claim, publish fails, cleanup dies.
    const late = await faultyStore(svc, crash)
      .write({ ...ids(scope), issuedAt: now(), generation: 0 }, { runId: 2, status: 'completed', body: Buffer.from('late pre-reset\n') })
      .catch((e: unknown) => String(e));
    expect(['fenced', 'Error: injected: died before removing its claim']).toContain(typeof late === 'string' ? late : late.kind);
    const res = await writeAt(api, scope, 2, 'first run after the reset\n', await generationOf(api, scope));
    const status = res.status;
    await res.body?.cancel();
    expect({ status, served: (await api.hydrate(scope))?.body.toString() }).toEqual({ status: 200, served: 'first run after the reset\n' });
  });
});
