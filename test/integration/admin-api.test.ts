import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { createHash } from 'node:crypto';
import { Logger } from '@aws-lambda-powertools/logger';
import { GetItemCommand, PutItemCommand } from '@aws-sdk/client-dynamodb';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { ERRORS, errorBody } from '../../functions/lib/contract.js';
import { conversationKey } from '../../functions/lib/ids.js';
import { runKey } from '../../functions/lib/store/schema.js';
import { AdminApi, ADMIN_PATHS, cursorPayload, nextMillisecond, type LinesAnswer, type ListedConversation, type ListedLine, type ListedRun } from '../helpers/admin.js';
import { useLocalService, type Scope } from '../helpers/service.js';
import { uploadSnapshot } from '../helpers/uploads.js';

/**
 * The operator API end to end on the emulators (docs/DESIGN.md § Operator API): every route's success shape,
 * pagination with cursors, order, filters, runs of every status, lines paging over the real fixture and over
 * a multi-run chain, and every documented error. Data is written through the real write path (which sets the
 * listing attributes); each describe block uses an organization of its own so listings are exact.
 */

const INLINE_MAX = 64 * 1024;
const logger = new Logger({ serviceName: 'transcript-store', logLevel: 'INFO' });
// The request log lines are not what these tests read; the audit line is (spied on below).
vi.spyOn(logger, 'info').mockImplementation(() => {});
const local = useLocalService({ env: { ...process.env, INLINE_RESPONSE_MAX_BYTES: String(INLINE_MAX) }, logger });
const FIXTURE = readFileSync(new URL('../fixtures/pi-large-session.jsonl', import.meta.url));
const FIXTURE_LINES = FIXTURE.toString('utf8').split('\n').slice(0, -1);

let admin: AdminApi;
beforeAll(() => {
  admin = new AdminApi(local.svc);
});

let orgs = 0;
const freshOrg = (name: string) => `admin-${name}-${process.pid}-${Date.now()}-${++orgs}`;
const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

async function write(scope: Scope, runId: number, body: string, status = 'completed'): Promise<void> {
  const res = await local.api.write(scope, runId, body, status);
  expect(res.status, await res.clone().text()).toBe(200);
  await res.body?.cancel();
}

async function expectError(res: Response, spec: { status: number; code: string; message: string }): Promise<void> {
  expect(res.status).toBe(spec.status);
  expect(res.headers.get('content-type')).toMatch(/^application\/json/);
  expect(await res.json()).toEqual(errorBody(spec));
}

describe('GET /admin/conversations', () => {
  const org = freshOrg('conv');
  const other = freshOrg('conv-other');
  // Written in this order, one millisecond apart: c5 is the newest.
  const scopes: Scope[] = [
    { org, agent: 'agent-a', conv: 'c1' },
    { org, agent: 'agent-b', conv: 'c2' },
    { org, agent: 'agent-a', conv: 'c3/with/slashes' },
    { org, agent: 'agent-b', conv: 'c4' },
    { org, agent: 'agent-a', conv: 'c5 ünïcode' },
  ];
  let token: string;

  beforeAll(async () => {
    token = await admin.token(org);
    for (const [i, s] of scopes.entries()) {
      await write(s, 1, `{"n":${i}}\n`);
      if (i === 1) await write(s, 2, `{"n":${i}}\n{"more":true}\n`); // c2 has two runs
      await nextMillisecond();
    }
    await write({ org: other, agent: 'agent-a', conv: 'not-mine' }, 1, '{"other":true}\n');
  });

  it('lists the organization’s conversations newest activity first, with the listing fields', async () => {
    const page = await admin.json<{ conversations: ListedConversation[]; nextCursor: string | null }>(ADMIN_PATHS.conversations, {}, token);
    expect(page.nextCursor).toBeNull();
    expect(page.conversations.map((c) => c.conversationId)).toEqual(['c5 ünïcode', 'c4', 'c3/with/slashes', 'c2', 'c1']);
    const c2 = page.conversations.find((c) => c.conversationId === 'c2')!;
    expect(c2).toEqual({
      agentId: 'agent-b',
      conversationId: 'c2',
      lastActivityAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/),
      latestRunId: 2,
      latestBytes: Buffer.byteLength('{"n":1}\n{"more":true}\n'),
      runs: 2,
      bytes: expect.any(Number),
    });
    expect(c2.bytes).toBeGreaterThan(0);
    const times = page.conversations.map((c) => Date.parse(c.lastActivityAt));
    expect([...times].sort((a, b) => b - a)).toEqual(times);
  });

  it('pages with opaque cursors: limit 2 gives the same conversations in the same order over 3 pages', async () => {
    const { items, pages } = await admin.all<ListedConversation>(ADMIN_PATHS.conversations, 'conversations', { limit: 2 }, token);
    expect(pages).toBe(3);
    expect(items.map((c) => c.conversationId)).toEqual(['c5 ünïcode', 'c4', 'c3/with/slashes', 'c2', 'c1']);
  });

  it('filters by agent (ByAgent), newest first, and pages within the agent', async () => {
    const { items, pages } = await admin.all<ListedConversation>(ADMIN_PATHS.conversations, 'conversations', { agentId: 'agent-a', limit: 1 }, token);
    expect(items.map((c) => c.conversationId)).toEqual(['c5 ünïcode', 'c3/with/slashes', 'c1']);
    expect(pages).toBeGreaterThanOrEqual(3);
    expect(items.every((c) => c.agentId === 'agent-a')).toBe(true);
    const none = await admin.json<{ conversations: unknown[]; nextCursor: null }>(ADMIN_PATHS.conversations, { agentId: 'agent-z' }, token);
    expect(none).toEqual({ conversations: [], nextCursor: null });
  });

  it('refuses a cursor of another listing, another agent filter or another organization (400 invalid_cursor)', async () => {
    const first = await admin.json<{ nextCursor: string }>(ADMIN_PATHS.conversations, { limit: 1 }, token);
    const byAgent = await admin.json<{ nextCursor: string }>(ADMIN_PATHS.conversations, { agentId: 'agent-a', limit: 1 }, token);
    await expectError(await admin.get(ADMIN_PATHS.conversations, { cursor: byAgent.nextCursor }, token), ERRORS.invalidCursor);
    await expectError(await admin.get(ADMIN_PATHS.conversations, { agentId: 'agent-b', cursor: byAgent.nextCursor }, token), ERRORS.invalidCursor);
    await expectError(await admin.get(ADMIN_PATHS.conversations, { agentId: 'agent-a', cursor: first.nextCursor }, token), ERRORS.invalidCursor);
    await expectError(await admin.get(ADMIN_PATHS.conversations, { cursor: first.nextCursor }, await admin.token(other)), ERRORS.invalidCursor);
    for (const bad of ['x', 'eyJrIjoxfQ.AAAA', first.nextCursor.slice(0, -2), `${first.nextCursor}A`, 'a'.repeat(5000)]) {
      await expectError(await admin.get(ADMIN_PATHS.conversations, { cursor: bad }, token), ERRORS.invalidCursor);
    }
    await expectError(await admin.get(ADMIN_PATHS.conversations, { cursor: '' }, token), ERRORS.invalidCursor);
  });
});

describe('GET /admin/runs', () => {
  const org = freshOrg('runs');
  const scope: Scope = { org, agent: 'agent/with/slash', conv: 'conv%2F..' };
  let token: string;

  beforeAll(async () => {
    token = await admin.token(org);
    await write(scope, 1, '{"run":1}\n');
    await write(scope, 2, '{"run":2}\n', 'failed');
    await write(scope, 3, '{"run":1}\n{"run":3}\n');
    await write(scope, 5, '{"run":5}\n', 'timeout');
    await write(scope, 4, '{"run":4}\n', 'cancelled');
  });

  it('lists every stored run, highest first, with status, sizes, digest and state', async () => {
    const page = await admin.json<{ runs: ListedRun[]; nextCursor: null }>(ADMIN_PATHS.runs, { agentId: scope.agent, conversationId: scope.conv }, token);
    expect(page.nextCursor).toBeNull();
    expect(page.runs.map((r) => [r.runId, r.terminalStatus, r.state])).toEqual([
      [5, 'timeout', 'superseded'],
      [4, 'cancelled', 'superseded'],
      [3, 'completed', 'latest'],
      [2, 'failed', 'superseded'],
      [1, 'completed', 'superseded'],
    ]);
    const run3 = page.runs.find((r) => r.runId === 3)!;
    expect(run3).toMatchObject({ bytes: 20, sha256: sha256('{"run":1}\n{"run":3}\n'), generation: 0, createdAt: expect.stringMatching(/Z$/) });
    expect(run3.storedBytes).toBeGreaterThan(0);
  });

  it('pages with cursors (limit 2: 3 pages, same order)', async () => {
    const { items, pages } = await admin.all<ListedRun>(ADMIN_PATHS.runs, 'runs', { agentId: scope.agent, conversationId: scope.conv, limit: 2 }, token);
    expect(pages).toBe(3);
    expect(items.map((r) => r.runId)).toEqual([5, 4, 3, 2, 1]);
  });

  it('marks a run of an older generation fenced', async () => {
    const s: Scope = { org, agent: 'agent-f', conv: 'fenced' };
    await write(s, 1, '{"old":true}\n');
    const pk = conversationKey({ organizationId: s.org, agentId: s.agent, conversationId: s.conv });
    const old = await local.svc.ddb.send(new GetItemCommand({ TableName: local.svc.config.tableName, Key: runKey(pk, 1) }));
    await local.api.clear(s);
    await write(s, 2, '{"new":true}\n');
    // A record a clear left behind (it died after the fence): generation 0 under HEAD's generation 1.
    await local.svc.ddb.send(new PutItemCommand({ TableName: local.svc.config.tableName, Item: old.Item! }));
    const page = await admin.json<{ runs: ListedRun[] }>(ADMIN_PATHS.runs, { agentId: s.agent, conversationId: s.conv }, token);
    expect(page.runs.map((r) => [r.runId, r.generation, r.state])).toEqual([
      [2, 1, 'latest'],
      [1, 0, 'fenced'],
    ]);
  });

  it('answers 404 not_found for a conversation the organization does not have, and for another organization’s', async () => {
    await expectError(await admin.get(ADMIN_PATHS.runs, { agentId: scope.agent, conversationId: 'nope' }, token), ERRORS.notFound);
    await expectError(await admin.get(ADMIN_PATHS.runs, { agentId: scope.agent, conversationId: scope.conv }, await admin.token(freshOrg('x'))), ERRORS.notFound);
  });

  it('refuses a runs cursor for another conversation', async () => {
    const page = await admin.json<{ nextCursor: string }>(ADMIN_PATHS.runs, { agentId: scope.agent, conversationId: scope.conv, limit: 1 }, token);
    await expectError(await admin.get(ADMIN_PATHS.runs, { agentId: scope.agent, conversationId: 'other', cursor: page.nextCursor }, token), ERRORS.invalidCursor);
    await expectError(await admin.get(ADMIN_PATHS.conversations, { cursor: page.nextCursor }, token), ERRORS.invalidCursor);
  });
});

describe('GET /admin/run', () => {
  const org = freshOrg('run');
  const scope: Scope = { org, agent: 'agent-r', conv: 'conv-r' };
  const bodies: Record<number, string> = { 1: '{"a":1}\n', 2: '{"a":1}\n{"b":2}\n', 3: '{"failed":true}\n', 4: '{"timeout":true}\n' };
  let token: string;

  beforeAll(async () => {
    token = await admin.token(org, { sub: 'ops@example.com' });
    await write(scope, 1, bodies[1]!);
    await write(scope, 2, bodies[2]!);
    await write(scope, 3, bodies[3]!, 'failed');
    await write(scope, 4, bodies[4]!, 'timeout');
  });

  const params = (runId: number | string) => ({ agentId: scope.agent, conversationId: scope.conv, runId });

  it('serves any run’s exact bytes, whatever its status, identity or gzip, with an audit line naming the actor', async () => {
    const spy = vi.mocked(logger.info);
    for (const runId of [1, 2, 3, 4]) {
      spy.mockClear();
      const res = await admin.get(ADMIN_PATHS.run, params(runId), token, { 'accept-encoding': 'identity' });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe('application/x-ndjson; charset=utf-8');
      expect(res.headers.get('x-snapshot-run-id')).toBe(String(runId));
      expect(res.headers.get('x-snapshot-sha256')).toBe(sha256(bodies[runId]!));
      expect(res.headers.get('x-snapshot-terminal-status')).toBe({ 1: 'completed', 2: 'completed', 3: 'failed', 4: 'timeout' }[runId]);
      expect(res.headers.get('cache-control')).toBe('private, no-store');
      expect(await res.text()).toBe(bodies[runId]);
      const audits = spy.mock.calls.filter(([message]) => message === 'audit');
      expect(audits).toEqual([
        ['audit', { audit: 'read_run', actor: 'ops@example.com', organizationId: org, agentId: scope.agent, conversationId: scope.conv, runId }],
      ]);
    }
    const gz = await admin.get(ADMIN_PATHS.run, params(3), token, { 'accept-encoding': 'gzip' });
    expect(gz.headers.get('content-encoding')).toBe('gzip');
    expect(await gz.text()).toBe(bodies[3]); // fetch decodes the gzip it asked for
  });

  it('answers 304 on a matching If-None-Match, without an audit line', async () => {
    const spy = vi.mocked(logger.info);
    spy.mockClear();
    const res = await admin.get(ADMIN_PATHS.run, params(1), token, { 'if-none-match': `"${sha256(bodies[1]!)}"` });
    expect(res.status).toBe(304);
    expect(spy.mock.calls.filter(([m]) => m === 'audit')).toEqual([]);
  });

  it('redirects (307) past the inline limit, for a chain run and a failed run, to the exact bytes', async () => {
    const s: Scope = { org, agent: 'agent-r', conv: 'big' };
    const half = FIXTURE.subarray(0, FIXTURE.indexOf('\n', FIXTURE.length / 2) + 1).toString();
    await write(s, 1, half);
    await write(s, 2, FIXTURE.toString()); // an append: a chain of two fragments
    await write(s, 3, FIXTURE.toString(), 'failed');
    for (const runId of [2, 3]) {
      const res = await admin.get(ADMIN_PATHS.run, { agentId: s.agent, conversationId: s.conv, runId }, token);
      expect(res.status).toBe(307);
      const location = res.headers.get('location')!;
      const obj = await fetch(location);
      expect(obj.status).toBe(200);
      const got = Buffer.from(await obj.arrayBuffer());
      const plain = got[0] === 0x1f && got[1] === 0x8b ? gunzipSync(got) : got;
      expect(plain.equals(FIXTURE)).toBe(true);
    }
    const identity = await admin.get(ADMIN_PATHS.run, { agentId: s.agent, conversationId: s.conv, runId: 2 }, token, { 'accept-encoding': 'identity' });
    await expectError(identity, ERRORS.notAcceptable);
  });

  it('answers 404 not_found for a run the conversation does not have', async () => {
    await expectError(await admin.get(ADMIN_PATHS.run, params(99), token), ERRORS.notFound);
    await expectError(await admin.get(ADMIN_PATHS.run, { ...params(1), conversationId: 'nope' }, token), ERRORS.notFound);
  });
});

describe('GET /admin/lines', () => {
  const org = freshOrg('lines');
  let token: string;

  beforeAll(async () => {
    token = await admin.token(org);
  });

  async function pages(params: Record<string, string | number | undefined>): Promise<{ answers: LinesAnswer[]; lines: ListedLine[] }> {
    const answers: LinesAnswer[] = [];
    let cursor: string | undefined;
    do {
      const page = await admin.json<LinesAnswer>(ADMIN_PATHS.lines, { ...params, cursor }, token);
      answers.push(page);
      cursor = page.nextCursor ?? undefined;
    } while (cursor);
    return { answers, lines: answers.flatMap((a) => a.lines) };
  }

  /** Lines rebuilt into the file they came from, with their numbering and offsets checked. */
  function rebuild(lines: ListedLine[]): Buffer {
    let offset = 0;
    lines.forEach((l, i) => {
      expect(l.line).toBe(i + 1);
      expect(l.offset).toBe(offset);
      expect(l.truncated).toBe(false);
      expect(l.bytes).toBe(Buffer.byteLength(l.text));
      offset += l.bytes + 1;
    });
    return Buffer.from(lines.map((l) => `${l.text}\n`).join(''));
  }

  it('pages through the real 1,019-line fixture (latest run by default): every line once, in order, exact', async () => {
    const s: Scope = { org, agent: 'agent-l', conv: 'fixture' };
    await write(s, 7, FIXTURE.toString());
    const { answers, lines } = await pages({ agentId: s.agent, conversationId: s.conv, limit: 100 });
    expect(answers).toHaveLength(11);
    expect(answers.every((a) => a.runId === 7 && a.bytes === FIXTURE.length)).toBe(true);
    expect(answers.slice(0, -1).every((a) => a.lines.length === 100)).toBe(true);
    expect(lines).toHaveLength(FIXTURE_LINES.length);
    expect(rebuild(lines).equals(FIXTURE)).toBe(true);
  });

  it('pages through a run of a multi-run chain, later pages decoding from a run boundary, not the start', async () => {
    const s: Scope = { org, agent: 'agent-l', conv: 'chain' };
    const cut = (n: number) => FIXTURE.subarray(0, Buffer.from(FIXTURE_LINES.slice(0, n).map((l) => `${l}\n`).join('')).length).toString();
    await write(s, 1, cut(300));
    await write(s, 2, cut(600)); // appends: one fragment each
    await write(s, 3, cut(900));
    await write(s, 4, FIXTURE.toString());
    const runs = await admin.json<{ runs: ListedRun[] }>(ADMIN_PATHS.runs, { agentId: s.agent, conversationId: s.conv }, token);
    expect(runs.runs.map((r) => r.state)).toEqual(['latest', 'superseded', 'superseded', 'superseded']);
    const { answers, lines } = await pages({ agentId: s.agent, conversationId: s.conv, runId: 4, limit: 150 });
    expect(rebuild(lines).equals(FIXTURE)).toBe(true);
    // Each cursor names the last run boundary (end of run 1, 2 or 3) at or before where its page starts.
    const boundaries = [0, 1, 2, 3].map((n) => (n === 0 ? 0 : Buffer.byteLength(cut(n * 300))));
    for (const a of answers.slice(0, -1)) {
      const p = cursorPayload(a.nextCursor!);
      const expected = Math.max(...boundaries.filter((b) => b <= (p['offset'] as number)));
      expect(p['rd']).toBe(expected);
      if (expected > 0) expect(p['rs']).toBeGreaterThan(0);
    }
    expect(answers.some((a) => a.nextCursor && (cursorPayload(a.nextCursor)['rd'] as number) > 0)).toBe(true);
    // An earlier run of the same chain reads its own prefix.
    const two = await pages({ agentId: s.agent, conversationId: s.conv, runId: 2, limit: 1000 });
    expect(rebuild(two.lines).toString()).toBe(cut(600));
  });

  it('pages through a failed run (one gzip object) and an identity upload (ranged reads)', async () => {
    const s: Scope = { org, agent: 'agent-l', conv: 'single' };
    await write(s, 1, FIXTURE.toString(), 'failed');
    const failed = await pages({ agentId: s.agent, conversationId: s.conv, runId: 1, limit: 333 });
    expect(rebuild(failed.lines).equals(FIXTURE)).toBe(true);
    const up = await uploadSnapshot(local.api, s, 2, FIXTURE, 'identity');
    expect(up.status).toBe(200);
    const uploaded = await pages({ agentId: s.agent, conversationId: s.conv, runId: 2, limit: 250 });
    expect(uploaded.answers).toHaveLength(5);
    expect(rebuild(uploaded.lines).equals(FIXTURE)).toBe(true);
  });

  it('cuts a line longer than a page’s 1 MiB of text, marks it truncated, and goes on with the next line', async () => {
    const s: Scope = { org, agent: 'agent-l', conv: 'long-line' };
    const long = `{"blob":"${'é'.repeat(700 * 1024)}"}`; // 1.4 MB of UTF-8
    const body = `{"first":1}\n${long}\n{"last":true}`; // no final newline
    await write(s, 1, body);
    const { answers, lines } = await pages({ agentId: s.agent, conversationId: s.conv, limit: 10 });
    expect(answers.map((a) => a.lines.length)).toEqual([1, 1, 1]);
    expect(lines.map((l) => [l.line, l.offset, l.bytes, l.truncated])).toEqual([
      [1, 0, 11, false],
      [2, 12, Buffer.byteLength(long), true],
      [3, 13 + Buffer.byteLength(long), 13, false],
    ]);
    expect(long.startsWith(lines[1]!.text)).toBe(true);
    expect(Buffer.byteLength(JSON.stringify(lines[1]!.text))).toBeLessThanOrEqual(1024 * 1024 + 2);
    expect(Buffer.byteLength(lines[1]!.text)).toBeGreaterThan(1024 * 1024 - 8);
    expect(lines[2]!.text).toBe('{"last":true}');
  });

  it('refuses a cursor for a run id written again after a reset, a runId other than the cursor’s, or another conversation’s', async () => {
    const s: Scope = { org, agent: 'agent-l', conv: 'rewritten' };
    await write(s, 1, '{"a":1}\n{"a":2}\n{"a":3}\n');
    const first = await admin.json<LinesAnswer>(ADMIN_PATHS.lines, { agentId: s.agent, conversationId: s.conv, limit: 1 }, token);
    await expectError(await admin.get(ADMIN_PATHS.lines, { agentId: s.agent, conversationId: s.conv, runId: 2, cursor: first.nextCursor! }, token), ERRORS.invalidCursor);
    await expectError(await admin.get(ADMIN_PATHS.lines, { agentId: s.agent, conversationId: 'fixture', cursor: first.nextCursor! }, token), ERRORS.invalidCursor);
    await local.api.clear(s);
    await write(s, 1, '{"b":1}\n{"b":2}\n');
    await expectError(await admin.get(ADMIN_PATHS.lines, { agentId: s.agent, conversationId: s.conv, cursor: first.nextCursor! }, token), ERRORS.invalidCursor);
  });

  it('answers 404 not_found when nothing is published and no runId is given, or the run does not exist', async () => {
    const s: Scope = { org, agent: 'agent-l', conv: 'failed-only' };
    await write(s, 1, '{"x":1}\n', 'failed');
    await expectError(await admin.get(ADMIN_PATHS.lines, { agentId: s.agent, conversationId: s.conv }, token), ERRORS.notFound);
    await expectError(await admin.get(ADMIN_PATHS.lines, { agentId: s.agent, conversationId: s.conv, runId: 2 }, token), ERRORS.notFound);
    const ok = await admin.json<LinesAnswer>(ADMIN_PATHS.lines, { agentId: s.agent, conversationId: s.conv, runId: 1 }, token);
    expect(ok).toEqual({ runId: 1, bytes: 8, lines: [{ line: 1, offset: 0, bytes: 7, text: '{"x":1}', truncated: false }], nextCursor: null });
  });
});

describe('GET /admin/agents', () => {
  const org = freshOrg('agents');
  let token: string;

  beforeAll(async () => {
    token = await admin.token(org);
    await write({ org, agent: 'b-agent', conv: 'c1' }, 1, '{"x":1}\n');
    await write({ org, agent: 'b-agent', conv: 'c1' }, 2, '{"x":1}\n{"y":2}\n');
    await write({ org, agent: 'b-agent', conv: 'c2' }, 1, '{"x":1}\n', 'failed');
    await write({ org, agent: 'a-agent', conv: 'c1' }, 1, '{"x":1}\n');
    await write({ org, agent: 'c/agent', conv: 'c1' }, 1, '{"x":1}\n');
  });

  it('counts conversations, runs and stored bytes per agent', async () => {
    const page = await admin.json<{ agents: { agentId: string; conversations: number; runs: number; bytes: number }[]; nextCursor: null }>(ADMIN_PATHS.agents, {}, token);
    expect(page.nextCursor).toBeNull();
    expect(page.agents.map((a) => [a.agentId, a.conversations, a.runs])).toEqual([
      ['a-agent', 1, 1],
      ['b-agent', 2, 3],
      ['c/agent', 1, 1],
    ]);
    expect(page.agents.every((a) => a.bytes > 0)).toBe(true);
  });

  it('pages one agent at a time with cursors', async () => {
    const { items, pages } = await admin.all<{ agentId: string }>(ADMIN_PATHS.agents, 'agents', { limit: 1 }, token);
    expect(items.map((a) => a.agentId)).toEqual(['a-agent', 'b-agent', 'c/agent']);
    expect(pages).toBe(3);
    const first = await admin.json<{ nextCursor: string }>(ADMIN_PATHS.agents, { limit: 1 }, token);
    await expectError(await admin.get(ADMIN_PATHS.agents, { cursor: first.nextCursor }, await admin.token(freshOrg('y'))), ERRORS.invalidCursor);
  });
});

describe('errors on every admin route', () => {
  const org = freshOrg('errors');
  const scope: Scope = { org, agent: 'a', conv: 'c' };
  const routes: [string, Record<string, string>][] = [
    [ADMIN_PATHS.conversations, {}],
    [ADMIN_PATHS.runs, { agentId: 'a', conversationId: 'c' }],
    [ADMIN_PATHS.run, { agentId: 'a', conversationId: 'c', runId: '1' }],
    [ADMIN_PATHS.lines, { agentId: 'a', conversationId: 'c' }],
    [ADMIN_PATHS.agents, {}],
  ];

  beforeAll(async () => {
    await write(scope, 1, '{"x":1}\n');
  });

  it('answer 401 invalid_token without a token or with a forged one, with WWW-Authenticate', async () => {
    const good = await admin.token(org);
    const forged = `${good.slice(0, good.lastIndexOf('.'))}.${'A'.repeat(43)}`;
    for (const [path, params] of routes) {
      for (const token of [undefined, 'not-a-jwt', forged]) {
        const res = await admin.get(path, params, token);
        expect(res.headers.get('www-authenticate')).toBe('Bearer');
        await expectError(res, ERRORS.invalidToken);
      }
    }
  });

  it('answer 403 admin_scope_required to worker tokens and to tokens whose scope lacks transcripts:admin', async () => {
    const tokens = [
      await local.api.token(scope),
      await local.api.token(scope, { runId: 1 }),
      await admin.token(org, { scope: 'transcripts:read' }),
      await admin.token(org, { scope: 'transcripts:adminx openid' }),
      await admin.token(org, { scope: '' }),
    ];
    for (const [path, params] of routes) for (const token of tokens) await expectError(await admin.get(path, params, token), ERRORS.adminScopeRequired);
  });

  it('accept transcripts:admin among other space-delimited scope values', async () => {
    const token = await admin.token(org, { scope: 'openid transcripts:admin profile' });
    expect((await admin.get(ADMIN_PATHS.conversations, {}, token)).status).toBe(200);
  });

  it('answer 400 missing_scope to an admin token without a valid organizationId', async () => {
    const token = await admin.token('', {});
    for (const [path, params] of routes) await expectError(await admin.get(path, params, token), ERRORS.missingScope);
  });

  it('answer 400 invalid_query for unknown, repeated, missing or malformed parameters', async () => {
    const token = await admin.token(org);
    const bad = [
      `${ADMIN_PATHS.conversations}?foo=1`,
      `${ADMIN_PATHS.conversations}?limit=0`,
      `${ADMIN_PATHS.conversations}?limit=101`,
      `${ADMIN_PATHS.conversations}?limit=01`,
      `${ADMIN_PATHS.conversations}?limit=1e1`,
      `${ADMIN_PATHS.conversations}?limit=-1`,
      `${ADMIN_PATHS.conversations}?agentId=`,
      `${ADMIN_PATHS.conversations}?agentId=a&agentId=b`,
      `${ADMIN_PATHS.conversations}?agentId=%E0%A4%A`,
      `${ADMIN_PATHS.conversations}?agentId=%ED%A0%80`,
      `${ADMIN_PATHS.conversations}?agentId=${'x'.repeat(1025)}`,
      `${ADMIN_PATHS.runs}?agentId=a`,
      `${ADMIN_PATHS.runs}?conversationId=c`,
      `${ADMIN_PATHS.run}?agentId=a&conversationId=c`,
      `${ADMIN_PATHS.run}?agentId=a&conversationId=c&runId=0`,
      `${ADMIN_PATHS.run}?agentId=a&conversationId=c&runId=1.5`,
      `${ADMIN_PATHS.run}?agentId=a&conversationId=c&runId=9007199254740992`,
      `${ADMIN_PATHS.lines}?agentId=a&conversationId=c&limit=1001`,
      `${ADMIN_PATHS.lines}?agentId=a&conversationId=c&runId=x`,
      `${ADMIN_PATHS.agents}?agentId=a`,
      `${ADMIN_PATHS.agents}?limit=1000`,
    ];
    for (const q of bad) await expectError(await admin.raw(q, token), ERRORS.invalidQuery);
  });
});
