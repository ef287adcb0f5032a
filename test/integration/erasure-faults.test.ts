/**
 * Erasure under faults (docs/DESIGN.md § Erasure): an erasure that dies before or after ANY of its AWS
 * calls is finished by the next call for the same scope, and the final receipt counts exactly what was
 * there (an inventory taken independently, from the table and a bucket listing, before erasing) — never
 * a record or object twice. Then the interleavings with writers: a write admitted before the scope
 * fence that reaches its HEAD write only after the erasure completed never lands (registered
 * conversation, and a brand-new one whose first write registers it), and a write while `erasing` is set
 * is answered 409 reset_fenced.
 */
import { describe, expect, it } from 'vitest';
import { ERRORS } from '../../functions/lib/contract.js';
import { encodeId } from '../../functions/lib/ids.js';
import { eraseScope, listReceipts, type ErasureReceipt } from '../../functions/lib/store/erasure.js';
import { expectError } from '../helpers/append.js';
import {
  cloneOrganization,
  copyOf,
  expectAgentErased,
  expectErased,
  inventoryOf,
  isolatedScope,
  itemsOf,
  objectsOf,
  orgItems,
  pictureOf,
  pkOf,
  renameOrg,
  seedConversation,
  type Inventory,
  type OrganizationCopy,
} from '../helpers/erasure.js';
import { FaultPlan, faultyStore, gate, InjectedFault, withFaultyService } from '../helpers/faults.js';
import { useLocalService, type Scope } from '../helpers/service.js';

// A small inline limit: hydrating a chain of several objects makes a materialized copy.
const ctx = useLocalService({ env: { ...process.env, INLINE_RESPONSE_MAX_BYTES: '64' } });

/**
 * One agent with 3 conversations — the first with chain runs 1–3, a failed run, a materialized copy and
 * an uncommitted upload; the others with one completed run — and a conversation of another agent of
 * the same organization, which must stay untouched. Written through the service once; each fault gets
 * a copy of it in an organization of its own.
 */
interface World {
  doomed: Scope[];
  bystander: Scope;
}

async function agentWorld(tag: string): Promise<World> {
  const c1 = isolatedScope(tag);
  const doomed = [c1, { ...c1, conv: `${c1.conv}-2` }, { ...c1, conv: `${c1.conv}-3` }];
  const bystander = { ...c1, agent: 'agent-b' };
  await Promise.all([
    seedConversation(ctx.api, doomed[0]!),
    seedConversation(ctx.api, doomed[1]!, { full: false }),
    seedConversation(ctx.api, doomed[2]!, { full: false }),
    seedConversation(ctx.api, bystander, { full: false }),
  ]);
  return { doomed, bystander };
}

/** The world as written once, its inventory (what erasing the agent must report) and the bystander's picture. */
let template: { world: World; copy: OrganizationCopy; inventory: Inventory; bystander: unknown } | undefined;

async function templateWorld(): Promise<NonNullable<typeof template>> {
  if (!template) {
    const world = await agentWorld('template');
    template = {
      world,
      copy: await copyOf(ctx.svc, [world.bystander, ...world.doomed]),
      inventory: await inventoryOf(ctx.svc, world.doomed),
      bystander: await pictureOf(ctx.svc, [world.bystander]),
    };
  }
  return template;
}

async function freshWorld(tag: string): Promise<World> {
  const t = await templateWorld();
  const [bystander, ...doomed] = await cloneOrganization(ctx.svc, t.copy, isolatedScope(tag).org);
  return { doomed, bystander: bystander! };
}

const agentScope = (s: Scope) => ({ organizationId: s.org, agentId: s.agent });

function counts(r: ErasureReceipt): { conversations: number; runs: number; objects: number; bytes: number } {
  return { conversations: r.conversations, runs: r.runs, objects: r.objects, bytes: r.bytes };
}

/**
 * Erases the agent with a fault at call `n`, then resumes: the receipts count exactly the template's
 * inventory, nothing of the agent is left, and the bystander is byte-exact.
 */
async function crashAndResume(mode: 'before' | 'after', n: number): Promise<void> {
  const { svc } = ctx;
  const t = await templateWorld();
  const w = await freshWorld(`f${mode[0]}${n}`);
  const plan = new FaultPlan();
  if (mode === 'before') plan.failBeforeCall(n);
  else plan.failAfterCall(n);
  const first = await eraseScope(faultyStore(svc, plan), agentScope(w.doomed[0]!)).catch((err: unknown) => err);
  const what = `fail ${mode} call ${n} (${plan.calls[n - 1]})`;
  expect(first, what).toBeInstanceOf(InjectedFault);

  const r = await eraseScope(svc.store, agentScope(w.doomed[0]!));
  expect(r.state, what).toBe('completed');
  // Usually the same receipt, resumed. Died after the receipt completed (only its pointer left): the
  // retry is a new erasure that finds nothing. Either way every record and object is counted once.
  const { receipts } = await listReceipts(svc.store, w.doomed[0]!.org);
  expect(receipts[0]!.receiptId, what).toBe(r.receiptId);
  expect(receipts.map((x) => x.state), what).toEqual(receipts.map(() => 'completed'));
  const newer = receipts.slice(0, -1); // newest first
  expect(newer.map(counts), what).toEqual(newer.map(() => ({ conversations: 0, runs: 0, objects: 0, bytes: 0 })));
  expect(counts(receipts.at(-1)!), what).toEqual({ conversations: 3, runs: t.inventory.runs, objects: t.inventory.objects, bytes: t.inventory.bytes });

  await expectAgentErased(svc, w.doomed);
  const org = encodeId(w.doomed[0]!.org);
  expect(await orgItems(svc, org, `CONV#${encodeId(w.doomed[0]!.agent)}/`), what).toEqual([]);
  const [fence] = await orgItems(svc, org, `FENCE#${encodeId(w.doomed[0]!.agent)}`);
  expect(fence, what).not.toHaveProperty('erasing');
  expect(renameOrg(await pictureOf(svc, [w.bystander]), w.bystander.org, t.world.bystander.org), what).toEqual(t.bystander);
}

describe('erasure faults', () => {
  let calls: string[] = [];

  it('a clean agent erasure: its AWS calls, and the receipt equals the independent inventory', async () => {
    const { svc } = ctx;
    const t = await templateWorld();
    expect(t.inventory.runs).toBe(6); // 4 + 1 + 1
    expect(t.inventory.keys.filter((k) => k.startsWith('uploads/'))).toHaveLength(1);
    expect(t.inventory.keys.filter((k) => k.startsWith('materialized/'))).toHaveLength(1);
    const w = await freshWorld('clean');
    // A copy is the same data: the same inventory under other keys.
    expect(renameOrg(await inventoryOf(svc, w.doomed), w.bystander.org, t.world.bystander.org)).toEqual(t.inventory);
    const plan = new FaultPlan();
    const r = await eraseScope(faultyStore(svc, plan), agentScope(w.doomed[0]!));
    calls = [...plan.calls];
    expect(counts(r)).toEqual({ conversations: 3, runs: t.inventory.runs, objects: t.inventory.objects, bytes: t.inventory.bytes });
    for (const s of w.doomed) await expectErased(svc, s);
    // Pointer (read, create), receipt, scope fence, ...; one DeleteObjects per conversation; the pointer goes last.
    expect(calls.slice(0, 4)).toEqual(['GetItemCommand', 'PutItemCommand', 'PutItemCommand', 'UpdateItemCommand']);
    expect(calls.filter((c) => c === 'DeleteObjectsCommand')).toHaveLength(3);
    expect(calls.at(-1)).toBe('DeleteItemCommand');
  });

  for (const mode of ['before', 'after'] as const) {
    it(`fails ${mode} call N for every N; the next erasure resumes it: counts equal the inventory, nothing of the scope remains`, async () => {
      expect(calls.length).toBeGreaterThan(30);
      // Four at a time: each on an organization of its own, with a fault plan of its own.
      for (let n = 1; n <= calls.length; n += 4) {
        const batch = await Promise.allSettled([n, n + 1, n + 2, n + 3].filter((k) => k <= calls.length).map((k) => crashAndResume(mode, k)));
        for (const r of batch) if (r.status === 'rejected') throw r.reason;
      }
    }, 300_000);
  }
});

describe('erasure and writers', () => {
  /**
   * A write admitted before the organization's erasure, paused just before its HEAD write (the publish)
   * until the erasure has completed: it must not land.
   */
  async function pausedWrite(s: Scope, runId: number): Promise<void> {
    const { svc } = ctx;
    const paused = gate();
    const reached = gate();
    let armed = true;
    const plan = new FaultPlan().onCall(async (name) => {
      if (armed && name === 'UpdateItemCommand') {
        armed = false;
        reached.open();
        await paused.wait;
      }
    });
    const write = withFaultyService(svc, plan, (api) => api.write(s, runId, `{"late":${runId}}\n`));
    await reached.wait; // admitted, object and claim stored, HEAD write pending
    const r = await eraseScope(svc.store, { organizationId: s.org });
    expect(r.state).toBe('completed');
    paused.open();
    await expectError(write, ERRORS.resetFenced);
    await expectErased(svc, s);
    expect(await orgItems(svc, encodeId(s.org), 'CONV#')).toEqual([]);
    expect(await ctx.api.hydrate(s)).toBeUndefined();
  }

  it('a registered conversation: a write paused before its HEAD write while the organization is erased never lands', async () => {
    const s = isolatedScope('paused');
    await seedConversation(ctx.api, s, { full: false });
    await pausedWrite(s, 2);
  });

  it('a brand-new conversation: its first write (which registers it) paused before its HEAD write never lands', async () => {
    const s = isolatedScope('paused-new');
    await pausedWrite(s, 1);
  });

  it('a write while the erasure holds the fence (`erasing` set) is answered 409 reset_fenced; after it, writes land again', async () => {
    const { svc, api } = ctx;
    const s = isolatedScope('erasing');
    const fresh = { ...s, conv: `${s.conv}-new` };
    await seedConversation(api, s, { full: false });
    // Pause the erasure after its fence: at its first Query (the receipt's progress items).
    const paused = gate();
    const reached = gate();
    let armed = true;
    const plan = new FaultPlan().onCall(async (name) => {
      if (armed && name === 'QueryCommand') {
        armed = false;
        reached.open();
        await paused.wait;
      }
    });
    const erasure = eraseScope(faultyStore(svc, plan), { organizationId: s.org });
    await reached.wait;
    expect((await orgItems(svc, encodeId(s.org), 'FENCE'))[0]).toHaveProperty('erasing');
    await expectError(api.write(s, 2, '{"during":2}\n'), ERRORS.resetFenced);
    await expectError(api.write(fresh, 1, '{"during":1}\n'), ERRORS.resetFenced);
    await expectError(api.write(s, 3, '{"during":3}\n', 'failed'), ERRORS.resetFenced);
    paused.open();
    expect((await erasure).state).toBe('completed');
    for (const c of [s, fresh]) {
      expect(await objectsOf(svc, c)).toEqual([]);
      expect((await itemsOf(svc, pkOf(c))).filter((i) => i['sk'] !== 'HEAD')).toEqual([]);
    }
    const res = await api.write(s, 4, '{"after":4}\n');
    expect(res.status, await res.text()).toBe(200);
    expect((await api.hydrate(s))?.runId).toBe(4);
  });
});
