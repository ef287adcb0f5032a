/**
 * The retention decision (`planRetention`, functions/lib/store/retention.ts) as a pure function of a
 * conversation's records, the clock and the settings: which conversations expire (CONVERSATION_TTL_DAYS), which
 * runs and chains go, and when the conversation is next due. The storage side is in
 * test/integration/retention*.test.ts.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { planRetention, type PartitionState, type RetentionHead } from '../../functions/lib/store/retention.js';
import { DEFAULT_RETENTION, type RetentionSettings } from '../../functions/lib/store/retention-settings.js';
import type { ChainRecord, RunRecord } from '../../functions/lib/store/schema.js';
import type { TerminalStatus } from '../../functions/lib/contract.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const NOW = 1_900_000_000_000;
const SETTINGS: RetentionSettings = { ...DEFAULT_RETENTION, graceSeconds: 3600 };

function head(h: Partial<RetentionHead> = {}): RetentionHead {
  return {
    generation: 0,
    latestRunId: undefined,
    latestChainId: undefined,
    activityAtMs: NOW - DAY,
    retentionDueAtMs: NOW - DAY,
    agentId: 'a',
    conversationId: 'c',
    orgKey: 'o',
    ...h,
  };
}

function run(runId: number, r: { status?: TerminalStatus; createdAtMs?: number; generation?: number; chainId?: string } = {}): RunRecord {
  return {
    runId,
    status: r.status ?? 'completed',
    s3Key: `snapshots/o/a/c/${runId}/g0-x`,
    encoding: 'gzip',
    storedBytes: 10,
    sha256: 'x',
    bytes: 10,
    iat: 0,
    createdAtMs: r.createdAtMs ?? NOW - 30 * DAY,
    generation: r.generation ?? 0,
    storedSha256: undefined,
    chainId: r.chainId,
  };
}

/** A chain stamped at `updatedAtMs` (null: no stamp, a record from before stamps existed). */
function chain(chainId: string, updatedAtMs: number | null = NOW - 30 * DAY): ChainRecord {
  return { chainId, generation: 0, extents: [{ key: `k-${chainId}`, length: 5, sha256: 'h' }], end: 5, version: 1, updatedAtMs: updatedAtMs ?? undefined };
}

const plan = (state: PartitionState, settings: Partial<RetentionSettings> = {}, expiry = true) => planRetention(state, NOW, { ...SETTINGS, ...settings }, { expiry });
const ids = (runs: readonly RunRecord[]) => runs.map((r) => r.runId).sort((a, b) => a - b);

describe('expiry (CONVERSATION_TTL_DAYS)', () => {
  const state = (activityAtMs: number | undefined): PartitionState => ({ head: head({ activityAtMs, latestRunId: 1 }), runs: [run(1)], chains: [] });

  it('expires a conversation whose last write is at least CONVERSATION_TTL_DAYS old, and nothing else is done', () => {
    expect(plan(state(NOW - 30 * DAY), { conversationTtlDays: 30 })).toEqual({ expire: true, deleteRuns: [], stampChains: [], deleteChains: [], nextDueAtMs: undefined });
    expect(plan(state(NOW - 31 * DAY), { conversationTtlDays: 30 }).expire).toBe(true);
  });

  it('does not expire one written more recently; it is due again when its TTL ends', () => {
    const p = plan(state(NOW - 30 * DAY + 1), { conversationTtlDays: 30 });
    expect(p.expire).toBe(false);
    expect(p.nextDueAtMs).toBe(NOW + 1);
  });

  it('never expires with the TTL off (0), without an expiry wired, or without a known last write', () => {
    expect(plan(state(NOW - 400 * DAY), { conversationTtlDays: 0 })).toMatchObject({ expire: false, nextDueAtMs: undefined });
    expect(plan(state(NOW - 400 * DAY), { conversationTtlDays: 30 }, false)).toMatchObject({ expire: false, nextDueAtMs: undefined });
    expect(plan(state(undefined), { conversationTtlDays: 30 })).toMatchObject({ expire: false, nextDueAtMs: undefined });
  });

  it('is exactly "activityAtMs + TTL days <= now" for any activity and TTL (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 400 * DAY }), fc.integer({ min: 1, max: 365 }), (age, ttlDays) => {
        const p = plan(state(NOW - age), { conversationTtlDays: ttlDays });
        expect(p.expire).toBe(age >= ttlDays * DAY);
        if (!p.expire) expect(p.nextDueAtMs).toBe(NOW - age + ttlDays * DAY);
      }),
    );
  });
});

describe('runs', () => {
  it('keeps the latest and the RETAIN_COMPLETED_RUNS − 1 highest below it, whatever the order of the records', () => {
    const runs = [run(2), run(9, { createdAtMs: NOW - DAY }), run(4), run(7), run(1), run(8)];
    expect(ids(plan({ head: head({ latestRunId: 8 }), runs, chains: [] }).deleteRuns)).toEqual([1, 2]);
    expect(ids(plan({ head: head({ latestRunId: 8 }), runs, chains: [] }, { retainCompletedRuns: 1 }).deleteRuns)).toEqual([1, 2, 4, 7]);
  });

  it('never deletes the latest, a run above it, or a run younger than the grace', () => {
    const young = NOW - HOUR + 1;
    const runs = [run(1, { createdAtMs: young }), run(2), run(3), run(5, { createdAtMs: NOW - 2 * DAY }), run(4)];
    const p = plan({ head: head({ latestRunId: 4 }), runs, chains: [] }, { retainCompletedRuns: 1 });
    expect(ids(p.deleteRuns)).toEqual([2, 3]);
    // Due when run 1 leaves the grace; run 5 (in flight) when it is abandoned.
    expect(p.nextDueAtMs).toBe(young + HOUR);
  });

  it('deletes runs that did not complete after RETAIN_FAILED_DAYS (and the grace), above or below the latest', () => {
    const runs = [run(1, { status: 'failed', createdAtMs: NOW - 7 * DAY }), run(2), run(3, { status: 'cancelled', createdAtMs: NOW - 7 * DAY + 1 }), run(4, { status: 'timeout' })];
    const p = plan({ head: head({ latestRunId: 2 }), runs, chains: [] });
    expect(ids(p.deleteRuns)).toEqual([1, 4]);
    expect(p.nextDueAtMs).toBe(NOW + 1);
    // A grace longer than RETAIN_FAILED_DAYS wins.
    expect(ids(plan({ head: head({ latestRunId: 2 }), runs, chains: [] }, { graceSeconds: 8 * 86_400 }).deleteRuns)).toEqual([4]);
  });

  it('deletes runs of an older generation past the grace, and never judges a newer one', () => {
    const runs = [run(1, { generation: 0 }), run(2, { generation: 0, createdAtMs: NOW - 10 }), run(3, { generation: 1 }), run(4, { generation: 2 })];
    const p = plan({ head: head({ generation: 1, latestRunId: 3 }), runs, chains: [] });
    expect(ids(p.deleteRuns)).toEqual([1]);
    expect(p.nextDueAtMs).toBe(NOW - 10 + HOUR);
  });

  it('with nothing published, keeps completed runs (in flight) until RETAIN_FAILED_DAYS, and without a HEAD judges generation 0', () => {
    const runs = [run(1, { createdAtMs: NOW - 6 * DAY }), run(2, { createdAtMs: NOW - 8 * DAY })];
    expect(ids(plan({ head: head(), runs, chains: [] }).deleteRuns)).toEqual([2]);
    expect(ids(plan({ head: undefined, runs, chains: [] }).deleteRuns)).toEqual([2]);
  });
});

describe('chains', () => {
  it('keeps a chain a kept run or HEAD references; stamps one that loses its last run now; deletes one unreferenced past the grace', () => {
    const runs = [run(1, { chainId: 'A' }), run(2, { chainId: 'A' }), run(3, { chainId: 'B' }), run(4, { chainId: 'C' })];
    const chains = [chain('A'), chain('B'), chain('C'), chain('D'), chain('E', NOW - HOUR + 1), chain('F', null), chain('G', NOW - HOUR)];
    const p = plan({ head: head({ latestRunId: 4, latestChainId: 'C' }), runs, chains }, { retainCompletedRuns: 2 });
    expect(ids(p.deleteRuns)).toEqual([1, 2]);
    expect(p.stampChains.map((c) => c.chainId).sort()).toEqual(['A', 'F']); // A lost its runs; F has no stamp yet
    expect(p.deleteChains.map((c) => c.chainId).sort()).toEqual(['D', 'G']);
    expect(p.nextDueAtMs).toBe(NOW - HOUR + 1 + HOUR); // E leaves its grace first
  });

  it('every decision respects the invariants, for random conversations (property)', () => {
    const arb = fc.record({
      latest: fc.option(fc.integer({ min: 1, max: 12 }), { nil: undefined }),
      keep: fc.integer({ min: 1, max: 4 }),
      runs: fc.uniqueArray(
        fc.record({
          runId: fc.integer({ min: 1, max: 12 }),
          status: fc.constantFrom<TerminalStatus>('completed', 'completed', 'failed', 'timeout'),
          age: fc.integer({ min: 0, max: 10 * DAY }),
          chain: fc.constantFrom(undefined, 'A', 'B', 'C'),
          generation: fc.constantFrom(0, 1, 1, 1),
        }),
        { selector: (r) => r.runId, maxLength: 10 },
      ),
      chains: fc.uniqueArray(fc.record({ id: fc.constantFrom('A', 'B', 'C', 'D'), age: fc.option(fc.integer({ min: 0, max: 3 * HOUR }), { nil: undefined }) }), { selector: (c) => c.id }),
    });
    fc.assert(
      fc.property(arb, (a) => {
        const runs = a.runs.map((r) => run(r.runId, { status: r.status, createdAtMs: NOW - r.age, generation: r.generation, ...(r.chain !== undefined && { chainId: r.chain }) }));
        const latestRun = runs.find((r) => r.runId === a.latest && r.generation === 1 && r.status === 'completed');
        const h = head({ generation: 1, latestRunId: latestRun?.runId, latestChainId: latestRun?.chainId });
        const chains = a.chains.map((c) => chain(c.id, c.age === undefined ? null : NOW - c.age));
        const p = plan({ head: h, runs, chains }, { retainCompletedRuns: a.keep });
        const deleted = new Set(p.deleteRuns.map((r) => r.runId));
        const kept = runs.filter((r) => !deleted.has(r.runId));
        if (latestRun) expect(deleted.has(latestRun.runId)).toBe(false);
        for (const r of p.deleteRuns) expect(r.createdAtMs, 'nothing younger than the grace').toBeLessThanOrEqual(NOW - HOUR);
        for (const r of p.deleteRuns) {
          if (r.generation === 1 && r.status === 'completed' && latestRun && r.runId < latestRun.runId) {
            const higher = runs.filter((o) => o.generation === 1 && o.status === 'completed' && o.runId > r.runId && o.runId <= latestRun.runId);
            expect(higher.length, 'only beyond the kept completed runs').toBeGreaterThanOrEqual(a.keep);
          } else if (r.generation === 1) {
            expect(r.createdAtMs, 'in flight or not completed: only after RETAIN_FAILED_DAYS').toBeLessThanOrEqual(NOW - 7 * DAY);
          }
        }
        // No chain a kept run (or HEAD) references is stamped or deleted; a deleted chain is referenced by no run at all.
        const referenced = new Set([...kept.map((r) => r.chainId), h.latestChainId]);
        for (const c of [...p.stampChains, ...p.deleteChains]) expect(referenced.has(c.chainId)).toBe(false);
        for (const c of p.deleteChains) {
          expect(runs.some((r) => r.chainId === c.chainId)).toBe(false);
          expect(c.updatedAtMs! + HOUR).toBeLessThanOrEqual(NOW);
        }
        if (p.nextDueAtMs !== undefined) expect(p.nextDueAtMs).toBeGreaterThan(NOW);
      }),
      { numRuns: 500 },
    );
  });
});
