/**
 * Isolation of the operator API (docs/DESIGN.md § Operator API, I6 for admin tokens): an admin token reaches
 * only its own organization, whatever ids it sends (fast-check: unicode, `/`, `%2F`, `..`, ids long enough to
 * be hashed into their key segment, another organization's ids) and whatever cursor it sends (forged, altered,
 * from another organization, agent, conversation or listing); worker tokens never pass an admin route; an
 * admin token is a worker token only when it also carries the worker claims.
 */
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_PATHS, ERRORS, SNAPSHOT_PATH } from '../../functions/lib/contract.js';
import { AdminApi, type LinesAnswer, type ListedConversation, type ListedRun } from '../helpers/admin.js';
import { useLocalService, type Scope } from '../helpers/service.js';
import { expectError, storeFingerprint } from './support.js';

const local = useLocalService();
let admin: AdminApi;
beforeAll(() => {
  admin = new AdminApi(local.svc);
});

/** Ids that are hard on key encoding: path tricks, percent escapes, unicode, and lengths past the hashing threshold. */
const trickyId = fc.oneof(
  fc.constantFrom('a', '..', '.', '/', 'a/b', 'a%2Fb', '%2F', '~', '~org#x', 'CONV#a', 'HEAD', 'RUN#0000000000000001', 'a\u0000b', 'é', '😀', ' '),
  fc.string({ minLength: 1, maxLength: 12, unit: 'grapheme' }),
  fc.string({ minLength: 1, maxLength: 12 }).map((s) => `${s}/../${s}`),
  fc.string({ minLength: 201, maxLength: 260, unit: 'grapheme-ascii' }), // hashed segments (> 200 chars escaped)
  fc.string({ minLength: 70, maxLength: 90, unit: 'grapheme' }).map((s) => `${s}é`), // escapes past 200 → hashed
).filter((s) => s.length > 0 && s.isWellFormed() && Buffer.byteLength(s) <= 1024);

const known = new Set(Object.values(ERRORS).map((e) => e.code));

describe('an admin token reaches only its own organization', () => {
  it('never lists, reads or pages another organization’s conversations, whatever the ids (fast-check)', async () => {
    let n = 0;
    await fc.assert(
      fc.asyncProperty(trickyId, trickyId, trickyId, async (agentId, conversationId, orgSuffix) => {
        n += 1;
        // The victim and the attacker differ only in the organization (and the attacker's looks alike).
        const victimOrg = `victim-${process.pid}-${n}`;
        const attackerOrgs = [`${victimOrg}/${orgSuffix}`, `${victimOrg}${orgSuffix}`, encodeURIComponent(victimOrg) + '%2F'];
        const victim: Scope = { org: victimOrg, agent: agentId, conv: conversationId };
        const body = `{"secret":${JSON.stringify(orgSuffix)}}\n`;
        const res = await local.api.write(victim, 1, body);
        expect(res.status).toBe(200);

        // Positive control: the victim's own admin sees exactly its conversation, raw ids intact.
        const own = await admin.token(victimOrg);
        const listed = await admin.json<{ conversations: ListedConversation[] }>(ADMIN_PATHS.conversations, {}, own);
        expect(listed.conversations.map((c) => [c.agentId, c.conversationId])).toEqual([[agentId, conversationId]]);
        const lines = await admin.json<LinesAnswer>(ADMIN_PATHS.lines, { agentId, conversationId }, own);
        expect(lines.lines.map((l) => l.text)).toEqual([body.trimEnd()]);
        const ownCursor = (await admin.json<{ nextCursor: string | null }>(ADMIN_PATHS.conversations, { limit: 1 }, own)).nextCursor;

        for (const attackerOrg of attackerOrgs) {
          if (attackerOrg === victimOrg) continue;
          const token = await admin.token(attackerOrg);
          const ids = { agentId, conversationId };
          const conversations = await admin.json<{ conversations: ListedConversation[] }>(ADMIN_PATHS.conversations, {}, token);
          expect(conversations.conversations).toEqual([]);
          const byAgent = await admin.json<{ conversations: ListedConversation[] }>(ADMIN_PATHS.conversations, { agentId }, token);
          expect(byAgent.conversations).toEqual([]);
          expect((await admin.json<{ agents: unknown[] }>(ADMIN_PATHS.agents, {}, token)).agents).toEqual([]);
          await expectError(await admin.get(ADMIN_PATHS.runs, ids, token), ERRORS.notFound);
          await expectError(await admin.get(ADMIN_PATHS.run, { ...ids, runId: 1 }, token), ERRORS.notFound);
          await expectError(await admin.get(ADMIN_PATHS.lines, ids, token), ERRORS.notFound);
          await expectError(await admin.get(ADMIN_PATHS.lines, { ...ids, runId: 1 }, token), ERRORS.notFound);
          if (ownCursor) await expectError(await admin.get(ADMIN_PATHS.conversations, { cursor: ownCursor }, token), ERRORS.invalidCursor);
        }
      }),
      { numRuns: 20 },
    );
  });

  it('refuses cursors of another organization, agent, conversation, run or listing, and altered or forged ones', async () => {
    const org = `cursors-${process.pid}`;
    const other = `${org}-other`;
    const a: Scope = { org, agent: 'agent-a', conv: 'c1' };
    const lines = Array.from({ length: 5 }, (_, i) => `{"line":${i}}\n`).join('');
    for (const s of [a, { ...a, conv: 'c2' }, { ...a, conv: 'c3' }, { ...a, agent: 'agent-b' }, { ...a, agent: 'agent-c' }, { org: other, agent: 'agent-a', conv: 'c1' }, { org: other, agent: 'agent-a', conv: 'c2' }]) {
      for (const runId of [1, 2, 3]) expect((await local.api.write(s, runId, lines)).status).toBe(200);
    }
    const token = await admin.token(org);
    const otherToken = await admin.token(other);
    const next = async (path: string, params: Record<string, string | number>, t = token) => (await admin.json<{ nextCursor: string }>(path, { ...params, limit: 1 }, t)).nextCursor;
    const cursors = {
      conversations: await next(ADMIN_PATHS.conversations, {}),
      conversationsA: await next(ADMIN_PATHS.conversations, { agentId: 'agent-a' }),
      runs: await next(ADMIN_PATHS.runs, { agentId: 'agent-a', conversationId: 'c1' }),
      lines: await next(ADMIN_PATHS.lines, { agentId: 'agent-a', conversationId: 'c1' }),
      agents: await next(ADMIN_PATHS.agents, {}),
      otherConversations: await next(ADMIN_PATHS.conversations, {}, otherToken),
      otherRuns: await next(ADMIN_PATHS.runs, { agentId: 'agent-a', conversationId: 'c1' }, otherToken),
      otherLines: await next(ADMIN_PATHS.lines, { agentId: 'agent-a', conversationId: 'c1' }, otherToken),
    };
    for (const c of Object.values(cursors)) expect(typeof c).toBe('string');
    const c1 = { agentId: 'agent-a', conversationId: 'c1' };
    const refusals: [string, Record<string, string | number>][] = [
      // another listing
      [ADMIN_PATHS.conversations, { cursor: cursors.runs }],
      [ADMIN_PATHS.runs, { ...c1, cursor: cursors.conversations }],
      [ADMIN_PATHS.lines, { ...c1, cursor: cursors.runs }],
      [ADMIN_PATHS.agents, { cursor: cursors.conversations }],
      // another agent filter / agent
      [ADMIN_PATHS.conversations, { agentId: 'agent-b', cursor: cursors.conversationsA }],
      [ADMIN_PATHS.conversations, { cursor: cursors.conversationsA }],
      [ADMIN_PATHS.runs, { agentId: 'agent-b', conversationId: 'c1', cursor: cursors.runs }],
      // another conversation / run
      [ADMIN_PATHS.runs, { agentId: 'agent-a', conversationId: 'c2', cursor: cursors.runs }],
      [ADMIN_PATHS.lines, { agentId: 'agent-a', conversationId: 'c2', cursor: cursors.lines }],
      [ADMIN_PATHS.lines, { ...c1, runId: 1, cursor: cursors.lines }],
      // another organization (same ids)
      [ADMIN_PATHS.conversations, { cursor: cursors.otherConversations }],
      [ADMIN_PATHS.runs, { ...c1, cursor: cursors.otherRuns }],
      [ADMIN_PATHS.lines, { ...c1, cursor: cursors.otherLines }],
    ];
    for (const [path, params] of refusals) await expectError(await admin.get(path, params, token), ERRORS.invalidCursor);

    // Altered: any single character changed, dropped or added.
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...Object.entries(cursors).filter(([k]) => !k.startsWith('other'))), fc.nat(), fc.constantFrom('A', 'B', '_', '-', '.', 'z', '0'), fc.constantFrom('replace', 'drop', 'insert'), async ([kind, cursor], at, ch, how) => {
        const i = at % cursor.length;
        const altered = how === 'replace' ? cursor.slice(0, i) + ch + cursor.slice(i + 1) : how === 'drop' ? cursor.slice(0, i) + cursor.slice(i + 1) : cursor.slice(0, i) + ch + cursor.slice(i);
        if (altered === cursor) return;
        const [path, params] = routeOf(kind, c1);
        const res = await admin.get(path, { ...params, cursor: altered }, token);
        // base64url decoding ignores some trailing bits: a change there can leave the same bytes.
        if (res.status === 200) expect(Buffer.from(altered.split('.')[1] ?? '', 'base64url').equals(Buffer.from(cursor.split('.')[1]!, 'base64url'))).toBe(true);
        else await expectError(res, ERRORS.invalidCursor);
      }),
      { numRuns: 150 },
    );

    // Forged: any string, or a well-formed payload with a made-up MAC.
    const forged = fc.oneof(
      fc.string({ maxLength: 300 }),
      fc.record({ k: fc.constantFrom('conversations', 'runs', 'lines', 'agents'), p: fc.string(), key: fc.object(), after: fc.string() }).map(
        (p) => `${Buffer.from(JSON.stringify(p)).toString('base64url')}.${Buffer.alloc(32, 7).toString('base64url')}`,
      ),
    );
    await fc.assert(
      fc.asyncProperty(forged, fc.constantFrom('conversations', 'runs', 'lines', 'agents'), async (cursor, kind) => {
        const [path, params] = routeOf(kind, c1);
        const res = await admin.get(path, { ...params, cursor }, token);
        await expectError(res, ERRORS.invalidCursor);
      }),
      { numRuns: 150 },
    );
  });
});

function routeOf(kind: string, c1: { agentId: string; conversationId: string }): [string, Record<string, string>] {
  if (kind.startsWith('conversations')) return [ADMIN_PATHS.conversations, kind === 'conversationsA' ? { agentId: 'agent-a' } : {}];
  if (kind === 'runs') return [ADMIN_PATHS.runs, c1];
  if (kind === 'lines') return [ADMIN_PATHS.lines, c1];
  return [ADMIN_PATHS.agents, {}];
}

describe('token kinds do not mix', () => {
  const org = `kinds-${process.pid}`;
  const scope: Scope = { org, agent: 'agent', conv: 'conv' };
  const adminRoutes: [string, Record<string, string | number>][] = [
    [ADMIN_PATHS.conversations, {}],
    [ADMIN_PATHS.runs, { agentId: scope.agent, conversationId: scope.conv }],
    [ADMIN_PATHS.run, { agentId: scope.agent, conversationId: scope.conv, runId: 1 }],
    [ADMIN_PATHS.lines, { agentId: scope.agent, conversationId: scope.conv }],
    [ADMIN_PATHS.agents, {}],
  ];

  beforeAll(async () => {
    expect((await local.api.write(scope, 1, '{"x":1}\n')).status).toBe(200);
  });

  it('worker tokens (conversation, per-run, any ids, any other scope claim) never pass an admin route: 403', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({ agent: trickyId, conv: trickyId, runId: fc.option(fc.integer({ min: 1, max: 10 }), { nil: undefined }), scope: fc.option(fc.constantFrom('openid', 'transcripts:read', 'transcripts:admin:x', 'TRANSCRIPTS:ADMIN', 'transcripts:admin,x', ''), { nil: undefined }) }),
        fc.constantFrom(...adminRoutes),
        async (w, [path, params]) => {
          const token = await local.svc.mintToken({ org, agent: w.agent, conv: w.conv, ...(w.runId !== undefined && { runId: w.runId }), ...(w.scope !== undefined && { scope: w.scope }) });
          await expectError(await admin.get(path, params, token), ERRORS.adminScopeRequired);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('an admin token without the worker claims gets 400 missing_scope on every worker route, and changes nothing', async () => {
    const before = await storeFingerprint(local.svc);
    const token = await admin.token(org);
    const auth = { authorization: `Bearer ${token}` };
    const url = `${local.svc.url}${SNAPSHOT_PATH}`;
    await expectError(await fetch(url, { headers: auth }), ERRORS.missingScope);
    await expectError(await fetch(url, { method: 'DELETE', headers: auth }), ERRORS.missingScope);
    await expectError(
      await fetch(url, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify({ terminalStatus: 'completed', snapshotJsonl: 'x\n', runId: 1 }) }),
      ERRORS.missingScope,
    );
    await expectError(
      await fetch(`${url}/uploads`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify({ runId: 1, bytes: 10 }) }),
      ERRORS.missingScope,
    );
    expect(await storeFingerprint(local.svc)).toBe(before);
  });

  it('an admin token that also carries worker claims is a worker token for exactly that conversation', async () => {
    const token = await admin.token(org, { agent: scope.agent, conv: scope.conv });
    const res = await fetch(`${local.svc.url}${SNAPSHOT_PATH}`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('{"x":1}\n');
    // …and still an admin token of its organization only.
    const runs = await admin.json<{ runs: ListedRun[] }>(ADMIN_PATHS.runs, { agentId: scope.agent, conversationId: scope.conv }, token);
    expect(runs.runs.map((r) => r.runId)).toEqual([1]);
  });

  it('answers only documented errors to arbitrary query strings on admin routes, never a 5xx', async () => {
    const token = await admin.token(org);
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...adminRoutes.map(([p]) => p)), fc.string({ maxLength: 200, unit: 'binary' }), async (path, q) => {
        const res = await admin.raw(`${path}?${encodeURI(q).replaceAll('#', '%23')}`, token);
        const text = await res.text();
        expect(res.status, text).toBeLessThan(500);
        if (res.status !== 200) expect(known.has((JSON.parse(text) as { code: string }).code)).toBe(true);
      }),
      { numRuns: 200 },
    );
  });
});
