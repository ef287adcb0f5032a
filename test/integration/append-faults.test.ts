/**
 * I3 for the append path (issue 12): fail the N-th AWS call of an append — before it is sent and after
 * it took effect — for every N, for a plain append and for one that compacts the chain. Hydrate must
 * serve the old or the new content (never torn, never 500), a retry of the same append on a healthy
 * service converges (200, or 409 when the crashed attempt had claimed the run), and the chain keeps
 * accepting appends afterwards.
 */
import { DEFAULT_CHAIN_MAX_EXTENTS } from '../../functions/lib/store/chain.js';
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { FaultPlan, withFaultyService } from '../helpers/faults.js';
import { Api, freshScope, useLocalService, type Scope } from '../helpers/service.js';

const ctx = useLocalService();

const sha = (s: string) => createHash('sha256').update(s, 'utf8').digest('hex');
const len = (s: string) => Buffer.byteLength(s, 'utf8');


/** POST an append of `added` on top of run `baseRunId` whose content is `base`. */
async function append(api: Api, scope: Scope, runId: number, baseRunId: number, base: string, added: string): Promise<Response> {
  const token = await api.token(scope, { runId });
  return api.post(token, {
    runId,
    terminalStatus: 'completed',
    appendJsonl: added,
    base: { runId: baseRunId, bytes: len(base), sha256: sha(base) },
    sha256: sha(base + added),
  });
}

async function hydrateText(api: Api, scope: Scope): Promise<{ runId: number; text: string } | undefined> {
  const h = await api.hydrate(scope); // throws on anything but 200/404 (a 500 INTEGRITY included)
  return h && { runId: h.runId, text: h.body.toString('utf8') };
}

const turn = (run: number, n: number) => JSON.stringify({ run, n, text: `tür ${run} — 🚀 `.repeat(5 + run) }) + (run % 2 ? '\r\n' : '\n');

/**
 * Seeds a conversation: run 1 written whole, then `appends` appends (runs 2..). Returns the latest run
 * and its content.
 */
async function seed(api: Api, scope: Scope, appends: number, n: number): Promise<{ runId: number; content: string }> {
  let content = turn(1, n);
  const first = await api.write(scope, 1, content);
  expect(first.status).toBe(200);
  let runId = 1;
  for (let i = 0; i < appends; i++) {
    const added = turn(runId + 1, n);
    const res = await append(api, scope, runId + 1, runId, content, added);
    expect(res.status, await res.clone().text()).toBe(200);
    runId += 1;
    content += added;
  }
  return { runId, content };
}

const cases = [
  // run 1 + 0 appends: the chain has 1 object; the append adds a second (no compaction).
  { name: 'plain append', appends: 0 },
  // run 1 + (CHAIN_MAX_EXTENTS - 1) appends: the chain is at its bound; the next append compacts.
  { name: 'append that compacts', appends: DEFAULT_CHAIN_MAX_EXTENTS - 1 },
] as const;

describe('append survives a crash at every AWS call (I3)', () => {
  for (const c of cases) {
    it(`${c.name}: the clean call sequence`, async () => {
      const { api } = ctx;
      const scope = freshScope('af-probe');
      const { runId, content } = await seed(api, scope, c.appends, 0);
      const plan = new FaultPlan();
      const res = await withFaultyService(ctx.svc, plan, (a) => append(a, scope, runId + 1, runId, content, 'x\n'));
      expect(res.status).toBe(200);
      // Admission (HEAD + own RUN + base RUN; HEAD's cached layout of the base's chain stands in for a read
      // of the CHAIN record), [compaction: read the merged objects], the new object, the chain's new layout,
      // [delete the merged objects], claim, publish.
      const expected =
        c.appends === 0
          ? ['BatchGetItemCommand', 'PutObjectCommand', 'UpdateItemCommand', 'PutItemCommand', 'UpdateItemCommand']
          : ['BatchGetItemCommand', ...Array<string>(DEFAULT_CHAIN_MAX_EXTENTS).fill('GetObjectCommand'), 'PutObjectCommand', 'UpdateItemCommand', 'DeleteObjectsCommand', 'PutItemCommand', 'UpdateItemCommand'];
      expect(plan.calls).toEqual(expected);
      const h = await hydrateText(api, scope);
      expect(h).toEqual({ runId: runId + 1, text: content + 'x\n' });
    });

    for (const mode of ['before', 'after'] as const) {
      it(`${c.name}: fails call N ${mode} it is made, for every N: old or new, never torn; the retry converges; the chain still extends`, async () => {
        const { api } = ctx;
        const probe = freshScope('af-count');
        const seeded = await seed(api, probe, c.appends, 0);
        const counter = new FaultPlan();
        const clean = await withFaultyService(ctx.svc, counter, (a) => append(a, probe, seeded.runId + 1, seeded.runId, seeded.content, 'probe\n'));
        expect(clean.status).toBe(200);
        const total = counter.calls.length;
        expect(total).toBeGreaterThanOrEqual(5);

        for (let n = 1; n <= total; n++) {
          const scope = freshScope(`af-${mode}-${n}`);
          const { runId: baseRun, content: oldContent } = await seed(api, scope, c.appends, n);
          const run = baseRun + 1;
          const added = JSON.stringify({ n, mode, text: 'new ✓ ünïcode' }) + '\n\n';
          const newContent = oldContent + added;
          const label = `call ${n} ${mode} (${counter.calls[n - 1]})`;

          const plan = new FaultPlan();
          mode === 'before' ? plan.failBeforeCall(n) : plan.failAfterCall(n);
          const crashed = await withFaultyService(ctx.svc, plan, (a) => append(a, scope, run, baseRun, oldContent, added));
          // A failure in best-effort cleanup (deleting compacted objects) is swallowed: then it is a 200.
          expect([200, 500], label).toContain(crashed.status);
          await crashed.body?.cancel();

          const mid = await hydrateText(api, scope);
          expect(mid, label).toBeDefined();
          if (mid!.runId === baseRun) expect(mid!.text, label).toBe(oldContent);
          else {
            expect(mid!.runId, label).toBe(run);
            expect(mid!.text, label).toBe(newContent);
          }
          if (crashed.status === 200) expect(mid, label).toEqual({ runId: run, text: newContent });

          const retry = await append(api, scope, run, baseRun, oldContent, added);
          const retryText = await retry.text();
          expect([200, 409], `${label}: ${retryText}`).toContain(retry.status);
          if (retry.status === 409) expect(JSON.parse(retryText).code, label).toBe('snapshot_exists');
          expect(await hydrateText(api, scope), `${label}: after retry`).toEqual({ runId: run, text: newContent });

          // A delta from the old base is the appended bytes (226), or the whole file (200, another chain).
          const token = await api.token(scope);
          const d = await api.get(token, {
            'a-im': 'append',
            'if-none-match': `"${sha(oldContent)}"`,
            'x-snapshot-base-run-id': String(baseRun),
            'accept-encoding': 'identity',
          });
          const dText = Buffer.from(await d.arrayBuffer()).toString('utf8');
          expect([200, 226], label).toContain(d.status);
          expect(dText, label).toBe(d.status === 226 ? added : newContent);

          // The chain keeps going: another append on top of the new run.
          const more = 'after\n';
          const next = await append(api, scope, run + 1, run, newContent, more);
          expect(next.status, `${label}: ${await next.clone().text()}`).toBe(200);
          expect(await hydrateText(api, scope), `${label}: next append`).toEqual({ runId: run + 1, text: newContent + more });
        }
      });
    }
  }
});

describe('compaction leaves one object per chain when the appends are small', () => {
  it('after the compacting append the conversation holds one chain object; hydrate exact', async () => {
    const { api, svc } = ctx;
    const { ListObjectsV2Command } = await import('@aws-sdk/client-s3');
    const { conversationKey } = await import('../../functions/lib/ids.js');
    const scope = freshScope('af-layout');
    const { runId, content } = await seed(api, scope, DEFAULT_CHAIN_MAX_EXTENTS - 1, 0);
    const prefix = `snapshots/${conversationKey({ organizationId: scope.org, agentId: scope.agent, conversationId: scope.conv })}/`;
    const list = async () => (await svc.s3.send(new ListObjectsV2Command({ Bucket: svc.config.bucketName, Prefix: prefix }))).Contents ?? [];
    expect(await list()).toHaveLength(DEFAULT_CHAIN_MAX_EXTENTS);
    expect((await append(api, scope, runId + 1, runId, content, 'z\n')).status).toBe(200);
    expect(await list()).toHaveLength(1);
    expect(await hydrateText(api, scope)).toEqual({ runId: runId + 1, text: content + 'z\n' });
  });
});

describe('interleavings with compaction and concurrent appends', () => {
  it('a hydrate that read HEAD before a compaction deleted the objects it names still serves the exact bytes', async () => {
    const { api } = ctx;
    const { gate } = await import('../helpers/faults.js');
    const scope = freshScope('af-hyd-compact');
    const { runId, content } = await seed(api, scope, DEFAULT_CHAIN_MAX_EXTENTS - 1, 0); // at the bound: the next append compacts them all
    const g = gate();
    const headRead = gate();
    const token = await api.token(scope);
    const plan = new FaultPlan().onCall(async (_name, n) => {
      if (n === 1) headRead.open();
      if (n >= 2) await g.wait;
    });
    const pending = withFaultyService(ctx.svc, plan, async (a) => {
      const res = await a.get(token, { 'accept-encoding': 'identity' });
      return { status: res.status, text: Buffer.from(await res.arrayBuffer()).toString('utf8'), runId: res.headers.get('x-snapshot-run-id') };
    });
    await headRead.wait;
    // The compaction lands between the hydrate's HEAD read and its object reads.
    const res = await append(api, scope, runId + 1, runId, content, 'compact\n');
    expect(res.status).toBe(200);
    g.open();
    const got = await pending;
    expect(got).toEqual({ status: 200, text: content, runId: String(runId) });
    expect(plan.calls.filter((c) => c === 'GetItemCommand').length, plan.calls.join(',')).toBeGreaterThanOrEqual(2); // re-read the CHAIN record
    expect(await hydrateText(api, scope)).toEqual({ runId: runId + 1, text: content + 'compact\n' });
  });

  for (const appends of [0, 3]) {
    it(`two concurrent appends on the same chain end (${appends + 1} objects): both stored, one extends, one forks; all exact`, async () => {
      const { api } = ctx;
      const scope = freshScope('af-concurrent');
      const { runId, content } = await seed(api, scope, appends, 0);
      const [r1, r2] = await Promise.all([append(api, scope, runId + 1, runId, content, 'left\n'), append(api, scope, runId + 2, runId, content, 'right\r\n')]);
      expect([r1.status, r2.status]).toEqual([200, 200]);
      expect(await hydrateText(api, scope)).toEqual({ runId: runId + 2, text: content + 'right\r\n' });
      // Both branches extend further.
      const l = await append(api, scope, runId + 3, runId + 1, content + 'left\n', 'l2\n');
      expect(l.status, await l.clone().text()).toBe(200);
      expect(await hydrateText(api, scope)).toEqual({ runId: runId + 3, text: content + 'left\nl2\n' });
      const r = await append(api, scope, runId + 4, runId + 2, content + 'right\r\n', 'r2\n');
      expect(r.status, await r.clone().text()).toBe(200);
      expect(await hydrateText(api, scope)).toEqual({ runId: runId + 4, text: content + 'right\r\nr2\n' });
    });
  }
});
