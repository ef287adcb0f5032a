/**
 * `npm run admin` (scripts/admin.ts) against a local service, the way an operator uses it: tables and `--json`,
 * paging, downloading a run (inline and through the 307), erasing with a receipt, and clear errors (missing
 * environment, refused token, unreachable host with its errno, usage). Also `npm run token -- --admin`.
 * Children are spawned asynchronously (this process hosts the emulators).
 */
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jwtVerify } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useLocalService, type Scope } from '../helpers/service.js';

const root = new URL('../../', import.meta.url).pathname;
const tsx = join(root, 'node_modules/.bin/tsx');
const FIXTURE = await readFile(new URL('../fixtures/pi-large-session.jsonl', import.meta.url));
const local = useLocalService({ env: { ...process.env, INLINE_RESPONSE_MAX_BYTES: String(64 * 1024) } });

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a script as `npm run` does (cwd = the package root). `closeStdoutAfter`: bytes read before the reader goes away (`| head -c N`). */
function run(script: string, args: string[], env: Record<string, string | undefined>, closeStdoutAfter?: number): Promise<Run> {
  const e: NodeJS.ProcessEnv = { ...process.env };
  for (const k of ['TRANSCRIPT_STORE_URL', 'BASE_URL', 'TRANSCRIPT_STORE_ADMIN_TOKEN', 'JWT_SECRET', 'INIT_CWD']) delete e[k];
  for (const [k, v] of Object.entries(env)) if (v !== undefined) e[k] = v;
  return new Promise((resolve, reject) => {
    const child = spawn(tsx, [script, ...args], { cwd: root, env: e, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
      if (closeStdoutAfter !== undefined && stdout.length >= closeStdoutAfter) child.stdout.destroy();
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

const org = `cli-${process.pid}`;
let env: Record<string, string>;
let dir: string;
const admin = (...args: string[]) => run('scripts/admin.ts', args, env);
const scopes: Scope[] = [
  { org, agent: 'bot', conv: 'c-1' },
  { org, agent: 'bot', conv: 'c/2' },
  { org, agent: 'helper', conv: 'c-3' },
];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'admin-cli-'));
  for (const s of scopes) expect((await local.api.write(s, 1, '{"hello":"world"}\n')).status).toBe(200);
  expect((await local.api.write(scopes[0]!, 2, FIXTURE.toString())).status).toBe(200);
  expect((await local.api.write(scopes[0]!, 3, '{"failed":true}\n', 'failed')).status).toBe(200);
  env = { TRANSCRIPT_STORE_URL: local.svc.url, TRANSCRIPT_STORE_ADMIN_TOKEN: await local.svc.mintAdminToken({ org, sub: 'cli-test' }) };
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('npm run admin', () => {
  it('lists conversations, runs and agents as tables, and as JSON with --json', async () => {
    const [conversations, json, runs, agents] = await Promise.all([
      admin('conversations'),
      admin('conversations', '--agent', 'bot', '--json'),
      admin('runs', '--agent', 'bot', '--conv', 'c-1'),
      admin('agents'),
    ]);
    expect(conversations.code, conversations.stderr).toBe(0);
    const rows = conversations.stdout.trimEnd().split('\n');
    expect(rows[0]).toMatch(/^AGENT\s+CONVERSATION\s+LAST ACTIVITY\s+LATEST RUN\s+LATEST\s+RUNS\s+STORED$/);
    expect(rows.slice(1).map((r) => r.split(/\s{2,}/).slice(0, 2))).toEqual(expect.arrayContaining([['bot', 'c-1'], ['bot', 'c/2'], ['helper', 'c-3']]));
    expect(rows).toHaveLength(4);

    expect(json.code, json.stderr).toBe(0);
    const parsed = JSON.parse(json.stdout) as { conversations: { agentId: string; conversationId: string; latestRunId: number }[]; nextCursor: null };
    expect(parsed.conversations.map((c) => c.conversationId).sort()).toEqual(['c-1', 'c/2']);
    expect(parsed.nextCursor).toBeNull();

    expect(runs.code, runs.stderr).toBe(0);
    expect(runs.stdout.trimEnd().split('\n').map((r) => r.split(/\s{2,}/).slice(0, 3))).toEqual([
      ['RUN', 'STATUS', 'STATE'],
      ['3', 'failed', 'superseded'],
      ['2', 'completed', 'latest'],
      ['1', 'completed', 'superseded'],
    ]);

    expect(agents.code, agents.stderr).toBe(0);
    expect(agents.stdout.trimEnd().split('\n').map((r) => r.split(/\s{2,}/).slice(0, 3))).toEqual([
      ['AGENT', 'CONVERSATIONS', 'RUNS'],
      ['bot', '2', '4'],
      ['helper', '1', '1'],
    ]);
  });

  it('pages with --limit (hinting the cursor) and follows every page with --all', async () => {
    const [page, all] = await Promise.all([admin('conversations', '--limit', '1'), admin('conversations', '--limit', '1', '--all', '--json')]);
    expect(page.stdout.trimEnd().split('\n')).toHaveLength(2);
    expect(page.stderr).toMatch(/^more: --cursor \S+ {2}\(or --all\)$/m);
    const cursor = /--cursor (\S+)/.exec(page.stderr)![1]!;
    const second = await admin('conversations', '--limit', '1', '--cursor', cursor, '--json');
    expect((JSON.parse(second.stdout) as { conversations: unknown[] }).conversations).toHaveLength(1);
    expect((JSON.parse(all.stdout) as { conversations: unknown[] }).conversations).toHaveLength(3);
  });

  it('downloads a run exactly, inline or through the presigned redirect, to a file or stdout; pages lines', async () => {
    const file = join(dir, 'run-2.jsonl');
    const [big, small, failed, lines, firstPage] = await Promise.all([
      admin('get', '--agent', 'bot', '--conv', 'c-1', '--run', '2', '-o', file), // 974 KB > 64 KiB inline: 307
      admin('get', '--agent', 'bot', '--conv', 'c/2', '--run', '1'),
      admin('get', '--agent', 'bot', '--conv', 'c-1', '--run', '3'),
      admin('lines', '--agent', 'bot', '--conv', 'c-1', '--all', '--json'),
      admin('lines', '--agent', 'bot', '--conv', 'c-1', '--limit', '2'),
    ]);
    expect(big.code, big.stderr).toBe(0);
    expect((await readFile(file)).equals(FIXTURE)).toBe(true);
    expect(big.stderr).toContain(`run 2 (completed): ${FIXTURE.length} bytes`);
    expect(small.stdout).toBe('{"hello":"world"}\n');
    expect(failed.stdout).toBe('{"failed":true}\n');
    const parsed = JSON.parse(lines.stdout) as { runId: number; lines: { text: string }[] };
    expect(parsed.runId).toBe(2);
    expect(parsed.lines).toHaveLength(1019);
    expect(`${parsed.lines.map((l) => l.text).join('\n')}\n`).toBe(FIXTURE.toString());
    expect(firstPage.stdout.split('\n').slice(0, 2).map((l) => l.slice(0, 8))).toEqual(['     1  ', '     2  ']);
    expect(firstPage.stderr).toContain('more: --cursor');
  });

  it('writes -o relative to where npm run was typed (INIT_CWD), and stops quietly when the reader of stdout goes away', async () => {
    const [relative, piped] = await Promise.all([
      run('scripts/admin.ts', ['get', '--agent', 'bot', '--conv', 'c/2', '--run', '1', '-o', 'out.jsonl'], { ...env, INIT_CWD: dir }),
      run('scripts/admin.ts', ['get', '--agent', 'bot', '--conv', 'c-1', '--run', '2'], env, 1), // 974 KB into `| head -c 1`
    ]);
    expect(relative.code, relative.stderr).toBe(0);
    expect(await readFile(join(dir, 'out.jsonl'), 'utf8')).toBe('{"hello":"world"}\n');
    expect(relative.stderr).toContain(`→ ${join(dir, 'out.jsonl')}`);
    expect([piped.code, piped.stderr]).toEqual([0, '']);
  });

  it('erases with --yes and prints the receipt; the receipt and the receipts list show it; without --yes it refuses', async () => {
    const refused = await admin('erase', '--agent', 'helper');
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('refusing to erase without --yes');
    const erased = await admin('erase', '--agent', 'helper', '--conv', 'c-3', '--yes', '--json');
    expect(erased.code, erased.stderr).toBe(0);
    const receipt = JSON.parse(erased.stdout) as { receiptId: string; state: string; runs: number; actor: string };
    expect(receipt).toMatchObject({ state: 'completed', runs: 1, actor: 'cli-test' });
    const [one, list, after] = await Promise.all([admin('receipt', receipt.receiptId), admin('erasures'), admin('conversations', '--json')]);
    expect(one.stdout).toContain(receipt.receiptId);
    expect(one.stdout).toMatch(/completed\s+helper \/ c-3\s+1\s+1\s+/);
    expect(list.stdout.split('\n')[1]).toContain(receipt.receiptId);
    expect((JSON.parse(after.stdout) as { conversations: { conversationId: string }[] }).conversations.map((c) => c.conversationId).sort()).toEqual(['c-1', 'c/2']);
  });

  it('fails clearly: missing environment (2), usage (2), refused token and unknown run (1), unreachable host with its errno (1)', async () => {
    // A port nobody listens on: bound, then released.
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const closed = (probe.address() as AddressInfo).port;
    await new Promise((resolve) => probe.close(resolve));
    const [noUrl, noToken, tokenFlag, badToken, notFound, unreachable, help, noScheme] = await Promise.all([
      run('scripts/admin.ts', ['conversations'], { TRANSCRIPT_STORE_ADMIN_TOKEN: 'x' }),
      run('scripts/admin.ts', ['conversations'], { TRANSCRIPT_STORE_URL: local.svc.url }),
      admin('conversations', '--token', 'secret'),
      run('scripts/admin.ts', ['agents'], { ...env, TRANSCRIPT_STORE_ADMIN_TOKEN: 'not-a-jwt' }),
      admin('get', '--agent', 'bot', '--conv', 'c-1', '--run', '99'),
      run('scripts/admin.ts', ['agents'], { ...env, TRANSCRIPT_STORE_URL: `http://127.0.0.1:${closed}` }),
      admin('--help'),
      run('scripts/admin.ts', ['agents'], { ...env, TRANSCRIPT_STORE_URL: 'localhost:8787' }),
    ]);
    expect([noUrl.code, noUrl.stderr.split('\n')[0]]).toEqual([2, 'admin: set TRANSCRIPT_STORE_URL to the service URL, e.g. http://127.0.0.1:8787']);
    expect(noToken.code).toBe(2);
    expect(noToken.stderr).toContain('set TRANSCRIPT_STORE_ADMIN_TOKEN');
    expect(tokenFlag.code).toBe(2);
    expect(tokenFlag.stderr).toContain("Unknown option '--token'");
    expect(tokenFlag.stderr).not.toContain('secret');
    expect([badToken.code, badToken.stderr.trim()]).toEqual([1, 'admin: 401 invalid_token: Invalid token']);
    expect([notFound.code, notFound.stderr.trim()]).toEqual([1, 'admin: 404 not_found: Not found']);
    expect([unreachable.code, unreachable.stderr.trim()]).toEqual([1, `admin: cannot reach 127.0.0.1:${closed}: ECONNREFUSED`]);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('usage: npm run admin -- <command> [options]');
    expect([noScheme.code, noScheme.stderr.split('\n')[0]]).toEqual([2, 'admin: TRANSCRIPT_STORE_URL must start with http:// or https://, got localhost:8787']);
  });
});

describe('npm run token -- --admin', () => {
  it('mints an admin token (organizationId, scope transcripts:admin, sub) with the dev secret', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'admin-token-'));
    try {
      const res = await run('scripts/token.ts', ['--admin', '--org', 'acme', '--sub', 'ops', '--ttl', '10m'], { DATA_DIR: dataDir });
      expect(res.code, res.stderr).toBe(0);
      const token = res.stdout.trim().split('\n').at(-1)!;
      const key = new TextEncoder().encode((await readFile(join(dataDir, 'dev-jwt-secret'), 'utf8')).trim());
      const { payload } = await jwtVerify(token, key, { algorithms: ['HS256'] });
      expect(Object.keys(payload).sort()).toEqual(['exp', 'iat', 'organizationId', 'scope', 'sub']);
      expect(payload).toMatchObject({ organizationId: 'acme', scope: 'transcripts:admin', sub: 'ops' });
      expect(payload.exp! - payload.iat!).toBe(600);
      const [bad, scoped] = await Promise.all([
        run('scripts/token.ts', ['--admin', '--org', 'acme', '--run', '3'], { DATA_DIR: dataDir }),
        run('scripts/token.ts', ['--admin', '--org', 'acme', '--agent', 'a'], { DATA_DIR: dataDir }),
      ]);
      expect(bad.code).toBe(2);
      expect([scoped.code, scoped.stdout, scoped.stderr.split('\n')[0]]).toEqual([2, '', '--agent and --conv are for worker tokens, not --admin (an admin token reaches the whole organization)']);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
