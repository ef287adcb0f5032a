import { describe, expect, it } from 'vitest';
import { generationOf, ids, nowSeconds, reconcileFully as reconcileFullyOn, writeWithGeneration } from '../helpers/generation.js';
import { FaultPlan, faultyStore, gate } from '../helpers/faults.js';
import { freshScope, useLocalService, type Api, type Scope } from '../helpers/service.js';

/**
 * Adversarial: the echoed reset generation (`x-snapshot-generation`) is taken on the writer's word.
 * Nothing checks that it is ≤ HEAD's generation, i.e. that the writer can have hydrated it. A run
 * claimed with a generation AHEAD of HEAD survives the next clear (clear deletes only runs of a
 * generation < the new one) and becomes "current" once the clear bumps HEAD up to it: its pre-reset
 * bytes can then be published after the reset — by the writer itself (interleaving), by a retry of the
 * same run (duplicate path rolls the existing claim forward), or by the reconciler's roll-forward.
 *
 * Expected behaviour (I4): a run that existed before a clear is never served after it. Concretely, a
 * generation ahead of HEAD cannot have been announced by any hydrate, so it must be refused/fenced at
 * the claim (or the claim's generation capped at HEAD's), and a clear must not leave such a run behind.
 */
const ctx = useLocalService();
const now = nowSeconds;
const writeWith = (api: Api, scope: Scope, runId: number, body: string, generation: string) => writeWithGeneration(api, scope, runId, body, generation);
const reconcileFully = () => reconcileFullyOn(ctx.svc);

/**
 * A writer that echoes `generation` and dies before its publish (BatchGetItem, PutObject, PutItem chain, PutItem claim, ✗ UpdateItem).
 * A generation HEAD never announced is fenced at admission (the first call), so such a run never gets a claim.
 */
async function claimThenDie(scope: Scope, runId: number, body: string, generation: number): Promise<void> {
  const crash = new FaultPlan().failBeforeCommand('UpdateItemCommand');
  const outcome = await faultyStore(ctx.svc, crash)
    .write({ ...ids(scope), issuedAt: now(), generation }, { runId, status: 'completed', body: Buffer.from(body) })
    .then((r) => r, (err: Error) => err.message);
  expect([{ kind: 'fenced' }, expect.stringContaining('injected')]).toContainEqual(outcome);
}

describe('odd generation headers', () => {
  it('malformed x-snapshot-generation values are refused with 400 invalid_generation and store nothing', async () => {
    const { api } = ctx;
    const scope = freshScope('odd-gen');
    const bad = ['-1', '1e3', '0x1', '1.0', '+1', '', ' ', '1, 2', '1,1', '99999999999999999', '9007199254740993', 'NaN', 'Infinity'];
    let runId = 0;
    for (const value of bad) {
      runId += 1;
      const res = await writeWith(api, scope, runId, 'odd\n', value);
      expect(res.status, `header ${JSON.stringify(value)}`).toBe(400);
      expect(((await res.json()) as { code: string }).code, `header ${JSON.stringify(value)}`).toBe('invalid_generation');
    }
    expect(await api.hydrate(scope)).toBeUndefined();
  });

  it('a generation with surrounding spaces or leading zeros is read as the number it spells', async () => {
    const { api } = ctx;
    const scope = freshScope('padded-gen');
    expect((await writeWith(api, scope, 1, 'one\n', ' 0 ')).status).toBe(200);
    expect((await writeWith(api, scope, 2, 'two\n', '000')).status).toBe(200);
    expect((await api.hydrate(scope))?.body.toString()).toBe('two\n');
  });

  it('a direct write echoing a generation ahead of HEAD is fenced (409) and leaves nothing served', async () => {
    const { api } = ctx;
    const scope = freshScope('ahead-plain');
    expect((await writeWith(api, scope, 1, 'one\n', '0')).status).toBe(200);
    const res = await writeWith(api, scope, 2, 'from the future\n', '5');
    expect(res.status).toBe(409);
    expect((await api.hydrate(scope))?.body.toString()).toBe('one\n');
  });
});

describe('a run claimed with a generation ahead of HEAD must never publish after a clear', () => {
  it('clear between its claim and its publish: the pre-reset run must not become latest', async () => {
    const { api, svc } = ctx;
    const scope = freshScope('ahead-interleave');
    expect((await writeWith(api, scope, 1, 'history\n', '0')).status).toBe(200);
    expect(await generationOf(api, scope)).toBe(0);
    const atPublish = gate();
    const resume = gate();
    const plan = new FaultPlan().onCall(async (cmd) => {
      if (cmd === 'UpdateItemCommand') {
        atPublish.open();
        await resume.wait;
      }
    });
    // The writer started BEFORE the clear (HEAD is at 0) but echoes 1.
    const writing = faultyStore(svc, plan).write({ ...ids(scope), issuedAt: now(), generation: 1 }, { runId: 2, status: 'completed', body: Buffer.from('pre-reset bytes\n') });
    // Either it reaches its publish (then the clear goes in between), or it is refused before any claim.
    const reached = await Promise.race([atPublish.wait.then(() => 'publish' as const), writing.then(() => 'answered' as const)]);
    if (reached === 'publish') await api.clear(scope);
    resume.open();
    const result = await writing;
    if (reached === 'answered') await api.clear(scope);
    // Expected: fenced (the run began before the clear), and the conversation is empty after the reset.
    expect(result.kind).toBe('fenced');
    expect(await api.hydrate(scope)).toBeUndefined();
  });

  it('claimed then died, then a clear, then the reconciler: roll-forward must not resurrect the pre-reset run', async () => {
    const { api } = ctx;
    const scope = freshScope('ahead-reconcile');
    expect((await writeWith(api, scope, 1, 'history\n', '0')).status).toBe(200);
    await claimThenDie(scope, 2, 'pre-reset bytes\n', 1);
    expect((await api.hydrate(scope))?.body.toString()).toBe('history\n');
    await api.clear(scope);
    expect(await api.hydrate(scope)).toBeUndefined();
    await reconcileFully();
    // Expected: still empty after the reset (nothing written since).
    expect(await api.hydrate(scope)).toBeUndefined();
  }, 60_000);

  it('claimed then died, then a clear, then a post-reset writer of the same run id: the pre-reset bytes must not be served', async () => {
    const { api } = ctx;
    const scope = freshScope('ahead-retry');
    expect((await writeWith(api, scope, 1, 'history\n', '0')).status).toBe(200);
    await claimThenDie(scope, 2, 'pre-reset bytes\n', 1);
    await api.clear(scope);
    const g = await generationOf(api, scope);
    expect(g).toBe(1);
    // A genuine run after the reset, which hydrated generation 1 and happens to get run id 2.
    const res = await writeWith(api, scope, 2, 'after the reset\n', String(g));
    await res.body?.cancel();
    const served = await api.hydrate(scope);
    // Expected: either the post-reset run is served, or nothing — never the bytes from before the reset.
    expect(served?.body.toString()).not.toBe('pre-reset bytes\n');
  });

  it('a run claimed at generation 3 while HEAD is at 0 survives three clears and is rolled forward once HEAD reaches 3', async () => {
    const { api } = ctx;
    const scope = freshScope('ahead-survivor');
    await claimThenDie(scope, 1, 'pre-reset bytes\n', 3);
    await api.clear(scope); // 0 → 1
    await api.clear(scope); // 1 → 2
    await api.clear(scope); // 2 → 3: HEAD is now at the generation the pre-reset run claimed
    await reconcileFully();
    expect(await api.hydrate(scope)).toBeUndefined();
  }, 60_000);
});
