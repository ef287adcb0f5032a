/**
 * Erasure with receipts (docs/DESIGN.md § Erasure): each scope removes exactly its records and objects,
 * counts them once, leaves every other organization, agent and conversation byte-exact, keeps its
 * receipts retrievable, and lets the scope be written again once it completes.
 */
import { describe, expect, it } from 'vitest';
import { encodeId } from '../../functions/lib/ids.js';
import { eraseScope, expireConversation, getReceipt, isReceiptId, listReceipts, type ErasureReceipt } from '../../functions/lib/store/erasure.js';
import { isStoreError } from '../../functions/lib/store/errors.js';
import { FaultPlan, faultyStore } from '../helpers/faults.js';
import { expectErased, inventoryOf, isolatedScope, orgItems, pictureOf, pkOf, seedConversation } from '../helpers/erasure.js';
import { useLocalService, type Scope } from '../helpers/service.js';

// A small inline limit: hydrating a chain of several objects makes a materialized copy.
const ctx = useLocalService({ env: { ...process.env, INLINE_RESPONSE_MAX_BYTES: '64' } });

/**
 * org A: agent-a (c1, c2), agent-b (c3); org B: the same agent and conversation ids as c1. Every
 * conversation holds one of everything (seedConversation).
 */
async function world(tag: string): Promise<{ c1: Scope; c2: Scope; c3: Scope; other: Scope; contents: Map<Scope, string> }> {
  const c1 = isolatedScope(tag);
  const c2 = { ...c1, conv: `${c1.conv}-2` };
  const c3 = { ...c1, agent: 'agent-b', conv: `${c1.conv}-3` };
  const other = { ...c1, org: `${c1.org}-other` };
  const contents = new Map<Scope, string>();
  for (const s of [c1, c2, c3, other]) contents.set(s, await seedConversation(ctx.api, s));
  return { c1, c2, c3, other, contents };
}

function expectCounts(r: ErasureReceipt, inv: { runs: number; objects: number; bytes: number }, conversations: number): void {
  expect(r.state).toBe('completed');
  const { runs, objects, bytes } = inv;
  expect({ conversations: r.conversations, runs: r.runs, objects: r.objects, bytes: r.bytes }).toEqual({ conversations, runs, objects, bytes });
}

async function expectServes(s: Scope, content: string): Promise<void> {
  const h = await ctx.api.hydrate(s);
  expect(h?.body.equals(Buffer.from(content)), `hydrate ${s.conv} byte-exact`).toBe(true);
}

describe('erasure scopes', () => {
  it('a conversation: exactly its records and objects go (HEAD stays a tombstone); everything else is untouched, byte-exact', async () => {
    const { svc } = ctx;
    const w = await world('conv');
    const { runs, objects, bytes } = await inventoryOf(svc, [w.c1]);
    expect(runs).toBe(4);
    expect(objects).toBe(6); // 3 chain objects, the failed run's, the materialized copy, the upload
    const untouched = await pictureOf(svc, [w.c2, w.c3, w.other]);

    const r = await eraseScope(svc.store, { organizationId: w.c1.org, agentId: w.c1.agent, conversationId: w.c1.conv }, { actor: 'op-1' });
    expectCounts(r, { runs, objects, bytes }, 1);
    expect(r.scope).toEqual({ organizationId: w.c1.org, agentId: w.c1.agent, conversationId: w.c1.conv });
    expect(r.actor).toBe('op-1');
    expect(r.reason).toBeNull();
    expect(isReceiptId(r.receiptId)).toBe(true);
    expect(r.completedAt).not.toBeNull();
    expect(Date.parse(r.completedAt!)).toBeGreaterThanOrEqual(Date.parse(r.startedAt));

    await expectErased(svc, w.c1);
    expect(await ctx.api.hydrate(w.c1)).toBeUndefined();
    expect(await pictureOf(svc, [w.c2, w.c3, w.other])).toEqual(untouched);
    for (const s of [w.c2, w.c3, w.other]) await expectServes(s, w.contents.get(s)!);
    expect(await orgItems(svc, encodeId(w.c1.org), 'RUNNING')).toEqual([]);
  });

  it('an agent: all its conversations; the other agent and the other organization are untouched', async () => {
    const { svc } = ctx;
    const w = await world('agent');
    const inv = await inventoryOf(svc, [w.c1, w.c2]);
    const untouched = await pictureOf(svc, [w.c3, w.other]);

    const r = await eraseScope(svc.store, { organizationId: w.c1.org, agentId: w.c1.agent });
    expectCounts(r, inv, 2);
    expect(r.scope).toEqual({ organizationId: w.c1.org, agentId: w.c1.agent });
    for (const s of [w.c1, w.c2]) await expectErased(svc, s);
    expect(await pictureOf(svc, [w.c3, w.other])).toEqual(untouched);
    for (const s of [w.c3, w.other]) await expectServes(s, w.contents.get(s)!);
    // The fence is lifted, its epoch stays bumped.
    const [fence] = await orgItems(svc, encodeId(w.c1.org), `FENCE#${encodeId(w.c1.agent)}`);
    expect(fence).toMatchObject({ epoch: 1 });
    expect(fence).not.toHaveProperty('erasing');
  });

  it('an organization: every agent and conversation; the other organization is untouched', async () => {
    const { svc } = ctx;
    const w = await world('org');
    const inv = await inventoryOf(svc, [w.c1, w.c2, w.c3]);
    const untouched = await pictureOf(svc, [w.other]);

    const r = await eraseScope(svc.store, { organizationId: w.c1.org });
    expectCounts(r, inv, 3);
    expect(r.scope).toEqual({ organizationId: w.c1.org });
    for (const s of [w.c1, w.c2, w.c3]) await expectErased(svc, s);
    expect(await orgItems(svc, encodeId(w.c1.org), 'CONV#')).toEqual([]);
    expect(await pictureOf(svc, [w.other])).toEqual(untouched);
    await expectServes(w.other, w.contents.get(w.other)!);
    const [fence] = await orgItems(svc, encodeId(w.c1.org), 'FENCE');
    expect(fence).toMatchObject({ epoch: 1 });
    expect(fence).not.toHaveProperty('erasing');
  });
});

describe('receipts', () => {
  it('are retrievable, listed newest first with a cursor, and only in their own organization', async () => {
    const { svc } = ctx;
    const s = isolatedScope('receipts');
    await seedConversation(ctx.api, s, { full: false });
    // A clock per erasure, so the receipt ids order by start time whatever the wall clock does.
    let t = Date.parse('2031-01-01T00:00:00Z');
    const store = faultyStore(svc, new FaultPlan(), { now: () => t });
    const first = await eraseScope(store, { organizationId: s.org, agentId: s.agent, conversationId: s.conv });
    t += 60_000;
    const second = await eraseScope(store, { organizationId: s.org, agentId: s.agent });
    t += 60_000;
    const third = await eraseScope(store, { organizationId: s.org }, { reason: 'offboarding' });

    expect(first.startedAt).toBe('2031-01-01T00:00:00.000Z');
    expect(await getReceipt(svc.store, s.org, first.receiptId)).toEqual(first);
    expect(await getReceipt(svc.store, s.org, third.receiptId)).toEqual(third);
    expect(third.reason).toBe('offboarding');
    expect(await getReceipt(svc.store, `${s.org}-elsewhere`, first.receiptId)).toBeUndefined();
    expect(await getReceipt(svc.store, s.org, 'not-a-receipt')).toBeUndefined();

    const all = await listReceipts(svc.store, s.org);
    expect(all).toEqual({ receipts: [third, second, first], nextCursor: null });
    const p1 = await listReceipts(svc.store, s.org, { limit: 2 });
    expect(p1.receipts).toEqual([third, second]);
    const p2 = await listReceipts(svc.store, s.org, { limit: 2, cursor: p1.nextCursor! });
    expect(p2.receipts).toEqual([first]);
    expect((await listReceipts(svc.store, `${s.org}-elsewhere`)).receipts).toEqual([]);

    const bad = await listReceipts(svc.store, s.org, { cursor: 'garbage' }).catch((e: unknown) => e);
    expect(isStoreError(bad, 'INVALID_CURSOR')).toBe(true);
    await expect(listReceipts(svc.store, s.org, { limit: 0 })).rejects.toThrow(RangeError);
    await expect(eraseScope(svc.store, { organizationId: s.org, conversationId: s.conv })).rejects.toThrow(TypeError);
    await expect(eraseScope(svc.store, { organizationId: '' })).rejects.toThrow(TypeError);
  });

  it('a second erasure of the same scope is a new receipt with zero counts', async () => {
    const { svc } = ctx;
    for (const scopeOf of [
      (s: Scope) => ({ organizationId: s.org, agentId: s.agent, conversationId: s.conv }),
      (s: Scope) => ({ organizationId: s.org, agentId: s.agent }),
      (s: Scope) => ({ organizationId: s.org }),
    ]) {
      const s = isolatedScope('twice');
      await seedConversation(ctx.api, s);
      const first = await eraseScope(svc.store, scopeOf(s));
      expect(first.objects).toBeGreaterThan(0);
      const second = await eraseScope(svc.store, scopeOf(s));
      expect(second.receiptId).not.toBe(first.receiptId);
      expectCounts(second, { runs: 0, objects: 0, bytes: 0 }, 0);
      expect(await getReceipt(svc.store, s.org, first.receiptId)).toEqual(first);
    }
  });
});

describe('after an erasure', () => {
  it('the scope takes writes again: new data, served and listed', async () => {
    const { svc, api } = ctx;
    for (const scopeOf of [
      (s: Scope) => ({ organizationId: s.org, agentId: s.agent, conversationId: s.conv }),
      (s: Scope) => ({ organizationId: s.org, agentId: s.agent }),
      (s: Scope) => ({ organizationId: s.org }),
    ]) {
      const s = isolatedScope('again');
      await seedConversation(api, s);
      await eraseScope(svc.store, scopeOf(s));
      const fresh = JSON.stringify({ again: true }) + '\n';
      // Run 1 again: its old claim is gone with everything else.
      const res = await api.write(s, 1, fresh);
      expect(res.status, await res.text()).toBe(200);
      await expectServes(s, fresh);
      expect(await inventoryOf(svc, [s])).toMatchObject({ runs: 1, objects: 1 });
      // Listed again: registered, HEAD carries the listing attributes.
      expect(await orgItems(svc, encodeId(s.org), `CONV#${encodeId(s.agent)}/${encodeId(s.conv)}`)).toHaveLength(1);
      // And the next erasure finds it.
      const again = await eraseScope(svc.store, scopeOf(s));
      expect(again).toMatchObject({ conversations: 1, runs: 1, objects: 1 });
      await expectErased(svc, s);
    }
  });
});

describe('time budget', () => {
  it('a budget that runs out returns the running receipt; calling again resumes it to the same counts', async () => {
    const { svc } = ctx;
    const s = isolatedScope('budget');
    const scopes = [s, { ...s, conv: `${s.conv}-2` }, { ...s, conv: `${s.conv}-3` }];
    for (const c of scopes) await seedConversation(ctx.api, c);
    const inv = await inventoryOf(svc, scopes);
    // A clock that moves 1 s per AWS call: a 1 ms budget is spent after the first unit of work.
    let t = Date.parse('2032-01-01T00:00:00Z');
    const plan = new FaultPlan().onCall(() => {
      t += 1000;
    });
    const store = faultyStore(svc, plan, { now: () => t });
    const receipts: ErasureReceipt[] = [];
    for (let i = 0; i < 50; i++) {
      const r = await eraseScope(store, { organizationId: s.org }, { budgetMs: 1 });
      receipts.push(r);
      if (r.state === 'completed') break;
    }
    expect(receipts.length).toBeGreaterThan(2);
    expect(new Set(receipts.map((r) => r.receiptId)).size).toBe(1);
    const running = receipts.filter((r) => r.state === 'running');
    expect(running.every((r) => r.completedAt === null)).toBe(true);
    // Sums so far never decrease and never pass the total.
    const objects = receipts.map((r) => r.objects);
    expect(objects).toEqual([...objects].sort((a, b) => a - b));
    expectCounts(receipts.at(-1)!, inv, 3);
    for (const c of scopes) await expectErased(svc, c);
    // While it ran, the organization was fenced; now it is not.
    const [fence] = await orgItems(svc, encodeId(s.org), 'FENCE');
    expect(fence).not.toHaveProperty('erasing');
  });
});

describe('expiry', () => {
  it('erases one conversation by its key with reason "expired"; a conversation written since its bound is kept', async () => {
    const { svc } = ctx;
    const s = isolatedScope('expire');
    const sibling = { ...s, conv: `${s.conv}-2` };
    const content = await seedConversation(ctx.api, s);
    await seedConversation(ctx.api, sibling, { full: false });
    const untouched = await pictureOf(svc, [sibling]);

    // Written after the bound: not expired, nothing written.
    expect(await expireConversation(svc.store, pkOf(s), { activeBeforeMs: Date.now() - 3_600_000 })).toBeUndefined();
    await expectServes(s, content);
    expect(await orgItems(svc, encodeId(s.org), 'ERASURE#')).toEqual([]);

    const inv = await inventoryOf(svc, [s]);
    const r = await expireConversation(svc.store, pkOf(s), { activeBeforeMs: Date.now() + 1 });
    expectCounts(r!, inv, 1);
    expect(r!.reason).toBe('expired');
    expect(r!.scope).toEqual({ organizationId: s.org, agentId: s.agent, conversationId: s.conv });
    await expectErased(svc, s);
    expect(await pictureOf(svc, [sibling])).toEqual(untouched);
    expect((await listReceipts(svc.store, s.org)).receipts.map((x) => x.receiptId)).toEqual([r!.receiptId]);
    await expect(expireConversation(svc.store, 'not/a-key')).rejects.toThrow(TypeError);
  });
});
