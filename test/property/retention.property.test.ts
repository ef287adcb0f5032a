/**
 * Retention as a property (docs/DESIGN.md § Retention): random sequences of whole-file writes (existing
 * workers), appends on the latest run (new workers), appends on an older run (a stale pod: a fork, or a
 * 412 once retention removed its base), runs that did not complete, clears, clock advances (minutes to
 * days) and retention passes, on one conversation through the real store against the emulators.
 *
 * Model: the latest content is the content of the highest completed run acknowledged since the last clear.
 * After every step the latest is served byte for byte, and every run retention left reads back exactly
 * what was written (no record names a missing object). At the end — the clock past every grace and
 * RETAIN_FAILED_DAYS, passes until nothing is due, then the reconciler's sweep — storage holds exactly the
 * objects the retained records reference, and only what the settings keep: the latest completed run and at
 * most RETAIN_COMPLETED_RUNS − 1 before it, no run that did not complete.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { TerminalStatus } from '../../functions/lib/contract.js';
import { GONE, readRunBytes } from '../../functions/lib/store/chain.js';
import { retentionShardOf } from '../../functions/lib/store/registry.js';
import type { SnapshotStore } from '../../functions/lib/store/index.js';
import { pkOf, sha } from '../helpers/append.js';
import { freshScope, useLocalService, type Scope } from '../helpers/service.js';
import { clockedStore, DAY, HOUR, MINUTE, objectsOf, partition, referencedKeys } from '../helpers/retention.js';

const ctx = useLocalService();
const GRACE = HOUR;

const text = fc.array(fc.constantFrom('{"role":"user","text":"héllo"}\n', '{"tool":"run","out":"🚀 ok"}\n', '\n', 'ü'.repeat(30) + '\r\n', '{"n":1}\n'), { minLength: 1, maxLength: 4 }).map((ls) => ls.join(''));
const status = fc.constantFrom<TerminalStatus>('failed', 'timeout', 'cancelled');

type Op =
  | { kind: 'write'; text: string; rewrite: boolean }
  | { kind: 'append'; text: string }
  | { kind: 'appendOld'; text: string; pick: number }
  | { kind: 'incomplete'; text: string; status: TerminalStatus; asAppend: boolean }
  | { kind: 'clear' }
  | { kind: 'advance'; ms: number }
  | { kind: 'retain' };

const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('write' as const), text, rewrite: fc.boolean() }) },
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('append' as const), text }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('appendOld' as const), text, pick: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('incomplete' as const), text, status, asAppend: fc.boolean() }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'clear' as const }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('advance' as const), ms: fc.constantFrom(MINUTE, 30 * MINUTE, GRACE + MINUTE, DAY, 3 * DAY, 8 * DAY) }) },
  { weight: 3, arbitrary: fc.constant({ kind: 'retain' as const }) },
);
const scenario = fc.record({ keep: fc.integer({ min: 1, max: 3 }), ops: fc.array(op, { minLength: 3, maxLength: 14 }) });

/** Reconciler passes until one completes a full sweep of the bucket. */
async function reconcileFully(store: SnapshotStore): Promise<void> {
  let sawStart = false;
  for (let i = 0; i < 50; i++) {
    const r = await store.reconcile({ graceSeconds: GRACE / 1000, deadlineAt: Date.now() + 60_000 });
    if (r.complete && sawStart) return;
    if (r.complete) sawStart = true;
  }
  throw new Error('reconcile did not complete');
}

const stats = { runs: 0, passes: 0, runsRemoved: 0, objectsRemoved: 0, forks: 0, refusedBases: 0 };

describe('retention property (store ↔ emulators)', () => {
  it('the latest is always served byte-exact; in the end storage holds exactly what the retained records reference', async () => {
    await fc.assert(
      fc.asyncProperty(scenario, async ({ keep, ops }) => {
        stats.runs++;
        const scope: Scope = freshScope('rp');
        const pk = pkOf(scope);
        let t = Date.now();
        const store = clockedStore(ctx.svc, () => t, { retention: { retainCompletedRuns: keep, retainFailedDays: 7 } });
        const ids = () => ({ organizationId: scope.org, agentId: scope.agent, conversationId: scope.conv, issuedAt: Math.floor(t / 1000), generation });
        let generation = 0;
        let nextRun = 1;
        let latest: { runId: number; content: string } | undefined;
        /** Every run acknowledged since the last clear: id → the exact content written. */
        let written = new Map<number, { content: string; completed: boolean }>();

        const pass = async () => {
          const r = await store.runRetention({ shards: [Number(retentionShardOf(pk).slice(1))] });
          expect(r.failed).toBe(0);
          stats.passes++;
          stats.runsRemoved += r.runs;
          stats.objectsRemoved += r.objects;
        };
        const check = async (when: string) => {
          const h = await ctx.api.hydrate(scope);
          if (latest === undefined) expect(h, `${when}: 404`).toBeUndefined();
          else {
            expect(h?.runId, `${when}: latest run`).toBe(latest.runId);
            expect(h?.body.toString('hex'), `${when}: latest bytes`).toBe(Buffer.from(latest.content).toString('hex'));
          }
          // Every record retention left reads back exactly (no record names a missing object).
          for (const run of (await partition(ctx.svc, pk)).runs) {
            const w = written.get(run.runId);
            if (!w || run.generation !== generation) continue;
            const bytes = await readRunBytes(ctx.svc.store, pk, run);
            expect(bytes !== GONE && bytes.toString('utf8') === w.content, `${when}: run ${run.runId} byte-exact`).toBe(true);
          }
        };

        for (const o of ops) {
          switch (o.kind) {
            case 'write': {
              const content = o.rewrite || !latest ? o.text : latest.content + o.text;
              const runId = nextRun++;
              const res = await store.write(ids(), { runId, status: 'completed', body: Buffer.from(content) });
              expect(res).toMatchObject({ kind: 'stored', latest: true });
              latest = { runId, content };
              written.set(runId, { content, completed: true });
              break;
            }
            case 'append':
            case 'appendOld': {
              const completed = [...written].filter(([, w]) => w.completed);
              const base = o.kind === 'append' ? (latest && ([latest.runId, written.get(latest.runId)!] as const)) : completed[o.pick % Math.max(1, completed.length)];
              if (!base) break;
              const [baseRunId, { content: baseContent }] = base;
              const runId = nextRun++;
              const content = baseContent + o.text;
              const res = await store.append(ids(), {
                runId,
                status: 'completed',
                base: { runId: baseRunId, bytes: Buffer.byteLength(baseContent), sha256: sha(baseContent) },
                append: Buffer.from(o.text),
                sha256: sha(content),
              });
              if (res.kind === 'base-mismatch') {
                // Only a base retention removed is refused.
                expect((await partition(ctx.svc, pk)).runs.some((r) => r.runId === baseRunId), 'a stored base is never refused').toBe(false);
                stats.refusedBases++;
                break;
              }
              expect(res).toMatchObject({ kind: 'stored', latest: true });
              if (baseRunId !== latest?.runId) stats.forks++;
              latest = { runId, content };
              written.set(runId, { content, completed: true });
              break;
            }
            case 'incomplete': {
              const runId = nextRun++;
              const res =
                o.asAppend && latest
                  ? await store.append(ids(), {
                      runId,
                      status: o.status,
                      base: { runId: latest.runId, bytes: Buffer.byteLength(latest.content), sha256: sha(latest.content) },
                      append: Buffer.from(o.text),
                      sha256: sha(latest.content + o.text),
                    })
                  : await store.write(ids(), { runId, status: o.status, body: Buffer.from((latest?.content ?? '') + o.text) });
              expect(res).toMatchObject({ kind: 'stored', latest: false });
              written.set(runId, { content: (latest?.content ?? '') + o.text, completed: false });
              break;
            }
            case 'clear':
              await store.clear({ organizationId: scope.org, agentId: scope.agent, conversationId: scope.conv });
              generation += 1;
              latest = undefined;
              written = new Map();
              break;
            case 'advance':
              t += o.ms;
              break;
            case 'retain':
              await pass();
              break;
          }
          await check(`after ${o.kind}`);
        }

        // The end: past every grace and RETAIN_FAILED_DAYS, passes until nothing is due, then the reconciler.
        t += 8 * DAY;
        for (let i = 0; i < 3; i++) {
          await pass();
          t += GRACE + MINUTE;
        }
        await check('after the final passes');
        const p = await partition(ctx.svc, pk);
        expect(p.head?.['retentionDueAtMs'], 'nothing is due any more').toBeUndefined();
        await reconcileFully(store);
        const objects = await objectsOf(ctx.svc, pk);
        expect([...objects.keys()].sort(), 'storage = what the retained records reference').toEqual([...referencedKeys(p)].sort());
        // Only what the settings keep: the latest and at most keep − 1 completed runs before it; nothing else.
        const current = p.runs.filter((r) => r.generation === generation);
        expect(current.every((r) => r.status === 'completed'), 'no run that did not complete').toBe(true);
        expect(current.length).toBeLessThanOrEqual(latest ? keep : 0);
        if (latest) expect(current.map((r) => r.runId)).toContain(latest.runId);
        expect(p.runs.filter((r) => r.generation !== generation), 'no run of an older generation').toEqual([]);
        const chainsUsed = new Set(p.runs.map((r) => r.chainId));
        expect(p.chains.filter((c) => !chainsUsed.has(c.chainId)), 'no chain without a run').toEqual([]);
        await check('after the reconciler');
      }),
      { numRuns: Number(process.env['RETENTION_RUNS'] ?? 15), endOnFailure: true },
    );
    // The property exercised deletions, forks and refused bases, not only writes.
    expect(stats.runsRemoved, JSON.stringify(stats)).toBeGreaterThan(0);
    expect(stats.objectsRemoved, JSON.stringify(stats)).toBeGreaterThan(0);
  }, 240_000);
});
