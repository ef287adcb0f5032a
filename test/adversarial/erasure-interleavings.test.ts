/**
 * Adversarial interleavings of erasures (docs/DESIGN.md § Erasure) with each other, with writers, with
 * clears and with the scheduled resume, forced with FaultPlan gates:
 *
 *   - a second call for the same scope while a first one is paused before ANY of its AWS calls: at most one
 *     call works on an erasure at a time (its lease), so a call still running can never outlive the
 *     erasure's completion and erase a write admitted after it; the receipts count the inventory once;
 *   - a call that dies holding the lease delays the next one by at most ERASURE_LEASE_MS;
 *   - the scheduled resume (`resumeErasures`) never starts an erasure: a completed receipt whose pointer
 *     survived (a crash before its deletion) is not a reason to erase the scope again;
 *   - a first write that registers its conversation and is then fenced by an erasure (of any scope, any
 *     kind of write) leaves no registry item — no raw ids, no agent in /admin/agents — behind;
 *   - overlapping scopes (an organization and one of its agents) erased at once, and a clear racing an
 *     erasure: nothing of the scope is left, HEAD stays an unlisted tombstone.
 */
import { describe, expect, it } from 'vitest';
import { ERRORS } from '../../functions/lib/contract.js';
import { encodeId } from '../../functions/lib/ids.js';
import { eraseScope, ERASURE_LEASE_MS, expireConversation, getReceipt, listReceipts, resumeErasures, type ErasureReceipt, type ErasureScope } from '../../functions/lib/store/erasure.js';
import { AdminApi, ADMIN_PATHS } from '../helpers/admin.js';
import { expectError } from '../helpers/append.js';
import { expectErased, inventoryOf, isolatedScope, itemsOf, objectsOf, orgItems, pkOf, seedConversation, type Inventory } from '../helpers/erasure.js';
import { FaultPlan, faultyStore, gate, InjectedFault, withFaultyService } from '../helpers/faults.js';
import { useLocalService, type Api, type Scope } from '../helpers/service.js';
import { uploadSnapshot } from '../helpers/uploads.js';

const ctx = useLocalService();

type Kind = 'conversation' | 'agent' | 'organization';
const KINDS: readonly Kind[] = ['conversation', 'agent', 'organization'];

function scopeOf(kind: Kind, s: Scope): ErasureScope {
  if (kind === 'organization') return { organizationId: s.org };
  if (kind === 'agent') return { organizationId: s.org, agentId: s.agent };
  return { organizationId: s.org, agentId: s.agent, conversationId: s.conv };
}

const counts = (r: Pick<ErasureReceipt, 'conversations' | 'runs' | 'objects' | 'bytes'>) => ({ conversations: r.conversations, runs: r.runs, objects: r.objects, bytes: r.bytes });
const expected = (inv: Inventory, conversations: number) => ({ conversations, runs: inv.runs, objects: inv.objects, bytes: inv.bytes });

/** A store whose `k`-th AWS call waits until `release()`; `reached` resolves when it gets there. */
function pausedStore(k: number, opts: { now?: () => number } = {}) {
  const reached = gate();
  const paused = gate();
  let n = 0;
  const plan = new FaultPlan().onCall(async () => {
    if (++n === k) {
      reached.open();
      await paused.wait;
    }
  });
  return { store: faultyStore(ctx.svc, plan, opts), plan, reached: reached.wait, release: paused.open };
}

/** The AWS calls a clean erasure of `kind` makes over a world like the one `world()` writes. */
async function cleanCalls(kind: Kind): Promise<number> {
  const w = await world(kind, 'probe');
  const plan = new FaultPlan();
  const r = await eraseScope(faultyStore(ctx.svc, plan), scopeOf(kind, w.s));
  expect(r.state).toBe('completed');
  return plan.calls.length;
}

/** One conversation (one completed run) in an organization of its own, and (wider scopes) a second one in it. */
async function world(kind: Kind, tag: string): Promise<{ s: Scope; doomed: Scope[] }> {
  const s = isolatedScope(tag);
  const doomed = [s];
  if (kind === 'agent') doomed.push({ ...s, conv: `${s.conv}-2` });
  if (kind === 'organization') doomed.push({ ...s, agent: 'agent-b' });
  await Promise.all(doomed.map((d) => seedConversation(ctx.api, d, { full: false })));
  return { s, doomed };
}

describe('two calls for one scope: one works at a time (the lease)', () => {
  /**
   * Call A pauses before its k-th AWS call; call B runs to its end meanwhile; if B answered `completed`, a
   * write W lands. Then A goes on. W must survive unless A's receipt is one that did not exist yet when W was
   * written (A then started a new erasure after W: the operator asked twice, and the second came later).
   */
  async function trial(kind: Kind, k: number): Promise<boolean> {
    const { svc, api } = ctx;
    const w = await world(kind, `lease-${kind[0]}${k}`);
    const inv = await inventoryOf(svc, w.doomed);
    const a = pausedStore(k);
    const first = eraseScope(a.store, scopeOf(kind, w.s));
    if ((await Promise.race([a.reached.then(() => 'paused'), first.then(() => 'done')])) === 'done') return false;
    const b = await eraseScope(svc.store, scopeOf(kind, w.s));
    const what = `${kind}: A paused before call ${k} (${a.plan.calls[k - 1]}), B ${b.state}`;

    const fresh = `{"after":${k},"kind":"${kind}"}\n`;
    let before: Set<string> | undefined;
    if (b.state === 'completed') {
      before = new Set((await listReceipts(svc.store, w.s.org)).receipts.map((r) => r.receiptId));
      const res = await api.write(w.s, 2, fresh);
      expect(res.status, `${what}: ${await res.clone().text()}`).toBe(200);
    } else {
      // B found A holding the lease: it did nothing and answered the running receipt.
      expect(b.completedAt, what).toBeNull();
    }
    a.release();
    const ra = await first;
    expect(ra.state, what).toBe('completed');

    if (before && before.has(ra.receiptId)) {
      // W came after the erasure completed: served, byte-exact, and all that is left of the scope.
      const h = await api.hydrate(w.s);
      expect(h?.runId, what).toBe(2);
      expect(h?.body.toString('utf8'), what).toBe(fresh);
      expect(await inventoryOf(svc, w.doomed), what).toMatchObject({ runs: 1, objects: 1 });
    } else {
      // No W, or A started a new erasure after it: nothing of the scope is left.
      for (const d of w.doomed) await expectErased(svc, d);
    }
    // Every record and object that was there is counted once, over the receipts that existed before W.
    const receipts = (await listReceipts(svc.store, w.s.org)).receipts.filter((r) => !before || before.has(r.receiptId));
    const sum = receipts.reduce((t, r) => ({ conversations: t.conversations + r.conversations, runs: t.runs + r.runs, objects: t.objects + r.objects, bytes: t.bytes + r.bytes }), { conversations: 0, runs: 0, objects: 0, bytes: 0 });
    expect(sum, what).toEqual(expected(inv, w.doomed.length));
    return true;
  }

  for (const kind of KINDS) {
    it(`${kind} scope: call A paused before each of its AWS calls, call B in between, then a write`, async () => {
      const total = await cleanCalls(kind);
      expect(total).toBeGreaterThan(12);
      let paused = 0;
      for (let k = 1; k <= total; k += 4) {
        const batch = await Promise.allSettled([k, k + 1, k + 2, k + 3].filter((n) => n <= total).map((n) => trial(kind, n)));
        for (const r of batch) {
          if (r.status === 'rejected') throw r.reason;
          if (r.value) paused += 1;
        }
      }
      expect(paused).toBe(total);
    }, 120_000);
  }

  it('a call that dies holding the lease (its signal aborted) delays the next call by at most ERASURE_LEASE_MS', async () => {
    const { svc } = ctx;
    const w = await world('organization', 'dead');
    const inv = await inventoryOf(svc, w.doomed);
    // Dies at its first Query (the scope is fenced, its lease taken): the Lambda timed out.
    const reached = gate();
    const paused = gate();
    let armed = true;
    const plan = new FaultPlan().onCall(async (name) => {
      if (armed && name === 'QueryCommand') {
        armed = false;
        reached.open();
        await paused.wait;
      }
    });
    const abort = new AbortController();
    const dying = eraseScope(faultyStore(svc, plan), scopeOf('organization', w.s), { signal: abort.signal }).catch((err: unknown) => err);
    await reached.wait;
    abort.abort();
    paused.open();
    expect(await dying).toBeInstanceOf(Error);

    // The next call (same clock) finds the lease taken: it answers the running receipt and touches nothing.
    const next = await eraseScope(svc.store, scopeOf('organization', w.s));
    expect(next).toMatchObject({ state: 'running', conversations: 0, runs: 0, objects: 0 });
    expect(await inventoryOf(svc, w.doomed)).toEqual(inv);
    // Once the lease has run out, the erasure is resumed and completes, counting everything once.
    const later = faultyStore(svc, new FaultPlan(), { now: () => Date.now() + ERASURE_LEASE_MS + 1_000 });
    const done = await eraseScope(later, scopeOf('organization', w.s));
    expect(done.receiptId).toBe(next.receiptId);
    expect(counts(done)).toEqual(expected(inv, 2));
    for (const d of w.doomed) await expectErased(svc, d);
  });

  it('an erasure whose budget ran out gives its lease back: the next call resumes it at once', async () => {
    const { svc } = ctx;
    const w = await world('agent', 'budget');
    const inv = await inventoryOf(svc, w.doomed);
    const r1 = await eraseScope(svc.store, scopeOf('agent', w.s), { budgetMs: 0 });
    expect(r1.state).toBe('running');
    const r2 = await eraseScope(svc.store, scopeOf('agent', w.s));
    expect(r2).toMatchObject({ receiptId: r1.receiptId, state: 'completed', ...expected(inv, 2) });
  });
});

describe('the scheduled resume (resumeErasures)', () => {
  it('never starts an erasure: a completed receipt whose pointer survived is not erased again', async () => {
    const { svc, api } = ctx;
    // The last AWS call of a clean organization erasure deletes its running pointer.
    const probe = await world('organization', 'probe-pointer');
    const plan = new FaultPlan();
    await eraseScope(faultyStore(svc, plan), scopeOf('organization', probe.s));
    expect(plan.calls.at(-1)).toBe('DeleteItemCommand');
    const deletes = plan.calls.filter((c) => c === 'DeleteItemCommand').length;

    const w = await world('organization', 'pointer');
    const crash = new FaultPlan().failBeforeCommand('DeleteItemCommand', deletes);
    await expect(eraseScope(faultyStore(svc, crash), scopeOf('organization', w.s))).rejects.toThrow(InjectedFault);
    const [completed] = (await listReceipts(svc.store, w.s.org)).receipts;
    expect(completed?.state).toBe('completed');

    // Writes resume in the organization (the erasure is over); then the scheduled pass comes by.
    const fresh = '{"after":"completion"}\n';
    expect((await api.write(w.s, 2, fresh)).status).toBe(200);
    expect(await resumeErasures(svc.store)).toEqual([]);
    expect((await api.hydrate(w.s))?.body.toString('utf8')).toBe(fresh);
    expect((await listReceipts(svc.store, w.s.org)).receipts.map((r) => r.receiptId)).toEqual([completed!.receiptId]);
    // The stale pointer is gone: the next pass does not even look at it.
    expect(await resumeErasures(svc.store)).toEqual([]);
  });

  it('skips an erasure another call is running and finishes the others', async () => {
    const { svc } = ctx;
    const held = await world('organization', 'held');
    const dead = await world('organization', 'crashed');
    // The older erasure is running in a call paused at its first Query (it holds the lease) …
    let queries = 0;
    const reached = gate();
    const paused = gate();
    const plan = new FaultPlan().onCall(async (name) => {
      if (name === 'QueryCommand' && ++queries === 1) {
        reached.open();
        await paused.wait;
      }
    });
    const running = eraseScope(faultyStore(svc, plan), scopeOf('organization', held.s));
    await reached.wait;
    // … a younger one died (a thrown fault: it gave its lease back).
    await expect(eraseScope(faultyStore(svc, new FaultPlan().failBeforeCommand('QueryCommand')), scopeOf('organization', dead.s))).rejects.toThrow(InjectedFault);
    const deadInv = await inventoryOf(svc, dead.doomed);
    const heldInv = await inventoryOf(svc, held.doomed);

    const resumed = await resumeErasures(svc.store);
    expect(resumed.map((r) => [r.scope.organizationId, r.state])).toEqual([[dead.s.org, 'completed']]);
    expect(counts(resumed[0]!)).toEqual(expected(deadInv, 2));
    for (const d of dead.doomed) await expectErased(svc, d);
    expect(await inventoryOf(svc, held.doomed)).toEqual(heldInv);

    paused.open();
    expect(counts(await running)).toEqual(expected(heldInv, 2));
    for (const d of held.doomed) await expectErased(svc, d);
  });
});

describe('an expiry and an operator’s erasure of the same conversation', () => {
  it('an operator’s erasure that finds an expiry running finishes it, then erases what the expiry kept', async () => {
    const { svc, api } = ctx;
    const s = isolatedScope('expiry');
    await seedConversation(api, s, { full: false });
    // Retention's expiry (bound: now) dies after opening its receipt, before it fenced HEAD.
    const bound = Date.now() + 1;
    await expect(expireConversation(faultyStore(svc, new FaultPlan().failBeforeCommand('DeleteItemCommand')), pkOf(s), { activeBeforeMs: bound })).rejects.toThrow(InjectedFault);
    // The conversation is written again after the bound: the expiry must keep it …
    while (Date.now() <= bound) await new Promise((resolve) => setTimeout(resolve, 1));
    const fresh = '{"after":"bound"}\n';
    expect((await api.write(s, 2, fresh)).status).toBe(200);
    // … but the operator asks for it to be erased: the answer is the operator's own erasure, and it is done.
    const r = await eraseScope(svc.store, scopeOf('conversation', s), { actor: 'ops@example' });
    expect(r).toMatchObject({ state: 'completed', reason: null, actor: 'ops@example', conversations: 1, runs: 2, objects: 2 });
    await expectErased(svc, s);
    const receipts = (await listReceipts(svc.store, s.org)).receipts;
    expect(receipts.map((x) => [x.reason, x.state, x.runs])).toEqual([
      [null, 'completed', 2],
      ['expired', 'completed', 0],
    ]);
  });
});

describe('a fenced first write leaves no registration behind', () => {
  const writes = {
    completed: (api: Api, s: Scope) => api.write(s, 1, '{"late":1}\n'),
    failed: (api: Api, s: Scope) => api.write(s, 1, '{"late":1}\n', 'failed'),
    upload: (api: Api, s: Scope) => uploadSnapshot(api, s, 1, Buffer.from('{"late":"upload"}\n'), 'identity'),
  } as const;

  for (const kind of KINDS) {
    for (const [name, write] of Object.entries(writes)) {
      it(`${name} write of a new conversation, paused before its registration while its ${kind} is erased`, async () => {
        const { svc } = ctx;
        const s = isolatedScope(`reg-${kind[0]}-${name}`);
        // Something to erase besides: another conversation of the same agent.
        const sibling = { ...s, conv: `${s.conv}-sibling` };
        await seedConversation(ctx.api, sibling, { full: false });
        const reached = gate();
        const paused = gate();
        let armed = true;
        const plan = new FaultPlan().onCall(async (cmd) => {
          if (armed && cmd === 'PutItemCommand') {
            armed = false;
            reached.open();
            await paused.wait;
          }
        });
        const late = withFaultyService(svc, plan, (api) => write(api, s));
        await reached.wait;
        const scope = kind === 'conversation' ? scopeOf(kind, s) : scopeOf(kind, sibling);
        expect((await eraseScope(svc.store, scope)).state).toBe('completed');
        paused.open();
        await expectError(late, ERRORS.resetFenced);

        // Nothing of the new conversation: no registry item (raw ids), no run, no object, not listed.
        const registryKey = `CONV#${encodeId(s.agent)}/${encodeId(s.conv)}`;
        expect((await orgItems(svc, encodeId(s.org), 'CONV#')).filter((i) => i['sk'] === registryKey)).toEqual([]);
        expect(await objectsOf(svc, s)).toEqual([]);
        expect((await itemsOf(svc, pkOf(s))).filter((i) => i['sk'] !== 'HEAD')).toEqual([]);
        const admin = new AdminApi(svc);
        const token = await admin.token(s.org);
        const agents = (await admin.json<{ agents: { agentId: string }[] }>(ADMIN_PATHS.agents, {}, token)).agents;
        // The sibling survives a conversation-scope erasure of `s`; otherwise the agent is gone with it.
        expect(agents.map((x) => x.agentId)).toEqual(kind === 'conversation' ? [s.agent] : []);
        expect(await orgItems(svc, encodeId(s.org), 'CONV#')).toHaveLength(kind === 'conversation' ? 1 : 0);
      });
    }
  }

  it('a fenced write never removes a registration a later write made', async () => {
    const { svc, api } = ctx;
    const s = isolatedScope('reg-later');
    const reached = gate();
    const paused = gate();
    let puts = 0;
    // Paused right after its registration (before its second read of the fences).
    const plan = new FaultPlan().onCall(async (cmd) => {
      if (cmd === 'BatchGetItemCommand' && ++puts === 2) {
        reached.open();
        await paused.wait;
      }
    });
    const late = withFaultyService(svc, plan, (faulty) => faulty.write(s, 1, '{"late":1}\n'));
    await reached.wait;
    expect((await eraseScope(svc.store, scopeOf('agent', s))).state).toBe('completed');
    // A write after the erasure registers the conversation again (its own registration).
    expect((await api.write(s, 2, '{"new":2}\n')).status).toBe(200);
    paused.open();
    await expectError(late, ERRORS.resetFenced);
    expect(await orgItems(svc, encodeId(s.org), `CONV#${encodeId(s.agent)}/${encodeId(s.conv)}`)).toHaveLength(1);
    expect((await api.hydrate(s))?.runId).toBe(2);
  });
});

describe('overlapping erasures and clears', () => {
  it('an organization and one of its agents erased at once: nothing is left; each receipt counts at most what was there', async () => {
    const { svc } = ctx;
    const w = await world('organization', 'overlap');
    const extra = { ...w.s, conv: `${w.s.conv}-2` };
    await seedConversation(ctx.api, extra);
    const all = [...w.doomed, extra];
    const inv = await inventoryOf(svc, all);
    const agentInv = await inventoryOf(svc, [w.s, extra]);
    // The agent erasure pauses before its first DeleteObjects (its marks are written); the organization's
    // erasure runs to its end meanwhile, then the agent's goes on.
    const reached = gate();
    const paused = gate();
    let armed = true;
    const plan = new FaultPlan().onCall(async (name) => {
      if (armed && name === 'DeleteObjectsCommand') {
        armed = false;
        reached.open();
        await paused.wait;
      }
    });
    const agent = eraseScope(faultyStore(svc, plan), scopeOf('agent', w.s));
    await reached.wait;
    const org = await eraseScope(svc.store, scopeOf('organization', w.s));
    expect(org.state).toBe('completed');
    paused.open();
    const ag = await agent;
    expect(ag.state).toBe('completed');
    for (const d of all) await expectErased(svc, d);
    expect(await orgItems(svc, encodeId(w.s.org), 'CONV#')).toEqual([]);
    for (const fence of await orgItems(svc, encodeId(w.s.org), 'FENCE')) expect(fence).not.toHaveProperty('erasing');
    // Each receipt counts at most what its scope held; together they count everything at least once
    // (a record or object both removed may be counted by both: docs/DESIGN.md § Erasure, Counting).
    expect(org.runs).toBeLessThanOrEqual(inv.runs);
    expect(org.objects).toBeLessThanOrEqual(inv.objects);
    expect(ag.runs).toBeLessThanOrEqual(agentInv.runs);
    expect(ag.objects).toBeLessThanOrEqual(agentInv.objects);
    expect(org.runs + ag.runs).toBeGreaterThanOrEqual(inv.runs);
    expect(org.objects + ag.objects).toBeGreaterThanOrEqual(inv.objects);
    const final = await getReceipt(svc.store, w.s.org, ag.receiptId);
    expect(final?.state).toBe('completed');
  });

  for (const order of ['clear paused, erasure runs', 'erasure paused, clear runs'] as const) {
    it(`a clear racing a conversation erasure (${order}): nothing is left, HEAD is an unlisted tombstone`, async () => {
      const { svc, api } = ctx;
      const s = isolatedScope('clear-race');
      await seedConversation(api, s);
      const reached = gate();
      const paused = gate();
      let armed = true;
      // Each pauses right after fencing HEAD (at the Query of the partition).
      const plan = new FaultPlan().onCall(async (name) => {
        if (armed && name === 'QueryCommand') {
          armed = false;
          reached.open();
          await paused.wait;
        }
      });
      if (order === 'clear paused, erasure runs') {
        const clear = withFaultyService(svc, plan, async (faulty) => faulty.clear(s));
        await reached.wait;
        expect((await eraseScope(svc.store, scopeOf('conversation', s))).state).toBe('completed');
        paused.open();
        await clear;
      } else {
        const erasure = eraseScope(faultyStore(svc, plan), scopeOf('conversation', s));
        await reached.wait;
        await api.clear(s);
        paused.open();
        expect((await erasure).state).toBe('completed');
      }
      await expectErased(svc, s);
      expect(await orgItems(svc, encodeId(s.org), 'CONV#')).toEqual([]);
      const admin = new AdminApi(svc);
      const token = await admin.token(s.org);
      expect((await admin.json<{ conversations: unknown[] }>(ADMIN_PATHS.conversations, {}, token)).conversations).toEqual([]);
      expect((await admin.get(ADMIN_PATHS.runs, { agentId: s.agent, conversationId: s.conv }, token)).status).toBe(404);
      // A clear of the erased conversation afterwards does not list it again either.
      await api.clear(s);
      await expectErased(svc, s);
    });
  }
});

describe('readers racing an erasure', () => {
  /** Runs `read` through a service whose first S3 GetObject waits until the conversation is erased. */
  async function readAcross(s: Scope, read: (api: Api) => Promise<Response>): Promise<{ status: number; text: string }> {
    const { svc } = ctx;
    const reached = gate();
    const paused = gate();
    let armed = true;
    const plan = new FaultPlan().onCall(async (name) => {
      if (armed && name === 'GetObjectCommand') {
        armed = false;
        reached.open();
        await paused.wait;
      }
    });
    const reading = withFaultyService(svc, plan, async (api) => {
      const res = await read(api);
      return { status: res.status, text: await res.text() };
    });
    await reached.wait;
    expect((await eraseScope(svc.store, scopeOf('conversation', s))).state).toBe('completed');
    paused.open();
    return reading;
  }

  it('a hydrate, GET /admin/run and GET /admin/lines that read their record before the erasure answer 404, never a 500 or a part', async () => {
    const { svc, api } = ctx;
    const admin = new AdminApi(svc);
    const reads: [string, (s: Scope) => (api: Api) => Promise<Response>][] = [
      ['hydrate', (s) => async (faulty) => faulty.get(await faulty.token(s))],
      ['admin run', (s) => async (faulty) => fetch(`${faulty.baseUrl}${ADMIN_PATHS.run}?agentId=${s.agent}&conversationId=${s.conv}&runId=3`, { headers: { authorization: `Bearer ${await admin.token(s.org)}` } })],
      ['admin lines', (s) => async (faulty) => fetch(`${faulty.baseUrl}${ADMIN_PATHS.lines}?agentId=${s.agent}&conversationId=${s.conv}`, { headers: { authorization: `Bearer ${await admin.token(s.org)}` } })],
      ['admin failed run', (s) => async (faulty) => fetch(`${faulty.baseUrl}${ADMIN_PATHS.run}?agentId=${s.agent}&conversationId=${s.conv}&runId=4`, { headers: { authorization: `Bearer ${await admin.token(s.org)}` } })],
    ];
    for (const [name, read] of reads) {
      const s = isolatedScope(`reader-${name.replace(/ /g, '-')}`);
      await seedConversation(api, s);
      const res = await readAcross(s, read(s));
      expect(res.status, `${name}: ${res.text.slice(0, 200)}`).toBe(404);
      await expectErased(svc, s);
    }
  });
});

