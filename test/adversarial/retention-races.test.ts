/**
 * Adversarial: the retention pass (docs/DESIGN.md § Retention) interleaved with erasures and with appends on
 * an older base (a fork), forced with FaultPlan gates:
 *
 *   - a pass that read a conversation before it was erased, and goes on after: it brings nothing back (no
 *     record, no HEAD attribute, no chain stamp), and — when the conversation is written again in between —
 *     it does not touch the new incarnation (its counters stay what the new writes made them);
 *   - an erasure whose listing is overtaken by the pass: everything is gone once it completes;
 *   - an append on an older base (it forks the base's chain) admitted before the pass removes that base, and
 *     one whose base chain loses its last run to the pass: the new run is stored and served byte-exact, and
 *     later passes leave storage holding exactly what the records reference.
 */
import { describe, expect, it } from 'vitest';
import { eraseScope } from '../../functions/lib/store/erasure.js';
import { expectHydrate, len, line, ok, sha } from '../helpers/append.js';
import { expectErased, inventoryOf, pkOf, seedConversation } from '../helpers/erasure.js';
import { FaultPlan, faultyStore, gate, withFaultyService } from '../helpers/faults.js';
import { clockedStore, HOUR, MINUTE, objectsOf, partition, referencedKeys } from '../helpers/retention.js';
import { freshScope, useLocalService, type Api, type Scope } from '../helpers/service.js';
import { AdminApi, ADMIN_PATHS, type ListedConversation } from '../helpers/admin.js';

const ctx = useLocalService();
const GRACE = HOUR; // ORPHAN_GRACE_SECONDS default

async function append(api: Api, scope: Scope, runId: number, baseRunId: number, base: string, added: string): Promise<Response> {
  const token = await api.token(scope, { runId });
  return api.post(token, { runId, terminalStatus: 'completed', appendJsonl: added, base: { runId: baseRunId, bytes: len(base), sha256: sha(base) }, sha256: sha(base + added) });
}

/** A pass with RETAIN_COMPLETED_RUNS = 1, past the grace and RETAIN_FAILED_DAYS, whose `k`-th call named `name` waits for `release()`. */
function pausedPass(name: string, k = 1, later = 8 * 24 * HOUR) {
  const reached = gate();
  const paused = gate();
  let seen = 0;
  const plan = new FaultPlan().onCall(async (cmd) => {
    if (cmd === name && ++seen === k) {
      reached.open();
      await paused.wait;
    }
  });
  const store = clockedStore(ctx.svc, () => Date.now() + later, { plan, retention: { retainCompletedRuns: 1 } });
  return { store, reached: reached.wait, release: paused.open };
}

/** Runs 1–3 of one chain plus a failed run 4: with RETAIN_COMPLETED_RUNS = 1 and days later, runs 1, 2 and 4 go. */
async function conversationWithHistory(tag: string): Promise<Scope> {
  const s = freshScope(tag);
  await seedConversation(ctx.api, s);
  return s;
}

async function listed(s: Scope): Promise<ListedConversation | undefined> {
  const admin = new AdminApi(ctx.svc);
  const page = await admin.json<{ conversations: ListedConversation[] }>(ADMIN_PATHS.conversations, { agentId: s.agent }, await admin.token(s.org));
  return page.conversations.find((c) => c.conversationId === s.conv);
}

describe('retention and erasure', () => {
  it('a pass that read the conversation before its erasure brings nothing back', async () => {
    const s = await conversationWithHistory('ret-erase');
    // Paused at its first write (the first DeleteItem of a run), with the partition read.
    const pass = pausedPass('DeleteItemCommand');
    const running = pass.store.retainConversation(pkOf(s));
    await pass.reached;
    expect((await eraseScope(ctx.svc.store, { organizationId: s.org, agentId: s.agent, conversationId: s.conv })).state).toBe('completed');
    pass.release();
    const res = await running;
    expect(res).toMatchObject({ runs: 0, objects: 0, bytes: 0 });
    await expectErased(ctx.svc, s);
    expect(await listed(s)).toBeUndefined();
  });

  it('a pass that removed runs before an erasure does not take them off the counters of what is written after it', async () => {
    const s = await conversationWithHistory('ret-erase-write');
    // Paused just before its HEAD write-back (counters and due time), its deletions done.
    const pass = pausedPass('UpdateItemCommand', 1);
    const running = pass.store.retainConversation(pkOf(s));
    await pass.reached;
    await eraseScope(ctx.svc.store, { organizationId: s.org, agentId: s.agent, conversationId: s.conv });
    const fresh = line({ after: 'erasure' });
    await ok(ctx.api.write(s, 1, fresh));
    const before = await listed(s);
    expect(before).toMatchObject({ runs: 1, latestRunId: 1 });
    pass.release();
    const res = await running;
    expect(res.runs).toBeGreaterThan(0);
    await expectHydrate(ctx.api, s, 1, fresh);
    // The new incarnation's counters are its own: one run, its bytes.
    expect(await listed(s)).toEqual(before);
    const head = (await partition(ctx.svc, pkOf(s))).head!;
    expect(head['runCount']).toBe(1);
    expect(head['storedBytesTotal']).toBe([...(await objectsOf(ctx.svc, pkOf(s))).values()].reduce((a, b) => a + b, 0));
  });

  it('an erasure overtaken by a pass (after the erasure listed the conversation) still leaves nothing', async () => {
    const s = await conversationWithHistory('erase-ret');
    const inv = await inventoryOf(ctx.svc, [s]);
    // The erasure pauses at its marks (BatchWriteItem): it has read the records and listed the objects.
    const reached = gate();
    const paused = gate();
    const plan = new FaultPlan().onCall(async (cmd) => {
      if (cmd === 'BatchWriteItemCommand') {
        reached.open();
        await paused.wait;
      }
    });
    const erasure = eraseScope(faultyStore(ctx.svc, plan), { organizationId: s.org, agentId: s.agent, conversationId: s.conv });
    await reached.wait;
    const res = await clockedStore(ctx.svc, () => Date.now() + 8 * 24 * HOUR, { retention: { retainCompletedRuns: 1 } }).retainConversation(pkOf(s));
    expect(res.runs).toBeGreaterThan(0);
    paused.open();
    const receipt = await erasure;
    expect(receipt.state).toBe('completed');
    await expectErased(ctx.svc, s);
    // It counts what it found (at most what was there; what the pass removed under it may be counted too).
    expect(receipt.runs).toBeLessThanOrEqual(inv.runs);
    expect(receipt.objects).toBeLessThanOrEqual(inv.objects);
  });
});

describe('retention and appends on an older base (forks)', () => {
  it('an append on an older base admitted before the pass removes that base is stored and served byte-exact', async () => {
    const { api, svc } = ctx;
    const s = freshScope('fork-older');
    const contents = [''];
    for (let r = 1; r <= 4; r++) {
      contents.push(contents[r - 1]! + line({ run: r, text: 'é🚀'.repeat(r) }));
      await ok(api.write(s, r, contents[r]!));
    }
    // The append (run 5 on base 2) pauses right after its admission read: the base record is in hand.
    const reached = gate();
    const paused = gate();
    let armed = true;
    const plan = new FaultPlan().onCall(async (cmd) => {
      if (armed && cmd !== 'BatchGetItemCommand') {
        armed = false;
        reached.open();
        await paused.wait;
      }
    });
    const added = line({ fork: 5 });
    const forking = withFaultyService(svc, plan, (faulty) => append(faulty, s, 5, 2, contents[2]!, added));
    await reached.wait;
    const res = await clockedStore(svc, () => Date.now() + GRACE + MINUTE, { retention: { retainCompletedRuns: 1 } }).retainConversation(pkOf(s));
    expect(res.runs).toBe(3); // runs 1–3: the chain stays (run 4, the latest, references it)
    paused.open();
    await ok(forking);
    await expectHydrate(api, s, 5, contents[2]! + added);
    for (const later of [2 * GRACE, 4 * GRACE]) await clockedStore(svc, () => Date.now() + later, { retention: { retainCompletedRuns: 1 } }).retainConversation(pkOf(s));
    await expectHydrate(api, s, 5, contents[2]! + added);
    const p = await partition(svc, pkOf(s));
    expect(p.runs.map((r) => r.runId)).toEqual([5]);
    expect([...(await objectsOf(svc, pkOf(s))).keys()].sort()).toEqual([...referencedKeys(p)].sort());
  });

  it('an append whose base chain loses its last run to the pass forks from it within the grace and is served', async () => {
    const { api, svc } = ctx;
    const s = freshScope('fork-stamped');
    // Chain X: runs 1–3 (3 its end). Chain Y: run 4, a rewrite (the latest). The append is on run 2: not
    // the end of its chain, so it forks (copies X's prefix into a chain of its own).
    const x = [''];
    for (let r = 1; r <= 3; r++) {
      x.push(x[r - 1]! + line({ x: r }));
      await ok(api.write(s, r, x[r]!));
    }
    await ok(api.write(s, 4, line({ y: 4 })));
    const chainX = (await partition(svc, pkOf(s))).runs.find((r) => r.runId === 2)!.chainId!;
    const reached = gate();
    const paused = gate();
    let armed = true;
    const plan = new FaultPlan().onCall(async (cmd) => {
      if (armed && cmd !== 'BatchGetItemCommand') {
        armed = false;
        reached.open();
        await paused.wait;
      }
    });
    const added = line({ fork: 5 });
    const forking = withFaultyService(svc, plan, (faulty) => append(faulty, s, 5, 2, x[2]!, added));
    await reached.wait;
    // The pass removes runs 1–3 and stamps chain X (kept for the grace: a request may still read it).
    const t = Date.now() + GRACE + MINUTE;
    const res = await clockedStore(svc, () => t, { retention: { retainCompletedRuns: 1 } }).retainConversation(pkOf(s));
    expect(res.runs).toBe(3);
    expect((await partition(svc, pkOf(s))).chains.find((c) => c.chainId === chainX)?.updatedAtMs).toBe(t);
    paused.open();
    await ok(forking);
    await expectHydrate(api, s, 5, x[2]! + added);
    const forked = (await partition(svc, pkOf(s))).runs.find((r) => r.runId === 5)!;
    expect(forked.chainId).not.toBe(chainX);
    // Past the stamp's grace chain X goes; run 5 (its own chain) and run 4's chain stay.
    await clockedStore(svc, () => t + GRACE + MINUTE, { retention: { retainCompletedRuns: 2 } }).retainConversation(pkOf(s));
    const p = await partition(svc, pkOf(s));
    expect(p.chains.find((c) => c.chainId === chainX)).toBeUndefined();
    expect(p.runs.map((r) => r.runId)).toEqual([4, 5]);
    await expectHydrate(api, s, 5, x[2]! + added);
    expect([...(await objectsOf(svc, pkOf(s))).keys()].sort()).toEqual([...referencedKeys(p)].sort());
  });
});
