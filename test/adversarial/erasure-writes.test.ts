/**
 * Adversarial: every kind of write paused before EACH of its AWS calls while an erasure of its conversation,
 * its agent or its organization runs to completion (docs/DESIGN.md § Erasure, Semantics at the edges). Then
 * the write goes on. Invariants, whatever the point:
 *
 *   - the write is answered 200, 400, 409 or 412 — never a 5xx;
 *   - a write admitted before the erasure (paused at its second call or later) never lands after it: the
 *     conversation is an unlisted HEAD tombstone, no record, no object, no registry item, not listed;
 *   - a write paused before its very first call is admitted after the erasure: new data, and when it is
 *     served it is served byte-exact and is all that is stored (one run), registered and listed.
 *
 * Kinds: a whole-file write that extends the latest (stored as an append), one that starts a new chain, a
 * failed run, an append, a presigned upload's commit, and the first write of a new conversation.
 */
import { describe, expect, it } from 'vitest';
import { encodeId } from '../../functions/lib/ids.js';
import { eraseScope, type ErasureScope } from '../../functions/lib/store/erasure.js';
import { AdminApi, ADMIN_PATHS } from '../helpers/admin.js';
import { len, sha } from '../helpers/append.js';
import { expectErased, inventoryOf, isolatedScope, itemsOf, orgItems, pkOf } from '../helpers/erasure.js';
import { FaultPlan, gate, withFaultyService } from '../helpers/faults.js';
import { useLocalService, type Api, type Scope } from '../helpers/service.js';
import { createUpload, putUpload, type Ticket } from '../helpers/uploads.js';

const ctx = useLocalService();

type Kind = 'conversation' | 'agent' | 'organization';
const scopeOf = (kind: Kind, s: Scope): ErasureScope =>
  kind === 'organization' ? { organizationId: s.org } : kind === 'agent' ? { organizationId: s.org, agentId: s.agent } : { organizationId: s.org, agentId: s.agent, conversationId: s.conv };

const BASE = '{"run":1,"text":"é🚀"}\n';

interface WriteKind {
  /** Seeds the conversation before the race (run 1 unless `fresh`), and prepares what the write needs. */
  prepare(s: Scope): Promise<(api: Api) => Promise<Response>>;
  /** What hydrate serves when the write lands. */
  readonly content: string | undefined;
  /** A conversation of its own with nothing stored before (the write registers it). */
  readonly fresh?: boolean;
}

async function seed(s: Scope): Promise<void> {
  const res = await ctx.api.write(s, 1, BASE);
  expect(res.status).toBe(200);
  await res.body?.cancel();
}

const KINDS: Record<string, WriteKind> = {
  'whole-file extending the latest': {
    content: `${BASE}{"run":2}\n`,
    prepare: async (s) => {
      await seed(s);
      return (api) => api.write(s, 2, `${BASE}{"run":2}\n`);
    },
  },
  'whole-file on a new chain': {
    content: '{"other":2}\n',
    prepare: async (s) => {
      await seed(s);
      return (api) => api.write(s, 2, '{"other":2}\n');
    },
  },
  'failed run': {
    content: undefined,
    prepare: async (s) => {
      await seed(s);
      return (api) => api.write(s, 2, `${BASE}{"partial":2}\n`, 'failed');
    },
  },
  append: {
    content: `${BASE}{"appended":2}\n`,
    prepare: async (s) => {
      await seed(s);
      const added = '{"appended":2}\n';
      return async (api) => api.post(await api.token(s, { runId: 2 }), { runId: 2, terminalStatus: 'completed', appendJsonl: added, base: { runId: 1, bytes: len(BASE), sha256: sha(BASE) }, sha256: sha(BASE + added) });
    },
  },
  'upload commit': {
    content: '{"uploaded":2}\n',
    prepare: async (s) => {
      await seed(s);
      const data = Buffer.from('{"uploaded":2}\n');
      const token = await ctx.api.token(s, { runId: 2 });
      const created = await createUpload(ctx.api, token, { runId: 2, bytes: data.length, contentEncoding: 'identity' });
      const ticket = (await created.json()) as Ticket;
      await putUpload(ticket, data);
      return (api) => api.post(token, { terminalStatus: 'completed', runId: 2, uploadId: ticket.uploadId });
    },
  },
  'first write of a new conversation': {
    content: '{"first":1}\n',
    fresh: true,
    prepare: async (s) => {
      // Another conversation of the same agent, so that the erasure has something of its own to do.
      await seed({ ...s, conv: `${s.conv}-sibling` });
      return (api) => api.write(s, 1, '{"first":1}\n');
    },
  },
};

/** The AWS calls of one write of `kind` on a world of its own, without any erasure. */
async function callsOf(kind: WriteKind): Promise<number> {
  const s = isolatedScope('probe');
  const write = await kind.prepare(s);
  const plan = new FaultPlan();
  const res = await withFaultyService(ctx.svc, plan, write);
  expect(res.status, await res.text()).toBe(200);
  return plan.calls.length;
}

async function trial(name: string, kind: WriteKind, scope: Kind, k: number): Promise<void> {
  const { svc, api } = ctx;
  const s = isolatedScope(`w${k}`);
  const write = await kind.prepare(s);
  const reached = gate();
  const paused = gate();
  let n = 0;
  const plan = new FaultPlan().onCall(async () => {
    if (++n === k) {
      reached.open();
      await paused.wait;
    }
  });
  const writing = withFaultyService(svc, plan, async (faulty) => {
    const res = await write(faulty);
    return { status: res.status, text: await res.text() };
  });
  await reached.wait;
  const what = `${name}, ${scope} erased while paused before call ${k} (${plan.calls[k - 1]})`;
  expect((await eraseScope(svc.store, scopeOf(scope, s))).state, what).toBe('completed');
  paused.open();
  const res = await writing;
  expect([200, 400, 409, 412], `${what}: ${res.status} ${res.text}`).toContain(res.status);

  const served = await api.hydrate(s);
  const registry = (await orgItems(svc, encodeId(s.org), 'CONV#')).filter((i) => i['sk'] === `CONV#${encodeId(s.agent)}/${encodeId(s.conv)}`);
  const admin = new AdminApi(svc);
  const listed = (await admin.json<{ conversations: { conversationId: string }[] }>(ADMIN_PATHS.conversations, { agentId: s.agent }, await admin.token(s.org))).conversations.some(
    (c) => c.conversationId === s.conv,
  );
  if (k >= 2) {
    // Admitted before the erasure: nothing of it (nor of what was there) outlives the erasure.
    expect(served, what).toBeUndefined();
    if ((await itemsOf(svc, pkOf(s))).length > 0) await expectErased(svc, s);
    else expect(await inventoryOf(svc, [s]), what).toMatchObject({ runs: 0, objects: 0 });
    expect(registry, what).toEqual([]);
    expect(listed, what).toBe(false);
    return;
  }
  // Admitted after the erasure: new data.
  if (res.status === 200 && kind.content !== undefined) {
    expect(served?.body.toString('utf8'), what).toBe(kind.content);
    expect(await inventoryOf(svc, [s]), what).toMatchObject({ runs: 1 });
  } else {
    expect(served, what).toBeUndefined();
  }
  if (res.status === 200) {
    expect(registry, what).toHaveLength(1);
    expect(listed, what).toBe(true);
  }
}

describe('a write racing an erasure at each of its AWS calls', () => {
  for (const [name, kind] of Object.entries(KINDS)) {
    it(name, async () => {
      const total = await callsOf(kind);
      expect(total).toBeGreaterThanOrEqual(3);
      const points: [Kind, number][] = [];
      for (const scope of ['conversation', 'agent', 'organization'] as const) for (let k = 1; k <= total; k++) points.push([scope, k]);
      for (let i = 0; i < points.length; i += 4) {
        const batch = await Promise.allSettled(points.slice(i, i + 4).map(([scope, k]) => trial(name, kind, scope, k)));
        for (const r of batch) if (r.status === 'rejected') throw r.reason;
      }
    }, 120_000);
  }
});
