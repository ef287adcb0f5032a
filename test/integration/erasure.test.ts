/**
 * Erasure with receipts (docs/DESIGN.md § Erasure): each scope removes exactly its records and objects,
 * counts them once, leaves every other organization, agent and conversation byte-exact, keeps its
 * receipts retrievable, and lets the scope be written again once it completes.
 */
import { DeleteItemCommand, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { marshall } from '@aws-sdk/util-dynamodb';
import { describe, expect, it } from 'vitest';
import { encodeId } from '../../functions/lib/ids.js';
import { eraseScope, expireConversation, getReceipt, isReceiptId, listReceipts, resumeErasures, retentionExpiry, type ErasureReceipt } from '../../functions/lib/store/erasure.js';
import { isStoreError } from '../../functions/lib/store/errors.js';
import { LISTING_ATTRIBUTES } from '../../functions/lib/store/registry.js';
import { FaultPlan, faultyStore, InjectedFault } from '../helpers/faults.js';
import { clockedStore, DAY } from '../helpers/retention.js';
import { expectErased, inventoryOf, isolatedScope, itemsOf, objectsOf, orgItems, pictureOf, pkOf, seedConversation } from '../helpers/erasure.js';
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

describe('expiry racing a write', () => {
  it('a write between the expiry check and the HEAD fence keeps the conversation, served and registered', async () => {
    const { svc, api } = ctx;
    const s = isolatedScope('expire-race');
    await seedConversation(api, s, { full: false });
    const bound = Date.now();
    const fresh = JSON.stringify({ racing: true }) + '\n';
    // Just before the expiry's HEAD fence (its first UpdateItem), the conversation is written.
    let armed = true;
    const plan = new FaultPlan().onCall(async (name) => {
      if (armed && name === 'UpdateItemCommand') {
        armed = false;
        const res = await api.write(s, 2, fresh);
        expect(res.status, await res.text()).toBe(200);
      }
    });
    const r = await expireConversation(faultyStore(svc, plan), pkOf(s), { activeBeforeMs: bound });
    expect(armed).toBe(false);
    expectCounts(r!, { runs: 0, objects: 0, bytes: 0 }, 0);
    await expectServes(s, fresh);
    expect(await orgItems(svc, encodeId(s.org), `CONV#${encodeId(s.agent)}/${encodeId(s.conv)}`)).toHaveLength(1);
    expect(await inventoryOf(svc, [s])).toMatchObject({ runs: 2 });
  });
});

describe('resuming', () => {
  it('an erasure whose caller died is finished by resumeErasures', async () => {
    const { svc } = ctx;
    const s = isolatedScope('orphaned');
    await seedConversation(ctx.api, s);
    const inv = await inventoryOf(svc, [s]);
    // Dies at its 12th AWS call: well into the conversation.
    await expect(eraseScope(faultyStore(svc, new FaultPlan().failBeforeCall(12)), { organizationId: s.org, agentId: s.agent })).rejects.toThrow(InjectedFault);
    const [running] = (await listReceipts(svc.store, s.org)).receipts;
    expect(running?.state).toBe('running');
    const resumed = await resumeErasures(svc.store);
    expect(resumed.map((r) => r.receiptId)).toContain(running!.receiptId);
    const done = await getReceipt(svc.store, s.org, running!.receiptId);
    expectCounts(done!, inv, 1);
    await expectErased(svc, s);
    expect(await resumeErasures(svc.store)).toEqual([]);
  });

  it('two concurrent calls for one scope share one receipt and count everything once', async () => {
    const { svc } = ctx;
    const s = isolatedScope('twins');
    const scopes = [s, { ...s, conv: `${s.conv}-2` }];
    for (const c of scopes) await seedConversation(ctx.api, c);
    const inv = await inventoryOf(svc, scopes);
    const [a, b] = await Promise.all([eraseScope(svc.store, { organizationId: s.org }), eraseScope(faultyStore(svc, new FaultPlan()), { organizationId: s.org })]);
    expect(a.receiptId).toBe(b.receiptId);
    const final = await getReceipt(svc.store, s.org, a.receiptId);
    expectCounts(final!, inv, 2);
    for (const c of scopes) await expectErased(svc, c);
  });
});

describe('conversations stored before the registry existed', () => {
  /** Makes `s` look like data written before registration: no registry item, no listing attributes on HEAD. */
  async function unregister(s: Scope): Promise<void> {
    const { svc } = ctx;
    const org = encodeId(s.org);
    await svc.ddb.send(new DeleteItemCommand({ TableName: svc.config.tableName, Key: marshall({ pk: `~org#${org}`, sk: `CONV#${encodeId(s.agent)}/${encodeId(s.conv)}` }) }));
    await svc.ddb.send(
      new UpdateItemCommand({ TableName: svc.config.tableName, Key: marshall({ pk: pkOf(s), sk: 'HEAD' }), UpdateExpression: `REMOVE ${LISTING_ATTRIBUTES.join(', ')}` }),
    );
  }

  it('are found by their objects, erased and counted, also when the erasure dies after deleting their objects', async () => {
    const { svc } = ctx;
    const s = isolatedScope('legacy');
    const registered = { ...s, conv: `${s.conv}-2` };
    await seedConversation(ctx.api, s);
    await seedConversation(ctx.api, registered, { full: false });
    await unregister(s);
    expect(await orgItems(svc, encodeId(s.org), 'CONV#')).toHaveLength(1);
    const inv = await inventoryOf(svc, [s, registered]);

    // Dies just after the legacy conversation's objects are gone: only its progress item still names it.
    const plan = new FaultPlan();
    let deletes = 0;
    plan.onCall((name, n) => {
      if (name === 'DeleteObjectsCommand' && ++deletes === 2) plan.failAfterCall(n);
    });
    await expect(eraseScope(faultyStore(svc, plan), { organizationId: s.org, agentId: s.agent })).rejects.toThrow(InjectedFault);
    expect(await objectsOf(svc, s)).toEqual([]);

    const r = await eraseScope(svc.store, { organizationId: s.org, agentId: s.agent });
    expectCounts(r, inv, 2);
    for (const c of [s, registered]) await expectErased(svc, c);
  });
});

describe('retention expiry', () => {
  it('retentionExpiry is the erasure the retention pass injects: an idle conversation is erased with an "expired" receipt', async () => {
    const { svc } = ctx;
    const s = isolatedScope('ttl');
    await seedConversation(ctx.api, s);
    const inv = await inventoryOf(svc, [s]);
    const activity = (await itemsOf(svc, pkOf(s))).find((i) => i['sk'] === 'HEAD')!['activityAtMs'] as number;
    const later = clockedStore(svc, () => activity + 31 * DAY, { retention: { conversationTtlDays: 30 } });
    const r = await later.retainConversation(pkOf(s), { expireConversation: retentionExpiry(later) });
    expect(r).toMatchObject({ expired: true, runs: inv.runs, objects: inv.objects, bytes: inv.bytes });
    await expectErased(svc, s);
    const [receipt] = (await listReceipts(svc.store, s.org)).receipts;
    expect(receipt).toMatchObject({ reason: 'expired', state: 'completed', conversations: 1, runs: inv.runs, objects: inv.objects, bytes: inv.bytes });
  });

  it('the scheduled pass (SnapshotStore.runScheduledRetention, as the Lambda and npm start run it) expires idle conversations by erasure and keeps active ones', async () => {
    const { svc } = ctx;
    const idle = isolatedScope('ttl-pass-idle');
    const active = isolatedScope('ttl-pass-active');
    await seedConversation(ctx.api, idle);
    await seedConversation(ctx.api, active);
    const inv = await inventoryOf(svc, [idle]);
    const headOf = async (s: typeof idle) => (await itemsOf(svc, pkOf(s))).find((i) => i['sk'] === 'HEAD')!;
    const idleAt = (await headOf(idle))['activityAtMs'] as number;
    // The active conversation was written 29 days after the idle one; the pass runs 31 days after the idle one.
    const pass = clockedStore(svc, () => idleAt + 31 * DAY, { retention: { conversationTtlDays: 30 } });
    const write29 = clockedStore(svc, () => idleAt + 29 * DAY);
    const ids = { organizationId: active.org, agentId: active.agent, conversationId: active.conv, issuedAt: Math.floor(Date.now() / 1000) };
    expect(await write29.write(ids, { runId: 99, status: 'failed', body: Buffer.from('{"late":true}\n') })).toMatchObject({ kind: 'stored' });
    const before = await ctx.api.hydrate(active);
    for (let i = 0; i < 5; i++) await pass.runScheduledRetention();
    await expectErased(svc, idle);
    expect((await ctx.api.hydrate(active))?.body).toEqual(before?.body);
    const receipts = (await listReceipts(svc.store, idle.org)).receipts.filter((r) => r.reason === 'expired' && r.scope.conversationId === idle.conv);
    expect(receipts).toHaveLength(1);
    expect(receipts[0]).toMatchObject({ state: 'completed', conversations: 1, runs: inv.runs, objects: inv.objects, bytes: inv.bytes });
  });
});
