import { describe, expect, it } from 'vitest';
import { ERRORS, errorBody } from '../../functions/lib/contract.js';
import { FaultPlan, faultyStore, gate } from '../helpers/faults.js';
import { freshScope, shuffle, useLocalService } from '../helpers/service.js';

const ctx = useLocalService();

describe('concurrent writers (I5)', () => {
  it('50 concurrent POSTs for one run: exactly one 200, 49 × 409, and the winner is what is served', async () => {
    const { api } = ctx;
    const scope = freshScope();
    const token = await api.token(scope, { runId: 1 });
    const results = await Promise.all(
      Array.from({ length: 50 }, async (_, i) => {
        const res = await api.post(token, { terminalStatus: 'completed', snapshotJsonl: `attempt ${i}\n`, runId: 1 });
        return { i, status: res.status, body: (await res.json()) as unknown };
      }),
    );
    const ok = results.filter((r) => r.status === 200);
    const conflicts = results.filter((r) => r.status === 409);
    expect(ok).toHaveLength(1);
    expect(conflicts).toHaveLength(49);
    for (const c of conflicts) expect(c.body).toEqual(errorBody(ERRORS.alreadyExists));
    expect((await api.hydrate(scope))?.body.toString()).toBe(`attempt ${ok[0]!.i}\n`);
    // The 49 losers cleaned up their uploads: one object, one record.
    expect(await api.clear(scope)).toBe(1);
  });

  it('50 runs posted concurrently in shuffled order: hydrate serves the highest runId', async () => {
    const { api } = ctx;
    const scope = freshScope();
    const runs = shuffle(Array.from({ length: 50 }, (_, i) => i + 1), 1234);
    const statuses = await Promise.all(runs.map(async (runId) => (await api.write(scope, runId, `run ${runId}\n`)).status));
    expect(statuses.every((s) => s === 200)).toBe(true);
    const got = await api.hydrate(scope);
    expect(got?.runId).toBe(50);
    expect(got?.body.toString()).toBe('run 50\n');
  });

  it('concurrent readers during concurrent writes only ever see complete, completed snapshots', async () => {
    const { api } = ctx;
    const scope = freshScope();
    const bodyOf = (runId: number) => `${JSON.stringify({ runId, pad: 'z'.repeat(20_000) })}\n`;
    const writes = shuffle(Array.from({ length: 20 }, (_, i) => i + 1), 99).map((runId) =>
      api.write(scope, runId, bodyOf(runId), runId % 5 === 0 ? 'failed' : 'completed'),
    );
    const reads = Array.from({ length: 20 }, async () => {
      const got = await api.hydrate(scope);
      if (got) {
        expect(got.runId % 5).not.toBe(0);
        expect(got.body.toString()).toBe(bodyOf(got.runId));
      }
    });
    await Promise.all([...writes, ...reads]);
    expect((await api.hydrate(scope))?.runId).toBe(19);
  });
});

describe('forced interleavings with a clear (I1, I4)', () => {
  it('a writer that claimed its run before a clear but publishes after it is fenced, and leaves nothing behind', async () => {
    const { api, svc } = ctx;
    const scope = freshScope();
    const ids = { organizationId: scope.org, agentId: scope.agent, conversationId: scope.conv };
    await api.write(scope, 1, 'old\n');

    // Pause the writer right before its publish (the UpdateItem after PutObject + PutItem).
    const plan = new FaultPlan();
    const beforePublish = gate();
    const release = gate();
    plan.onCall(async (cmd) => {
      if (cmd === 'UpdateItemCommand') {
        beforePublish.open();
        await release.wait;
      }
    });
    const writer = faultyStore(svc, plan).write({ ...ids, issuedAt: Math.floor(Date.now() / 1000) }, {
      runId: 2,
      status: 'completed',
      body: Buffer.from('old + more\n'),
    });
    await beforePublish.wait;
    await new Promise((r) => setTimeout(r, 5)); // the clear's clock reads strictly after the claim
    const deleted = await api.clear(scope);
    release.open();

    expect(await writer).toEqual({ kind: 'fenced' });
    expect(deleted).toBe(2); // run 1, and run 2's claim (made before the clear)
    expect(await api.hydrate(scope)).toBeUndefined();
    expect(await api.clear(scope)).toBe(0);
  });

  it('a reader that read the record before a clear deleted the object answers 404, not 500', async () => {
    const { api, svc } = ctx;
    const scope = freshScope();
    const ids = { organizationId: scope.org, agentId: scope.agent, conversationId: scope.conv };
    await api.write(scope, 1, 'soon gone\n');

    const plan = new FaultPlan();
    const beforeRead = gate();
    const release = gate();
    plan.onCall(async (cmd) => {
      if (cmd === 'GetObjectCommand') {
        beforeRead.open();
        await release.wait;
      }
    });
    const reader = faultyStore(svc, plan).hydrate(ids);
    await beforeRead.wait;
    expect(await api.clear(scope)).toBe(1);
    release.open();
    expect(await reader).toMatchObject({ kind: 'none' });
  });

  it('a retry that rolls forward an interrupted commit cannot resurrect a run from before a clear', async () => {
    const { api, svc } = ctx;
    const scope = freshScope();
    const ids = { organizationId: scope.org, agentId: scope.agent, conversationId: scope.conv };
    const oldIat = Math.floor(Date.now() / 1000) - 5;
    // The first attempt claims run 3 and dies before publishing (BatchGetItem, PutObject, PutItem chain, PutItem claim, ✗ UpdateItem).
    const plan = new FaultPlan().failBeforeCommand('UpdateItemCommand');
    await expect(faultyStore(svc, plan).write({ ...ids, issuedAt: oldIat }, { runId: 3, status: 'completed', body: Buffer.from('old\n') })).rejects.toThrow(
      'injected',
    );
    await api.clear(scope);
    // Its retry (same old token) must not publish the old transcript.
    const retry = await api.write(scope, 3, 'old\n', 'completed', { issuedAt: oldIat });
    expect(retry.status).toBe(409);
    expect(await api.hydrate(scope)).toBeUndefined();
  });
});
