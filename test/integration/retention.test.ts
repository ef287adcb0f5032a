/**
 * The retention pass (docs/DESIGN.md § Retention) against the real write path and the emulators: every rule,
 * with the pass's clock injected (writes use the service's real clock; the pass reads "later" from its own).
 * Each test checks what is kept byte for byte (hydrate, and the retained runs' bytes), what is gone from
 * DynamoDB and S3, and that the counts the pass reports are what disappeared.
 */
import { describe, expect, it } from 'vitest';
import { readRunBytes } from '../../functions/lib/store/chain.js';
import { GONE } from '../../functions/lib/store/chain.js';
import { ERRORS } from '../../functions/lib/contract.js';
import { failedRunExpiresAt } from '../../functions/lib/store/retention-settings.js';
import type { ExpiringConversation } from '../../functions/lib/store/retention.js';
import { expectError, expectHydrate, len, line, ok, pkOf, sha } from '../helpers/append.js';
import { FaultPlan, faultyStore, gate } from '../helpers/faults.js';
import { freshScope, useLocalService, type Api, type Scope } from '../helpers/service.js';
import { bytesOf, clockedStore, DAY, HOUR, isDue, MINUTE, objectsOf, partition, referencedKeys } from '../helpers/retention.js';

const ctx = useLocalService();
const GRACE = HOUR; // ORPHAN_GRACE_SECONDS default

/** POST an append of `added` on run `baseRunId` whose content is `base`. */
async function append(api: Api, scope: Scope, runId: number, baseRunId: number, base: string, added: string, status = 'completed'): Promise<Response> {
  const token = await api.token(scope, { runId });
  return api.post(token, { runId, terminalStatus: status, appendJsonl: added, base: { runId: baseRunId, bytes: len(base), sha256: sha(base) }, sha256: sha(base + added) });
}

/** The retained run's bytes, as a tool would read them (verified against its record). */
async function runText(scope: Scope, runId: number): Promise<string | undefined> {
  const p = await partition(ctx.svc, pkOf(scope));
  const run = p.runs.find((r) => r.runId === runId);
  if (!run) return undefined;
  const bytes = await readRunBytes(ctx.svc.store, pkOf(scope), run);
  return bytes === GONE ? undefined : bytes.toString('utf8');
}

/** Storage is exactly what the records reference, and HEAD's counters say what is stored. */
async function expectConsistent(scope: Scope): Promise<void> {
  const pk = pkOf(scope);
  const p = await partition(ctx.svc, pk);
  const objects = await objectsOf(ctx.svc, pk);
  expect([...objects.keys()].sort(), 'objects = referenced objects').toEqual([...referencedKeys(p)].sort());
  expect(p.head?.['runCount'], 'HEAD runCount').toBe(p.runs.length);
  expect(p.head?.['storedBytesTotal'], 'HEAD storedBytesTotal').toBe(bytesOf(objects));
}

describe('completed runs: the latest and RETAIN_COMPLETED_RUNS − 1 before it', () => {
  it('deletes older completed runs past the grace, then their chains a grace period after their last run', async () => {
    const { api, svc } = ctx;
    const scope = freshScope('ret-keep');
    const pk = pkOf(scope);
    const content = (r: number) => line({ run: r, text: `run ${r} ${'x'.repeat(r * 40)}` });
    // Each run a different file: six chains of one object each.
    for (let r = 1; r <= 6; r++) await ok(api.write(scope, r, content(r)));
    const t0 = Date.now();
    const before = await partition(svc, pk);
    expect(before.chains).toHaveLength(6);
    const objects0 = await objectsOf(svc, pk);
    await expectConsistent(scope);

    // Within the grace nothing is deleted; the conversation becomes due when the oldest doomed run leaves it.
    const early = await clockedStore(svc, () => t0 + MINUTE).retainConversation(pk);
    expect(early).toMatchObject({ runs: 0, objects: 0, bytes: 0, expired: false });
    expect(early.nextDueAtMs).toBe(Math.min(...before.runs.slice(0, 3).map((r) => r.createdAtMs)) + GRACE);
    expect((await partition(svc, pk)).runs).toHaveLength(6);

    // Past the grace: runs 1–3 go; their chains are only stamped (an append may still hold a base in them).
    const t1 = t0 + GRACE + MINUTE;
    const pass1 = await clockedStore(svc, () => t1).retainConversation(pk);
    expect(pass1).toMatchObject({ runs: 3, objects: 0, bytes: 0, nextDueAtMs: t1 + GRACE });
    const mid = await partition(svc, pk);
    expect(mid.runs.map((r) => r.runId)).toEqual([4, 5, 6]);
    expect(mid.chains).toHaveLength(6);
    expect(mid.chains.filter((c) => c.updatedAtMs === t1)).toHaveLength(3);
    expect(mid.head?.['retentionDueAtMs']).toBe(t1 + GRACE);
    expect(await objectsOf(svc, pk)).toEqual(objects0);

    // A grace period later the chains go, objects first counted as they are deleted.
    const t2 = t1 + GRACE;
    const pass2 = await clockedStore(svc, () => t2).retainConversation(pk);
    const after = await objectsOf(svc, pk);
    expect(pass2).toMatchObject({ runs: 0, objects: 3, bytes: bytesOf(objects0) - bytesOf(after), nextDueAtMs: undefined });
    expect(after.size).toBe(3);
    expect((await partition(svc, pk)).head?.['retentionDueAtMs']).toBeUndefined();
    await expectHydrate(api, scope, 6, content(6));
    for (const r of [4, 5]) expect(await runText(scope, r)).toBe(content(r));
    await expectConsistent(scope);
  });

  it('deletes the records of runs that share one chain without touching the objects the kept runs read', async () => {
    const { api, svc } = ctx;
    const scope = freshScope('ret-chain');
    const pk = pkOf(scope);
    // One growing transcript: whole-file writes (old workers) and appends (new workers) alternate.
    const contents = [''];
    for (let r = 1; r <= 9; r++) {
      const added = line({ run: r, text: 'é🚀'.repeat(r * 7) });
      if (r % 2 === 0) await ok(append(api, scope, r, r - 1, contents[r - 1]!, added));
      else await ok(api.write(scope, r, contents[r - 1]! + added));
      contents.push(contents[r - 1]! + added);
    }
    const content = contents[9]!;
    const before = await partition(svc, pk);
    expect(new Set(before.runs.map((r) => r.chainId)).size).toBe(1);
    const objects0 = await objectsOf(svc, pk);

    const res = await clockedStore(svc, () => Date.now() + GRACE + MINUTE).retainConversation(pk);
    expect(res).toMatchObject({ runs: 6, objects: 0, bytes: 0, nextDueAtMs: undefined });
    expect((await partition(svc, pk)).runs.map((r) => r.runId)).toEqual([7, 8, 9]);
    expect(await objectsOf(svc, pk)).toEqual(objects0);
    await expectHydrate(api, scope, 9, content);
    expect(await runText(scope, 7)).toBe(contents[7]);
    expect(await runText(scope, 8)).toBe(contents[8]);
    // A delta from a retained run still works; an append on a deleted base is refused (the client sends the file).
    await ok(append(api, scope, 10, 9, content, line({ run: 10 })));
    await expectError(append(api, scope, 11, 3, 'x', 'y'), ERRORS.baseMismatch);
    await expectConsistent(scope);
  });

  it('keeps RETAIN_COMPLETED_RUNS as configured (1: only the latest)', async () => {
    const { api, svc } = ctx;
    const scope = freshScope('ret-one');
    const pk = pkOf(scope);
    for (let r = 1; r <= 3; r++) await ok(api.write(scope, r, `only ${r}\n`));
    const later = Date.now() + GRACE + MINUTE;
    const res = await clockedStore(svc, () => later, { retention: { retainCompletedRuns: 1 } }).retainConversation(pk);
    expect(res.runs).toBe(2);
    expect((await partition(svc, pk)).runs.map((r) => r.runId)).toEqual([3]);
    await clockedStore(svc, () => later + GRACE, { retention: { retainCompletedRuns: 1 } }).retainConversation(pk);
    await expectHydrate(api, scope, 3, 'only 3\n');
    await expectConsistent(scope);
  });

  it('counts the latest by run id, not by arrival: a late lower run is one of the earlier runs', async () => {
    const { api, svc } = ctx;
    const scope = freshScope('ret-order');
    const pk = pkOf(scope);
    for (const r of [5, 1, 4, 2, 3]) await ok(api.write(scope, r, `order ${r}\n`));
    await clockedStore(svc, () => Date.now() + GRACE + MINUTE).retainConversation(pk);
    expect((await partition(svc, pk)).runs.map((r) => r.runId)).toEqual([3, 4, 5]);
    await expectHydrate(api, scope, 5, 'order 5\n');
  });
});

describe('runs that did not complete', () => {
  it('carry the DynamoDB TTL backstop, are kept RETAIN_FAILED_DAYS and then deleted with their objects', async () => {
    const { api, svc } = ctx;
    const scope = freshScope('ret-failed');
    const pk = pkOf(scope);
    await ok(api.write(scope, 1, 'done\n'));
    await ok(api.write(scope, 2, 'failed\n', 'failed'));
    await ok(append(api, scope, 3, 1, 'done\n', 'timed out\n', 'timeout'));
    await ok(api.write(scope, 4, 'cancelled\n', 'cancelled'));
    const p = await partition(svc, pk);
    for (const r of p.runs) {
      if (r.status === 'completed') expect(r.expiresAt, `run ${r.runId}`).toBeUndefined();
      else expect(r.expiresAt, `run ${r.runId}`).toBe(Math.floor(r.createdAtMs / 1000) + 8 * 86_400);
      if (r.status !== 'completed') expect(r.expiresAt).toBe(failedRunExpiresAt(r.createdAtMs, 7));
    }
    const oldest = Math.min(...p.runs.filter((r) => r.status !== 'completed').map((r) => r.createdAtMs));
    const objects0 = await objectsOf(svc, pk);

    const sixDays = await clockedStore(svc, () => oldest + 6 * DAY).retainConversation(pk);
    expect(sixDays).toMatchObject({ runs: 0, nextDueAtMs: oldest + 7 * DAY });
    expect((await partition(svc, pk)).head?.['retentionDueAtMs']).toBe(oldest + 7 * DAY);

    const res = await clockedStore(svc, () => oldest + 7 * DAY + 10 * MINUTE).retainConversation(pk);
    const after = await objectsOf(svc, pk);
    expect(res).toMatchObject({ runs: 3, objects: 3, bytes: bytesOf(objects0) - bytesOf(after), nextDueAtMs: undefined });
    expect((await partition(svc, pk)).runs.map((r) => r.runId)).toEqual([1]);
    await expectHydrate(api, scope, 1, 'done\n');
    await expectConsistent(scope);
  });

  it('honours RETAIN_FAILED_DAYS in the TTL it stamps', async () => {
    const { svc } = ctx;
    const scope = freshScope('ret-ttl');
    const store = clockedStore(svc, () => 1_800_000_000_123, { retention: { retainFailedDays: 30 } });
    const ids = { organizationId: scope.org, agentId: scope.agent, conversationId: scope.conv, issuedAt: 1_800_000_000, generation: 0 };
    expect(await store.write(ids, { runId: 1, status: 'failed', body: Buffer.from('x\n') })).toMatchObject({ kind: 'stored' });
    const [run] = (await partition(svc, pkOf(scope))).runs;
    expect(run!.expiresAt).toBe(1_800_000_000 + 31 * 86_400);
  });
});

describe('never deletes what a run in flight or the latest needs', () => {
  it('keeps a completed run claimed above the latest (not yet published) until RETAIN_FAILED_DAYS', async () => {
    const { api, svc } = ctx;
    const scope = freshScope('ret-flight');
    const pk = pkOf(scope);
    await ok(api.write(scope, 1, 'one\n'));
    await ok(api.write(scope, 2, 'two\n'));
    // Run 3 claims, then its writer dies before the publish (the last UpdateItem of its write).
    const ids = { organizationId: scope.org, agentId: scope.agent, conversationId: scope.conv, issuedAt: Math.floor(Date.now() / 1000), generation: 0 };
    const plan = new FaultPlan().failBeforeCommand('UpdateItemCommand', 1);
    await expect(faultyStore(svc, plan).write(ids, { runId: 3, status: 'completed', body: Buffer.from('three in flight\n') })).rejects.toThrow('injected');
    const created = (await partition(svc, pk)).runs.find((r) => r.runId === 3)!.createdAtMs;
    await expectHydrate(api, scope, 2, 'two\n');

    for (const later of [2 * GRACE, 2 * DAY, 7 * DAY - MINUTE]) {
      const res = await clockedStore(svc, () => created + later).retainConversation(pk);
      expect(res.runs).toBe(0);
      expect(res.nextDueAtMs).toBe(created + 7 * DAY);
    }
    expect((await partition(svc, pk)).runs.map((r) => r.runId)).toEqual([1, 2, 3]);
    // Its writer's retry finishes the publish (409: it was claimed), and it is served.
    expect((await api.write(scope, 3, 'three in flight\n')).status).toBe(409);
    await expectHydrate(api, scope, 3, 'three in flight\n');
  });

  it('deletes a claim above the latest that never published in RETAIN_FAILED_DAYS (abandoned)', async () => {
    const { svc } = ctx;
    const scope = freshScope('ret-abandoned');
    const pk = pkOf(scope);
    const ids = { organizationId: scope.org, agentId: scope.agent, conversationId: scope.conv, issuedAt: Math.floor(Date.now() / 1000), generation: 0 };
    const plan = new FaultPlan().failBeforeCommand('UpdateItemCommand', 1);
    await expect(faultyStore(svc, plan).write(ids, { runId: 1, status: 'completed', body: Buffer.from('never published\n') })).rejects.toThrow('injected');
    const [run] = (await partition(svc, pk)).runs;
    const res = await clockedStore(svc, () => run!.createdAtMs + 7 * DAY).retainConversation(pk);
    expect(res.runs).toBe(1);
    expect((await partition(svc, pk)).runs).toEqual([]);
  });

  it('an append that extends a chain while the pass is removing its last runs keeps the chain and is served', async () => {
    const { api, svc } = ctx;
    const scope = freshScope('ret-race');
    const pk = pkOf(scope);
    // Chain A: runs 1, 2 (2 is its end). Chain B: runs 3–5 (a rewrite, then appends). Latest: 5.
    const a1 = line({ a: 1 });
    const a2 = a1 + line({ a: 2 });
    await ok(api.write(scope, 1, a1));
    await ok(api.write(scope, 2, a2));
    let b = line({ b: 3 });
    await ok(api.write(scope, 3, b));
    for (const r of [4, 5]) {
      await ok(append(api, scope, r, r - 1, b, line({ b: r })));
      b += line({ b: r });
    }
    const chainA = (await partition(svc, pk)).runs.find((r) => r.runId === 2)!.chainId!;
    // The pass stops just before its first write (the stamp of chain A); meanwhile a stale pod appends run
    // 6 on run 2, which extends chain A (its end) and becomes the latest.
    const paused = gate();
    const resume = gate();
    const plan = new FaultPlan().onCall(async (name) => {
      if (name === 'UpdateItemCommand' && !plan.calls.slice(0, -1).includes('UpdateItemCommand')) {
        paused.open();
        await resume.wait;
      }
    });
    const pass = clockedStore(svc, () => Date.now() + GRACE + MINUTE, { plan, retention: { retainCompletedRuns: 3 } }).retainConversation(pk);
    await paused.wait;
    const a6 = a2 + line({ a: 6 });
    await ok(append(api, scope, 6, 2, a2, line({ a: 6 })));
    resume.open();
    const res = await pass;
    expect(res.runs).toBe(2); // runs 1 and 2: records only, the chain stays
    const p = await partition(svc, pk);
    expect(p.runs.map((r) => r.runId)).toEqual([3, 4, 5, 6]);
    expect(p.chains.find((c) => c.chainId === chainA)).toBeDefined();
    await expectHydrate(api, scope, 6, a6);
    // Later passes keep chain A: run 6 (the latest) references it.
    for (const later of [2 * GRACE, 4 * GRACE]) await clockedStore(svc, () => Date.now() + later).retainConversation(pk);
    await expectHydrate(api, scope, 6, a6);
    expect(await runText(scope, 5)).toBe(b);
    await expectConsistent(scope);
  });

  it('runs of a generation before a clear that died are deleted; the new generation is kept', async () => {
    const { api, svc } = ctx;
    const scope = freshScope('ret-gen');
    const pk = pkOf(scope);
    await ok(api.write(scope, 1, 'old one\n'));
    await ok(api.write(scope, 2, 'old two\n', 'failed'));
    // The clear fences HEAD, then dies before deleting anything.
    const plan = new FaultPlan().failBeforeCommand('DeleteObjectsCommand');
    await expect(faultyStore(svc, plan).clear({ organizationId: scope.org, agentId: scope.agent, conversationId: scope.conv })).rejects.toThrow('injected');
    await ok(api.write(scope, 3, 'new three\n'));
    const before = await partition(svc, pk);
    expect(before.runs.map((r) => [r.runId, r.generation])).toEqual([
      [1, 0],
      [2, 0],
      [3, 1],
    ]);
    const t = Date.now() + GRACE + MINUTE;
    const res = await clockedStore(svc, () => t).retainConversation(pk);
    expect(res).toMatchObject({ runs: 2, objects: 1 }); // run 2's own object; run 1's chain is stamped
    await clockedStore(svc, () => t + GRACE).retainConversation(pk);
    expect((await partition(svc, pk)).runs.map((r) => r.runId)).toEqual([3]);
    expect((await partition(svc, pk)).chains).toHaveLength(1);
    await expectHydrate(api, scope, 3, 'new three\n');
    expect([...(await objectsOf(svc, pk)).keys()].sort()).toEqual([...referencedKeys(await partition(svc, pk))].sort());
  });
});

describe('HEAD: counters and the next due time', () => {
  it('a write during the pass keeps its due time; the counters still lose what was removed', async () => {
    const { api, svc } = ctx;
    const scope = freshScope('ret-write');
    const pk = pkOf(scope);
    for (let r = 1; r <= 4; r++) await ok(api.write(scope, r, `w${r}\n`));
    const paused = gate();
    const resume = gate();
    const plan = new FaultPlan().onCall(async (name) => {
      // The HEAD write-back is the pass's only UpdateItem here (the chains are stamped first: 1 of them).
      if (name === 'UpdateItemCommand' && plan.calls.filter((c) => c === 'UpdateItemCommand').length === 2) {
        paused.open();
        await resume.wait;
      }
    });
    const pass = clockedStore(svc, () => Date.now() + GRACE + MINUTE, { plan }).retainConversation(pk);
    await paused.wait;
    await ok(api.write(scope, 5, 'w5\n'));
    const written = (await partition(svc, pk)).head!;
    resume.open();
    expect(await pass).toMatchObject({ runs: 1 });
    const head = (await partition(svc, pk)).head!;
    expect(head['retentionDueAtMs']).toBe(written['retentionDueAtMs']);
    expect(head['activityAtMs']).toBe(written['activityAtMs']);
    expect(head['runCount']).toBe((written['runCount'] as number) - 1);
    expect(await isDue(svc, pk, Date.now())).toBe(true);
  });
});

describe('the pass over the work queue (runRetention)', () => {
  it('retains every conversation due by now, takes it out of the queue, and leaves conversations not yet due', async () => {
    const { api, svc } = ctx;
    const due = freshScope('ret-due');
    for (let r = 1; r <= 4; r++) await ok(api.write(due, r, `due ${r}\n`));
    const t = Date.now() + GRACE + MINUTE;
    expect(await isDue(svc, pkOf(due), t)).toBe(true); // every write makes its conversation due
    const result = await clockedStore(svc, () => t).runRetention();
    expect(result.failed).toBe(0);
    expect(result.complete).toBe(true);
    expect(result.conversations).toBeGreaterThanOrEqual(1);
    expect(result.runs).toBeGreaterThanOrEqual(1);
    expect((await partition(svc, pkOf(due))).runs.map((r) => r.runId)).toEqual([2, 3, 4]);
    // Its stamped chain makes it due again a grace period later, not before.
    expect(await isDue(svc, pkOf(due), t)).toBe(false);
    expect(await isDue(svc, pkOf(due), t + GRACE)).toBe(true);
    const second = await clockedStore(svc, () => t + GRACE).runRetention();
    expect(second.failed).toBe(0);
    expect(await isDue(svc, pkOf(due), t + 10 * DAY)).toBe(false);
    await expectConsistent(due);
  });

  it('stops at its deadline with everything still due, and reports failed conversations without stopping', async () => {
    const { api, svc } = ctx;
    const scope = freshScope('ret-deadline');
    await ok(api.write(scope, 1, 'd1\n'));
    await ok(api.write(scope, 2, 'd2\n'));
    const t = Date.now() + GRACE + MINUTE;
    const late = await clockedStore(svc, () => t).runRetention({ deadlineAt: Date.now() - 1 });
    expect(late).toMatchObject({ complete: false, conversations: 0, runs: 0 });
    expect(await isDue(svc, pkOf(scope), t)).toBe(true);

    // Every partition Query fails: each due conversation is counted failed, logged, and stays due.
    // This conversation's partition Query fails: it is counted failed and logged, the pass goes on, and it stays due.
    const errors: Record<string, unknown>[] = [];
    const failingStore = clockedStore(svc, () => t);
    failingStore.ddb.middlewareStack.add(
      (next, context) => async (args) => {
        const input = args.input as { IndexName?: string; ExpressionAttributeValues?: Record<string, { S?: string }> };
        if (context.commandName === 'QueryCommand' && !input.IndexName && input.ExpressionAttributeValues?.[':pk']?.S === pkOf(scope)) throw new Error('injected: partition query');
        return next(args);
      },
      { step: 'initialize', name: 'failOnePartition' },
    );
    const log = { info: () => {}, warn: () => {}, error: (_m: string, f: Record<string, unknown>) => void errors.push(f) };
    const failing = await failingStore.runRetention({ log });
    expect(failing.failed).toBe(1);
    expect(failing.complete).toBe(true);
    expect(errors).toEqual([expect.objectContaining({ pk: pkOf(scope) })]);
    expect(await isDue(svc, pkOf(scope), t)).toBe(true);
    expect((await partition(svc, pkOf(scope))).runs).toHaveLength(2);
  });

  it('hands idle conversations past CONVERSATION_TTL_DAYS to the injected expiry, and only those', async () => {
    const { api, svc } = ctx;
    const idle = freshScope('ret-idle');
    await ok(api.write(idle, 1, 'idle\n'));
    const activity = (await partition(svc, pkOf(idle))).head!['activityAtMs'] as number;
    const expired: string[] = [];
    const expireConversation = async (pk: string, c: ExpiringConversation) => {
      expect(c).toMatchObject({ pk, activityAtMs: activity, agentId: idle.agent, conversationId: idle.conv });
      expired.push(pk);
      return { runs: 1, objects: 1, bytes: 10 };
    };
    const store = (now: number) => clockedStore(svc, () => now, { retention: { conversationTtlDays: 30 } });
    // Before the TTL: retained as usual, and due again when the TTL ends.
    const early = await store(activity + DAY).retainConversation(pkOf(idle), { expireConversation });
    expect(early).toMatchObject({ expired: false, nextDueAtMs: activity + 30 * DAY });
    expect(expired).toEqual([]);
    // At the TTL: expired, by the injected erasure.
    const at = await store(activity + 30 * DAY).retainConversation(pkOf(idle), { expireConversation });
    expect(at).toMatchObject({ expired: true, runs: 1, objects: 1, bytes: 10 });
    expect(expired).toEqual([pkOf(idle)]);
    // Without an expiry wired, the TTL expires nothing (and does not make the conversation due).
    const unwired = await store(activity + 31 * DAY).retainConversation(pkOf(idle));
    expect(unwired).toMatchObject({ expired: false, nextDueAtMs: undefined });
    await expectHydrate(api, idle, 1, 'idle\n');
  });
});

describe('the local service', () => {
  it('runs a pass on demand (svc.runRetention) and never two at once', async () => {
    const { api, svc } = ctx;
    const scope = freshScope('ret-local');
    await ok(api.write(scope, 1, 'l1\n'));
    const [a, b] = await Promise.all([svc.runRetention(), svc.runRetention()]);
    expect(a.failed + b.failed).toBe(0);
    // Real clock: within the grace, nothing of this conversation goes.
    await expectHydrate(api, scope, 1, 'l1\n');
    expect((await partition(svc, pkOf(scope))).runs).toHaveLength(1);
  });
});
