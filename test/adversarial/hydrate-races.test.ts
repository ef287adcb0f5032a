import { describe, expect, it } from 'vitest';
import { HEADER_GENERATION } from '../../functions/lib/contract.js';
import { generationOf, ids } from '../helpers/generation.js';
import { FaultPlan, faultyStore } from '../helpers/faults.js';
import { freshScope, useLocalService, type Api, type Scope } from '../helpers/service.js';

/**
 * Adversarial: hydrate racing clears and new writes. A hydrate may only answer 500 (INTEGRITY) when
 * the data is really lost, i.e. when HEAD still names the same object after a re-read. A hydrate must
 * never serve bytes from before a clear that completed before the hydrate's HEAD read.
 */
const ctx = useLocalService();
async function writeAfterHydrate(api: Api, scope: Scope, runId: number, body: string): Promise<void> {
  const g = await generationOf(api, scope);
  const token = await api.token(scope, { runId });
  const res = await api.post(token, { terminalStatus: 'completed', snapshotJsonl: body, runId }, { [HEADER_GENERATION]: String(g) });
  expect(res.status).toBe(200);
}

describe('hydrate racing clears', () => {
  it('one clear + one new write between the HEAD read and the object read: serves the new run (no 500)', async () => {
    const { api, svc } = ctx;
    const scope = freshScope('race-one');
    await writeAfterHydrate(api, scope, 1, 'old\n');
    let objectReads = 0;
    const plan = new FaultPlan().onCall(async (cmd) => {
      if (cmd === 'GetObjectCommand' && ++objectReads === 1) {
        await api.clear(scope);
        await writeAfterHydrate(api, scope, 2, 'new\n');
      }
    });
    const result = await faultyStore(svc, plan).hydrate(ids(scope), { accept: 'identity' });
    expect(result.kind).toBe('body');
    expect(result.kind === 'body' && result.body.toString()).toBe('new\n');
    expect(result.generation).toBe(1);
  });

  it('a clear between the HEAD read and the object read with nothing written after: 404, never the old bytes', async () => {
    const { api, svc } = ctx;
    const scope = freshScope('race-none');
    await writeAfterHydrate(api, scope, 1, 'old\n');
    const plan = new FaultPlan().onCall(async (cmd) => {
      if (cmd === 'GetObjectCommand') await api.clear(scope);
    });
    const result = await faultyStore(svc, plan).hydrate(ids(scope), { accept: 'identity' });
    expect(result).toEqual({ kind: 'none', generation: 1 });
  });

  it('two successive clears, each racing one of the hydrate\'s object reads, with a healthy run published at the end: no 500', async () => {
    // Expected: HEAD changed between the two reads (run 1 → run 2 → run 3), so nothing is lost; the
    // hydrate must keep following HEAD (or answer with run 3), not report loss. Before the fix it gave up
    // after the second missing object without checking that HEAD still names the same object.
    const { api, svc } = ctx;
    const scope = freshScope('race-two');
    await writeAfterHydrate(api, scope, 1, 'first\n');
    let objectReads = 0;
    const plan = new FaultPlan().onCall(async (cmd) => {
      if (cmd !== 'GetObjectCommand') return;
      objectReads += 1;
      if (objectReads <= 2) {
        await api.clear(scope);
        await writeAfterHydrate(api, scope, objectReads + 1, `after clear ${objectReads}\n`);
      }
    });
    let outcome: string;
    try {
      const result = await faultyStore(svc, plan).hydrate(ids(scope), { accept: 'identity' });
      outcome = result.kind === 'body' ? result.body.toString() : result.kind;
    } catch (err) {
      outcome = `threw ${String(err)}`;
    }
    // The conversation is healthy: a fresh hydrate serves run 3.
    expect((await api.hydrate(scope))?.body.toString()).toBe('after clear 2\n');
    expect(outcome).toBe('after clear 2\n');
  });
});
