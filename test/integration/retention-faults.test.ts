/**
 * The retention pass survives a crash at every AWS call (docs/DESIGN.md § Retention): for every N, a pass that
 * fails before call N (never sent) or after it (sent, outcome lost) and is then run again converges to the
 * state a clean pass reaches; nothing retained is lost at any point (every record left names objects that
 * exist, the latest is served byte for byte, the retained runs read back exactly); and the counts each pass
 * reports are what disappeared while it ran. A pass that dies between a record and its objects leaves only
 * unreferenced objects, which the reconciler deletes.
 *
 * The pass walks the conversation's shard of the work queue (`shards`: the other 15 Queries are the same
 * call on other partitions). The scenario exercises every kind of call a pass makes: the shard Query, the
 * partition Query, a chain's stamp (UpdateItem), run deletions (DeleteItem: a run that did not complete and
 * two completed runs below the kept ones), their objects (DeleteObjects), a chain unreferenced for a grace
 * period (DeleteItem, then DeleteObjects of its objects), and HEAD's write-back (UpdateItem).
 */
import { describe, expect, it } from 'vitest';
import { GONE, readRunBytes } from '../../functions/lib/store/chain.js';
import type { RetentionResult } from '../../functions/lib/store/retention.js';
import { expectHydrate, len, line, ok, pkOf, sha } from '../helpers/append.js';
import { FaultPlan } from '../helpers/faults.js';
import { freshScope, useLocalService, type Api, type Scope } from '../helpers/service.js';
import { bytesOf, clockedStore, DAY, HOUR, MINUTE, objectsOf, partition, referencedKeys } from '../helpers/retention.js';
import { retentionShardOf } from '../../functions/lib/store/registry.js';

const ctx = useLocalService();
const GRACE = HOUR;
const KEEP = { retainCompletedRuns: 2 };

async function append(api: Api, scope: Scope, runId: number, baseRunId: number, base: string, added: string): Promise<void> {
  const token = await api.token(scope, { runId });
  await ok(api.post(token, { runId, terminalStatus: 'completed', appendJsonl: added, base: { runId: baseRunId, bytes: len(base), sha256: sha(base) }, sha256: sha(base + added) }));
}

/** The pass under test: the conversation's shard of the work queue. */
const passOver = (s: Scenario, plan?: FaultPlan) =>
  clockedStore(ctx.svc, () => s.at, { ...(plan && { plan }), retention: KEEP }).runRetention({ shards: [Number(retentionShardOf(s.pk).slice(1))] });

interface Scenario {
  scope: Scope;
  pk: string;
  /** The clock of the pass under test. */
  at: number;
  /** What must survive: run id → content. */
  kept: Map<number, string>;
}

/**
 * Chain A (runs 1, 2), a failed run 3, chain B (run 4, a rewrite, and 5, an append); a clean pass past the
 * grace deletes runs 1, 2 and stamps chain A; then chain C (run 6, a rewrite, and 7). With
 * RETAIN_COMPLETED_RUNS = 2, the pass under test (7 days later) deletes runs 3, 4, 5 (run 3's own object),
 * stamps chain B, deletes chain A and its objects, and writes HEAD back.
 */
async function build(prefix: string): Promise<Scenario> {
  const { api, svc } = ctx;
  const scope = freshScope(prefix);
  const pk = pkOf(scope);
  const a1 = line({ a: 1, t: 'α'.repeat(50) });
  await ok(api.write(scope, 1, a1));
  await append(api, scope, 2, 1, a1, line({ a: 2 }));
  await ok(api.write(scope, 3, line({ failed: 3 }), 'failed'));
  const b4 = line({ b: 4, t: 'β'.repeat(60) });
  await ok(api.write(scope, 4, b4));
  await append(api, scope, 5, 4, b4, line({ b: 5 }));
  const prep = await clockedStore(svc, () => Date.now() + GRACE + MINUTE, { retention: KEEP }).retainConversation(pk);
  expect(prep.runs).toBe(2);
  const c6 = line({ c: 6, t: 'γ'.repeat(70) });
  await ok(api.write(scope, 6, c6));
  const c7 = c6 + line({ c: 7 });
  await ok(api.write(scope, 7, c7)); // a whole-file write that extends run 6: an append on chain C
  return { scope, pk, at: Date.now() + 8 * DAY, kept: new Map([[6, c6], [7, c7]]) };
}

interface Snapshot {
  runs: Set<number>;
  objects: Map<string, number>;
}

async function snapshot(pk: string): Promise<Snapshot> {
  return { runs: new Set((await partition(ctx.svc, pk)).runs.map((r) => r.runId)), objects: await objectsOf(ctx.svc, pk) };
}

/** What disappeared from `a` to `b`. */
function gone(a: Snapshot, b: Snapshot): { runs: number; objects: number; bytes: number } {
  const lost = [...a.objects.keys()].filter((k) => !b.objects.has(k));
  return { runs: [...a.runs].filter((r) => !b.runs.has(r)).length, objects: lost.length, bytes: lost.reduce((n, k) => n + a.objects.get(k)!, 0) };
}

/** Nothing retained is lost: every record left names objects that exist, the latest and the kept runs read back exactly. */
async function expectNothingRetainedLost(s: Scenario, when: string): Promise<void> {
  const p = await partition(ctx.svc, s.pk);
  const objects = await objectsOf(ctx.svc, s.pk);
  for (const key of referencedKeys(p)) expect(objects.has(key), `${when}: ${key} is referenced and must exist`).toBe(true);
  await expectHydrate(ctx.api, s.scope, 7, s.kept.get(7)!);
  for (const [runId, content] of s.kept) {
    const run = p.runs.find((r) => r.runId === runId);
    expect(run, `${when}: run ${runId}`).toBeDefined();
    const bytes = await readRunBytes(ctx.svc.store, s.pk, run!);
    expect(bytes !== GONE && bytes.toString('utf8') === content, `${when}: run ${runId} byte-exact`).toBe(true);
  }
}

/** Passes (at increasing clocks) until nothing is due for the conversation: it leaves the work queue for good. */
async function settle(s: Scenario): Promise<void> {
  let at = s.at;
  for (let i = 0; i < 5; i++) {
    const r = await clockedStore(ctx.svc, () => at, { retention: KEEP }).retainConversation(s.pk);
    if (r.nextDueAtMs === undefined) return;
    at = Math.max(at, r.nextDueAtMs);
  }
  throw new Error('retention did not settle');
}

/** Reconciler passes until one completes a full sweep (deletes the objects a crashed pass left unreferenced). */
async function reconcileFully(now: number): Promise<void> {
  const store = clockedStore(ctx.svc, () => now);
  let sawStart = false;
  for (let i = 0; i < 50; i++) {
    const r = await store.reconcile({ graceSeconds: GRACE / 1000, deadlineAt: Date.now() + 60_000 });
    if (r.complete && sawStart) return;
    if (r.complete) sawStart = true;
  }
  throw new Error('reconcile did not complete');
}

/** The clean pass over a fresh scenario: its call sequence, and its end state. */
async function probe(): Promise<{ calls: string[]; end: Snapshot; result: RetentionResult }> {
  const s = await build('rf-probe');
  const plan = new FaultPlan();
  const before = await snapshot(s.pk);
  const result = await passOver(s, plan);
  const after = await snapshot(s.pk);
  expect(result).toMatchObject({ conversations: 1, failed: 0, complete: true, ...gone(before, after) });
  await settle(s);
  return { calls: plan.calls, end: await snapshot(s.pk), result };
}

let probed: ReturnType<typeof probe> | undefined;
/** The clean probe, made once for the file (whichever test needs it first). */
const cleanPass = () => (probed ??= probe());

describe('retention survives a crash at every AWS call', () => {
  it('the clean pass: its calls, and what it removes', async () => {
    const clean = await cleanPass();
    const count = (name: string) => clean.calls.filter((c) => c === name).length;
    // The shard and the partition; stamp of chain B + HEAD; runs 3, 4, 5 + chain A; run 3's object, chain A's.
    expect({ Query: count('QueryCommand'), Update: count('UpdateItemCommand'), Delete: count('DeleteItemCommand'), Objects: count('DeleteObjectsCommand') }).toEqual({
      Query: 2,
      Update: 2,
      Delete: 4,
      Objects: 2,
    });
    expect(clean.calls).toEqual([
      'QueryCommand', // the work queue (the conversation's shard)
      'QueryCommand', // its partition
      'UpdateItemCommand', // stamp chain B: its last runs go now
      'DeleteItemCommand', // run 3 (failed, past RETAIN_FAILED_DAYS)
      'DeleteItemCommand', // run 5 and
      'DeleteItemCommand', // run 4 (completed, below the kept ones)
      'DeleteObjectsCommand', // run 3's object (runs 4, 5 share chain B's)
      'DeleteItemCommand', // chain A (stamped by the first pass, a grace period ago)
      'DeleteObjectsCommand', // its objects
      'UpdateItemCommand', // HEAD: counters, next due time
    ]);
    expect(clean.result).toMatchObject({ runs: 3, objects: 1 + 2 }); // run 3's object, chain A's two objects
    expect([...clean.end.runs].sort()).toEqual([6, 7]);
  });

  it('a pass whose every work-queue Query fails changes nothing, and the next full pass converges', async () => {
    const clean = await cleanPass();
    const s = await build('rf-queue');
    const s0 = await snapshot(s.pk);
    const plan = new FaultPlan().onCall((name) => {
      if (name === 'QueryCommand') throw new Error('injected: the index is unavailable');
    });
    const faulty = await clockedStore(ctx.svc, () => s.at, { plan, retention: KEEP }).runRetention();
    expect(faulty).toMatchObject({ failed: 16, conversations: 0, runs: 0, complete: true });
    expect(await snapshot(s.pk)).toEqual(s0);
    const full = await clockedStore(ctx.svc, () => s.at, { retention: KEEP }).runRetention();
    expect(full).toMatchObject({ failed: 0, conversations: 1, ...gone(s0, await snapshot(s.pk)) });
    await settle(s);
    expect(await snapshot(s.pk)).toEqual({ runs: clean.end.runs, objects: expect.any(Map) });
    await expectNothingRetainedLost(s, 'after the full pass');
  });

  for (const mode of ['before', 'after'] as const) {
    it(`fails call N ${mode} it is made, for every N: nothing retained is lost, the re-run converges and reports what disappeared`, async () => {
      const clean = await cleanPass();
      const total = clean.calls.length;
      const scenarios: Scenario[] = [];
      for (let n = 1; n <= total; n++) {
        const s = await build(`rf-${mode}-${n}`);
        scenarios.push(s);
        const s0 = await snapshot(s.pk);
        const plan = mode === 'before' ? new FaultPlan().failBeforeCall(n) : new FaultPlan().failAfterCall(n);
        const faulty = await passOver(s, plan);
        expect(faulty.failed, `call ${n} (${plan.calls[n - 1]}) fails the pass`).toBe(1);
        const s1 = await snapshot(s.pk);
        await expectNothingRetainedLost(s, `after a crash ${mode} call ${n} (${plan.calls[n - 1]})`);
        // What the crashed pass reports, it removed (it may have removed more: the call whose answer was lost).
        const lost1 = gone(s0, s1);
        expect(faulty.runs).toBeLessThanOrEqual(lost1.runs);
        expect(faulty.objects).toBeLessThanOrEqual(lost1.objects);
        expect(faulty.bytes).toBeLessThanOrEqual(lost1.bytes);

        const rerun = await passOver(s);
        expect(rerun.failed).toBe(0);
        const s2 = await snapshot(s.pk);
        // The re-run's counts are exactly what disappeared while it ran.
        expect({ runs: rerun.runs, objects: rerun.objects, bytes: rerun.bytes }, `re-run after call ${n}`).toEqual(gone(s1, s2));
        // Together they account for every run removed, except one whose delete answer was lost.
        const runsGone = gone(s0, s2).runs;
        expect(faulty.runs + rerun.runs).toBeLessThanOrEqual(runsGone);
        expect(faulty.runs + rerun.runs).toBeGreaterThanOrEqual(mode === 'after' && plan.calls[n - 1] === 'DeleteItemCommand' ? runsGone - 1 : runsGone);
        await settle(s);
        await expectNothingRetainedLost(s, `converged after call ${n}`);
        expect([...(await snapshot(s.pk)).runs].sort(), `runs after call ${n}`).toEqual([...clean.end.runs].sort());
      }
      // Objects a crash left unreferenced (between a record and its objects) go with the reconciler; then
      // every scenario holds exactly what its records reference: the clean pass's end state.
      await reconcileFully(Math.max(...scenarios.map((s) => s.at)) + 2 * GRACE);
      for (const s of scenarios) {
        const p = await partition(ctx.svc, s.pk);
        const objects = await objectsOf(ctx.svc, s.pk);
        expect([...objects.keys()].sort(), s.scope.conv).toEqual([...referencedKeys(p)].sort());
        expect(objects.size).toBe(clean.end.objects.size);
        expect(bytesOf(objects)).toBe(bytesOf(clean.end.objects));
        expect(p.head?.['retentionDueAtMs']).toBeUndefined();
      }
    }, 180_000);
  }
});
