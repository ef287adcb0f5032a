/**
 * Adversarial: the operator API's isolation and its answers to bad input (docs/DESIGN.md § Operator API).
 *
 *   - An admin token of organization A never lists, reads, counts, pages, erases or sees a receipt of anything
 *     of another organization — whose ids are chosen to collide with A's keys: A's id followed by `/…` or
 *     `%2F…`, a 1 KiB id (a hashed segment), `~org#<A>`, and conversations with ids `/`, `%2F`, `..`, NUL,
 *     unicode and 1 KiB (hashed) ids. Cursors of the other organization, truncated or re-signed ones: 400.
 *   - Tokens with `scope` as an array, `transcripts:admin` as a substring or tab-joined, `organizationId` of the
 *     wrong type: 403 / 400 missing_scope; a worker token on every admin route 403; an admin token on the worker
 *     routes 400 missing_scope.
 *   - Bad query strings on every admin route (repeated names, `__proto__`, bad percent-encoding, huge/negative/
 *     float/hex numbers, empty values) and bad erasure bodies (not JSON, arrays, extra fields, 1 MB, codings):
 *     the documented 4xx with the `{error, code}` body, never a 500, and the store unchanged — no receipt either.
 *   - Unknown paths and methods under /admin through the local adapter: 404 in the contract's shape.
 */
import { gzipSync } from 'node:zlib';
import { SignJWT, type JWTPayload } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_PATHS, ERRORS, errorBody, type ErrorSpec } from '../../functions/lib/contract.js';
import { encodeId } from '../../functions/lib/ids.js';
import { listReceipts } from '../../functions/lib/store/erasure.js';
import { AdminApi, cursorPayload } from '../helpers/admin.js';
import { itemsOf, objectsOf, pkOf } from '../helpers/erasure.js';
import { useLocalService, type Scope } from '../helpers/service.js';

const SECRET = 'adversarial-admin-isolation-secret-0123456789';
const ctx = useLocalService({ env: { ...process.env, JWT_SECRET: SECRET } });
const now = () => Math.floor(Date.now() / 1000);

const A = `iso-a-${process.pid}-${Date.now()}`;
/** Organizations whose ids are built to collide with A's keys, each with conversations of hostile ids. */
const OTHERS = [`${A}/agent-1`, `${A}%2Fagent-1`, 'o'.repeat(1000 - A.length) + A, `~org#${A}`, `${A}/..`, `${A}\u0000`];
const HOSTILE = ['/', '%2F', '..', '.', 'é 💥', '\u0000', 'c'.repeat(1024), `~org#${encodeId(A)}`, encodeId(A), 'agent-1/c'];

const sign = (claims: JWTPayload) =>
  new SignJWT({ iat: now(), exp: now() + 600, ...claims }).setProtectedHeader({ alg: 'HS256', typ: 'JWT' }).sign(new TextEncoder().encode(SECRET));

let admin: AdminApi;
let tokenA: string;
/** A's one conversation. */
const mine: Scope = { org: A, agent: 'agent-1', conv: 'c' };
/** Every conversation of the other organizations. */
const theirs: Scope[] = [];

async function write(s: Scope, runId: number, body: string): Promise<void> {
  const res = await ctx.api.write(s, runId, body);
  expect(res.status, await res.clone().text()).toBe(200);
  await res.body?.cancel();
}

async function expectError(res: Response, spec: ErrorSpec, what = ''): Promise<void> {
  const text = await res.text();
  expect(res.status, `${what} ${text}`).toBe(spec.status);
  expect(res.headers.get('content-type'), what).toMatch(/^application\/json/);
  expect(JSON.parse(text), what).toEqual(errorBody(spec));
}

/** Everything stored for every organization of the test: their conversations and partitions, and their receipts. */
async function world(): Promise<unknown> {
  const orgs = [A, ...OTHERS];
  // Object keys are unique per write (nothing here rewrites a key), so keys and sizes picture the bytes.
  const conversations: Record<string, { items: unknown[]; objects: Record<string, number> }> = {};
  await Promise.all(
    [mine, ...theirs].map(async (s) => {
      const objects = Object.fromEntries((await objectsOf(ctx.svc, s)).map((o) => [o.key, o.size]));
      conversations[pkOf(s)] = { items: await itemsOf(ctx.svc, pkOf(s)), objects };
    }),
  );
  return {
    conversations,
    partitions: await Promise.all(orgs.map((o) => itemsOf(ctx.svc, `~org#${encodeId(o)}`))),
    receipts: await Promise.all(orgs.map(async (o) => (await listReceipts(ctx.svc.store, o)).receipts.length)),
  };
}

beforeAll(async () => {
  admin = new AdminApi(ctx.svc);
  tokenA = await admin.token(A);
  await write(mine, 1, '{"mine":1}\n');
  await write(mine, 2, '{"mine":1}\n{"mine":2}\n');
  for (const org of OTHERS) {
    const scopes = HOSTILE.map((id) => ({ org, agent: id, conv: id }));
    theirs.push(...scopes);
    await Promise.all(
      scopes.map(async (s) => {
        await write(s, 1, `${JSON.stringify({ org, id: s.conv })}\n`);
        // Two runs where cursors are needed (limit 1).
        if (org === OTHERS[0]) await write(s, 2, `${JSON.stringify({ org, id: s.conv })}\n${JSON.stringify({ second: s.conv })}\n`);
      }),
    );
  }
}, 120_000);

describe('an admin token reaches its own organization only', () => {
  it('lists only its own conversations and agents, whatever the other organizations are called', async () => {
    const conversations = await admin.all<{ agentId: string; conversationId: string }>(ADMIN_PATHS.conversations, 'conversations', {}, tokenA);
    expect(conversations.items.map((c) => [c.agentId, c.conversationId])).toEqual([[mine.agent, mine.conv]]);
    const agents = await admin.all<{ agentId: string; conversations: number }>(ADMIN_PATHS.agents, 'agents', {}, tokenA);
    expect(agents.items).toEqual([{ agentId: mine.agent, conversations: 1, runs: 2, bytes: expect.any(Number) }]);
    for (const id of HOSTILE) {
      const page = await admin.json<{ conversations: unknown[] }>(ADMIN_PATHS.conversations, { agentId: id }, tokenA);
      expect(page.conversations, JSON.stringify(id)).toEqual([]);
    }
  });

  it('answers 404 for runs, a run and lines of every conversation of the other organizations', async () => {
    for (const s of theirs) {
      const q = { agentId: s.agent, conversationId: s.conv };
      const what = JSON.stringify(s).slice(0, 80);
      await expectError(await admin.get(ADMIN_PATHS.runs, q, tokenA), ERRORS.notFound, what);
      await expectError(await admin.get(ADMIN_PATHS.run, { ...q, runId: 1 }, tokenA), ERRORS.notFound, what);
      await expectError(await admin.get(ADMIN_PATHS.lines, q, tokenA), ERRORS.notFound, what);
      await expectError(await admin.get(ADMIN_PATHS.lines, { ...q, runId: 2 }, tokenA), ERRORS.notFound, what);
    }
  });

  it('refuses every cursor of another organization, and cursors cut short or re-signed', async () => {
    const other = OTHERS[0]!;
    const tokenB = await admin.token(other);
    const s = theirs.find((t) => t.org === other)!;
    const q = { agentId: s.agent, conversationId: s.conv };
    const pages = {
      conversations: await admin.json<{ nextCursor: string }>(ADMIN_PATHS.conversations, { limit: 1 }, tokenB),
      agents: await admin.json<{ nextCursor: string }>(ADMIN_PATHS.agents, { limit: 1 }, tokenB),
      runs: await admin.json<{ nextCursor: string }>(ADMIN_PATHS.runs, { ...q, limit: 1 }, tokenB),
      lines: await admin.json<{ nextCursor: string }>(ADMIN_PATHS.lines, { ...q, limit: 1 }, tokenB),
    };
    for (const [name, page] of Object.entries(pages)) expect(page.nextCursor, name).toEqual(expect.any(String));
    // The same request with A's token (same ids: A has no such conversation, the cursor is B's).
    const calls: [string, Record<string, string | number>][] = [
      [ADMIN_PATHS.conversations, { cursor: pages.conversations.nextCursor }],
      [ADMIN_PATHS.agents, { cursor: pages.agents.nextCursor }],
      [ADMIN_PATHS.runs, { ...q, cursor: pages.runs.nextCursor }],
      [ADMIN_PATHS.lines, { ...q, cursor: pages.lines.nextCursor }],
      // B's runs and lines cursors on A's own conversation.
      [ADMIN_PATHS.runs, { agentId: mine.agent, conversationId: mine.conv, cursor: pages.runs.nextCursor }],
      [ADMIN_PATHS.lines, { agentId: mine.agent, conversationId: mine.conv, cursor: pages.lines.nextCursor }],
    ];
    for (const [path, params] of calls) await expectError(await admin.get(path, params, tokenA), ERRORS.invalidCursor, path);

    // A's own cursor, altered: cut short, payload swapped (MAC of the original), another org's payload with A's MAC.
    const own = await admin.json<{ nextCursor: string }>(ADMIN_PATHS.runs, { agentId: mine.agent, conversationId: mine.conv, limit: 1 }, tokenA);
    const [payload, mac] = own.nextCursor.split('.') as [string, string];
    const forged = Buffer.from(JSON.stringify({ ...cursorPayload(own.nextCursor), key: { pk: `${encodeId(other)}/${encodeId(s.agent)}/${encodeId(s.conv)}`, sk: 'RUN#0000000000000002' } })).toString('base64url');
    for (const bad of [own.nextCursor.slice(0, -1), payload, `${payload}.`, `.${mac}`, `${forged}.${mac}`, `${pages.runs.nextCursor.split('.')[0]}.${mac}`, 'x'.repeat(5000)]) {
      await expectError(await admin.get(ADMIN_PATHS.runs, { agentId: mine.agent, conversationId: mine.conv, cursor: bad }, tokenA), ERRORS.invalidCursor, bad.slice(0, 40));
    }
  });

});

describe('tokens', () => {
  const routes = [
    ['GET', ADMIN_PATHS.conversations],
    ['GET', `${ADMIN_PATHS.runs}?agentId=a&conversationId=c`],
    ['GET', `${ADMIN_PATHS.run}?agentId=a&conversationId=c&runId=1`],
    ['GET', `${ADMIN_PATHS.lines}?agentId=a&conversationId=c`],
    ['GET', ADMIN_PATHS.agents],
    ['POST', ADMIN_PATHS.erasures],
    ['GET', ADMIN_PATHS.erasures],
    ['GET', `${ADMIN_PATHS.erasures}/20260101T000000000Z-x`],
  ] as const;

  it('403 admin_scope_required: scope as an array, as a substring, tab-joined, another case; and a worker token', async () => {
    const before = await world();
    const tokens = [
      await sign({ organizationId: A, scope: ['transcripts:admin'] }),
      await sign({ organizationId: A, scope: 'transcripts:admin2' }),
      await sign({ organizationId: A, scope: 'xtranscripts:admin' }),
      await sign({ organizationId: A, scope: 'transcripts:admin\ttranscripts:read' }),
      await sign({ organizationId: A, scope: 'TRANSCRIPTS:ADMIN' }),
      await sign({ organizationId: A, scope: { admin: 'transcripts:admin' } }),
      await sign({ organizationId: A, scp: 'transcripts:admin' }),
      await ctx.api.token(mine),
      await ctx.api.token(mine, { runId: 1 }),
    ];
    for (const token of tokens) {
      for (const [method, path] of routes) {
        await expectError(await admin.raw(path, token, { method, ...(method === 'POST' && { body: '{}' }) }), ERRORS.adminScopeRequired, `${method} ${path}`);
      }
    }
    expect(await world()).toEqual(before);
  });

  it('400 missing_scope: organizationId of the wrong type, empty, or over 1 KiB; 401 for a sub that is not an id', async () => {
    const before = await world();
    const bad: unknown[] = [7, [A], { id: A }, '', null, true, 'x'.repeat(1025), 'a\ud800'];
    for (const organizationId of bad) {
      const token = await sign({ organizationId, scope: 'transcripts:admin' } as JWTPayload);
      for (const [method, path] of routes) {
        await expectError(await admin.raw(path, token, { method, ...(method === 'POST' && { body: '{}' }) }), ERRORS.missingScope, `${JSON.stringify(organizationId)} ${path}`);
      }
    }
    for (const sub of [7, ['x'], '', 'x'.repeat(1025)]) {
      const token = await sign({ organizationId: A, scope: 'transcripts:admin', sub } as JWTPayload);
      await expectError(await admin.raw(ADMIN_PATHS.erasures, token, { method: 'POST', body: '{}' }), ERRORS.invalidToken, JSON.stringify(sub).slice(0, 20));
    }
    expect(await world()).toEqual(before);
  });

  it('an admin token on the worker routes is 400 missing_scope and stores nothing', async () => {
    const before = await world();
    for (const token of [tokenA, await admin.token(A, { runId: 3 })]) {
      await expectError(await ctx.api.get(token), ERRORS.missingScope);
      await expectError(await ctx.api.post(token, { terminalStatus: 'completed', snapshotJsonl: 'x\n', runId: 3 }), ERRORS.missingScope);
      await expectError(await ctx.api.del(token), ERRORS.missingScope);
    }
    expect(await world()).toEqual(before);
  });
});

describe('bad input: the documented 4xx, never a 500, never a changed store', () => {
  const base: Record<string, string> = {
    [ADMIN_PATHS.conversations]: '',
    [ADMIN_PATHS.runs]: `agentId=${mine.agent}&conversationId=${mine.conv}`,
    [ADMIN_PATHS.run]: `agentId=${mine.agent}&conversationId=${mine.conv}&runId=1`,
    [ADMIN_PATHS.lines]: `agentId=${mine.agent}&conversationId=${mine.conv}`,
    [ADMIN_PATHS.agents]: '',
    [ADMIN_PATHS.erasures]: '',
  };
  const join = (...parts: string[]) => parts.filter((p) => p !== '').join('&');
  const BAD_EVERYWHERE = [
    '__proto__=1',
    '__proto__=1&__proto__=2',
    'constructor=1',
    'hasOwnProperty=1',
    'limit=0',
    'limit=-1',
    'limit=1.5',
    'limit=1e2',
    'limit=0x10',
    'limit=010',
    'limit=+5',
    'limit=%2B5',
    'limit=%31%30%30%30%30',
    'limit=99999999999999999999',
    'limit=',
    'limit',
    'limit=5&limit=5',
    'cursor=a&cursor=a',
    'cursor=%ZZ',
    'cursor=%E0%A4%A',
    'cursor=%ED%A0%80',
    'cursor=%C3',
    'unknown=1',
  ];
  const BAD_IDS = ['agentId=', 'agentId=%E0%A4%A', 'agentId=%ED%A0%80', 'agentId=%FF', `agentId=${'x'.repeat(1025)}`, `agentId=${'%C3%A9'.repeat(513)}`];

  it('every GET route: 400 invalid_query for malformed query strings', async () => {
    const before = await world();
    for (const [path, q] of Object.entries(base)) {
      const cases = [...BAD_EVERYWHERE.map((b) => join(q, b))];
      if (path !== ADMIN_PATHS.erasures && path !== ADMIN_PATHS.agents) {
        // Routes with an agentId parameter: malformed ids, given twice.
        for (const b of BAD_IDS) cases.push(join(q.replace(/agentId=[^&]*&?/, ''), b));
        cases.push(q.includes('agentId=') ? join(q, `agentId=${mine.agent}`) : `agentId=${mine.agent}&agentId=${mine.agent}`);
      }
      if (path === ADMIN_PATHS.run || path === ADMIN_PATHS.lines) {
        for (const r of ['runId=-1', 'runId=0', 'runId=1.0', 'runId=0x1', 'runId=1e3', 'runId=9007199254740993', 'runId=', 'runId=%31%00']) {
          cases.push(join(q.replace(/&?runId=\d+/, ''), r));
        }
      }
      if (path === ADMIN_PATHS.lines) cases.push(join(q, 'limit=1001'));
      else cases.push(join(q, 'limit=101'));
      for (const c of cases) await expectError(await admin.raw(`${path}?${c}`, tokenA), ERRORS.invalidQuery, `${path}?${c.slice(0, 80)}`);
    }
    // The receipt route takes no query at all, and POST /admin/erasures none either (checked before the body).
    await expectError(await admin.raw(`${ADMIN_PATHS.erasures}/20260101T000000000Z-x?x=1`, tokenA), ERRORS.invalidQuery);
    await expectError(await admin.raw(`${ADMIN_PATHS.erasures}?agentId=${mine.agent}`, tokenA, { method: 'POST', body: '{}' }), ERRORS.invalidQuery);
    expect(await world()).toEqual(before);
  });

  it('the same queries well formed are answered (the cases above fail for the one bad part)', async () => {
    for (const [path, q] of Object.entries(base)) {
      if (path === ADMIN_PATHS.erasures) continue;
      const res = await admin.raw(`${path}?${join(q, 'limit=5')}`.replace(/\?$/, ''), tokenA);
      expect(res.status, path).toBe(path === ADMIN_PATHS.run ? 400 : 200); // run takes no limit
      await res.body?.cancel();
      const plain = await admin.raw(`${path}${q ? `?${q}` : ''}`, tokenA);
      expect(plain.status, path).toBe(200);
      await plain.body?.cancel();
    }
  });

  it('POST /admin/erasures: bodies that are not a scope are 400/413/415 and erase nothing', async () => {
    const before = await world();
    const cases: [string | Buffer | undefined, Record<string, string>, ErrorSpec][] = [
      [undefined, {}, ERRORS.invalidJson],
      ['', {}, ERRORS.invalidJson],
      ['not json', {}, ERRORS.invalidJson],
      ['[]', {}, ERRORS.invalidJson],
      ['[{}]', {}, ERRORS.invalidJson],
      ['null', {}, ERRORS.invalidJson],
      ['"{}"', {}, ERRORS.invalidJson],
      ['7', {}, ERRORS.invalidJson],
      ['{"agentId":"a"', {}, ERRORS.invalidJson],
      [Buffer.from([0x7b, 0xff, 0x7d]), { 'content-type': 'application/octet-stream' }, ERRORS.invalidJson],
      ['{"agentId":"a","extra":1}', {}, ERRORS.invalidErasureScope],
      ['{"__proto__":{"agentId":"a"}}', {}, ERRORS.invalidErasureScope],
      ['{"organizationId":"other"}', {}, ERRORS.invalidErasureScope],
      ['{"conversationId":"c"}', {}, ERRORS.invalidErasureScope],
      ['{"agentId":""}', {}, ERRORS.invalidErasureScope],
      ['{"agentId":1}', {}, ERRORS.invalidErasureScope],
      ['{"agentId":null}', {}, ERRORS.invalidErasureScope],
      ['{"agentId":["a"]}', {}, ERRORS.invalidErasureScope],
      ['{"agentId":"\\ud800"}', {}, ERRORS.invalidErasureScope],
      [JSON.stringify({ agentId: 'x'.repeat(1025) }), {}, ERRORS.invalidErasureScope],
      // A megabyte: `{}` padded with whitespace would be the whole organization.
      [`{}${' '.repeat(1024 * 1024)}`, {}, ERRORS.tooLarge],
      [JSON.stringify({ agentId: 'x'.repeat(1024 * 1024) }), {}, ERRORS.tooLarge],
      [gzipSync(`{}${' '.repeat(1024 * 1024)}`), { 'content-encoding': 'gzip' }, ERRORS.tooLarge],
      [Buffer.from('{}'), { 'content-encoding': 'deflate' }, ERRORS.unsupportedEncoding],
      [Buffer.from('{}'), { 'content-encoding': 'gzip' }, ERRORS.invalidJson],
    ];
    for (const [body, headers, spec] of cases) {
      const res = await admin.raw(ADMIN_PATHS.erasures, tokenA, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, ...(body !== undefined && { body }) });
      await expectError(res, spec, typeof body === 'string' ? body.slice(0, 40) : String(body?.constructor.name));
    }
    expect(await world()).toEqual(before);
  });

  it('unknown paths and methods under /admin: 404 not_found in the contract’s shape, nothing changed', async () => {
    const before = await world();
    const cases: [string, string][] = [
      ['PUT', ADMIN_PATHS.erasures],
      ['DELETE', ADMIN_PATHS.erasures],
      ['PATCH', ADMIN_PATHS.conversations],
      ['POST', ADMIN_PATHS.conversations],
      ['DELETE', `${ADMIN_PATHS.erasures}/20260101T000000000Z-x`],
      ['GET', `${ADMIN_PATHS.erasures}/a/b`],
      ['GET', `${ADMIN_PATHS.erasures}/`],
      ['GET', `${ADMIN_PATHS.conversations}/`],
      ['GET', '/admin'],
      ['GET', '/admin/'],
      ['GET', '/admin/conversations%2F'],
      ['GET', '/ADMIN/conversations'],
      ['OPTIONS', ADMIN_PATHS.run],
    ];
    for (const [method, path] of cases) await expectError(await admin.raw(path, tokenA, { method }), ERRORS.notFound, `${method} ${path}`);
    // A receipt id that is not one (or escapes the path): 404 too.
    for (const id of ['..', '%2E%2E', 'x', '20260101T000000000Z-', encodeURIComponent('20260101T000000000Z-x/../y'), '%00']) {
      await expectError(await admin.raw(`${ADMIN_PATHS.erasures}/${id}`, tokenA), ERRORS.notFound, id);
    }
    expect(await world()).toEqual(before);
  });
});

describe('erasure across organizations (last: it erases A)', () => {
  it('erases only in its own organization, and never sees another organization’s receipts', async () => {
    const other = OTHERS[1]!;
    const tokenB = await admin.token(other);
    const s = theirs.find((t) => t.org === other && t.agent === '..')!;
    // B erases one of its conversations: its receipt.
    const erased = await admin.raw(ADMIN_PATHS.erasures, tokenB, { method: 'POST', body: JSON.stringify({ agentId: s.agent, conversationId: s.conv }) });
    expect(erased.status).toBe(200);
    const receipt = (await erased.json()) as { receiptId: string };
    theirs.splice(theirs.indexOf(s), 1);
    const before = await world();

    await expectError(await admin.get(`${ADMIN_PATHS.erasures}/${receipt.receiptId}`, {}, tokenA), ERRORS.notFound);
    await expectError(await admin.get(`${ADMIN_PATHS.erasures}/${encodeURIComponent(`../${receipt.receiptId}`)}`, {}, tokenA), ERRORS.notFound);
    const page = await admin.json<{ erasures: unknown[]; nextCursor: string | null }>(ADMIN_PATHS.erasures, {}, tokenA);
    expect(page.erasures).toEqual([]);
    // A erasing B's ids erases A's (empty) conversations and agents: zero counts, B unchanged.
    for (const id of HOSTILE) {
      for (const body of [{ agentId: id, conversationId: id }, { agentId: id }]) {
        const res = await admin.raw(ADMIN_PATHS.erasures, tokenA, { method: 'POST', body: JSON.stringify(body) });
        const text = await res.text();
        expect(res.status, text).toBe(200);
        expect(JSON.parse(text)).toMatchObject({ state: 'completed', conversations: 0, runs: 0, objects: 0, bytes: 0, scope: { organizationId: A, ...body } });
      }
    }
    const after = (await world()) as { conversations: unknown; partitions: unknown[]; receipts: number[] };
    const b = before as typeof after;
    expect(after.conversations).toEqual(b.conversations);
    expect(after.partitions.slice(1)).toEqual(b.partitions.slice(1));
    expect(after.receipts.slice(1)).toEqual(b.receipts.slice(1));

    // A's whole organization: only A's conversation goes.
    const org = await admin.raw(ADMIN_PATHS.erasures, tokenA, { method: 'POST', body: '{}' });
    expect(await org.json()).toMatchObject({ state: 'completed', conversations: 1, runs: 2 });
    const final = (await world()) as typeof after;
    expect(final.partitions.slice(1)).toEqual(b.partitions.slice(1));
    expect(final.receipts.slice(1)).toEqual(b.receipts.slice(1));
    const [picturesBefore, picturesAfter] = [b.conversations, final.conversations] as Record<string, { items: unknown[]; objects: Record<string, number> }>[];
    for (const [pk, picture] of Object.entries(picturesBefore!)) {
      if (pk.startsWith(`${encodeId(A)}/`)) expect(picturesAfter![pk]!.objects, pk).toEqual({});
      else expect(picturesAfter![pk], pk).toEqual(picture);
    }
  });
});
