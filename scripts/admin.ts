/**
 * `npm run admin -- <command> [options]`: the operator API from a terminal (docs/DESIGN.md § Operator API).
 *
 * The base URL comes from TRANSCRIPT_STORE_URL (the one documented name), the admin token from TRANSCRIPT_STORE_ADMIN_TOKEN —
 * never from the command line, where it would show in process lists and shell history. Tables by default,
 * `--json` for scripts. Exit codes: 0 done, 1 the service or the network said no, 2 usage.
 */
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { rename, unlink } from 'node:fs/promises';
import { resolve } from 'node:path';
import { createInterface } from 'node:readline/promises';
import { parseArgs } from 'node:util';
import { ADMIN_PATHS } from '../functions/lib/contract.js';

const USAGE = `usage: npm run admin -- <command> [options]

commands:
  conversations [--agent A]                 conversations, newest activity first
  runs --agent A --conv C                   a conversation's runs, highest first
  get --agent A --conv C --run N [-o FILE]  a run's bytes (any status), to FILE or stdout
  lines --agent A --conv C [--run N]        a run's JSONL lines (default: the latest run)
  agents                                    agents with their conversation, run and byte counts
  erase [--agent A [--conv C]] [--yes]      erase a conversation, an agent or the whole organization
  erasures                                  erasure receipts, newest first
  receipt <receiptId>                       one erasure receipt

options:
  --limit N        page size                --cursor C   start at this page (a nextCursor)
  --all            follow every page        --json       JSON instead of a table
  -o, --output F   (get) write to F         --yes        (erase) do not ask
  -h, --help       this text

environment:
  TRANSCRIPT_STORE_URL          the service, e.g. http://127.0.0.1:8787
  TRANSCRIPT_STORE_ADMIN_TOKEN  an admin token (scope transcripts:admin); dev: npm run -s token -- --admin --org O`;

class UsageError extends Error {}
class CliError extends Error {}

const OPTIONS = {
  agent: { type: 'string' },
  conv: { type: 'string' },
  run: { type: 'string' },
  limit: { type: 'string' },
  cursor: { type: 'string' },
  output: { type: 'string', short: 'o' },
  all: { type: 'boolean' },
  json: { type: 'boolean' },
  yes: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

type Values = { [K in keyof typeof OPTIONS]?: (typeof OPTIONS)[K]['type'] extends 'string' ? string : boolean };

interface Client {
  readonly base: URL;
  readonly token: string;
}

function client(): Client {
  const raw = process.env['TRANSCRIPT_STORE_URL'];
  if (!raw) throw new UsageError('set TRANSCRIPT_STORE_URL to the service URL, e.g. http://127.0.0.1:8787');
  let base: URL;
  try {
    base = new URL(raw);
  } catch {
    throw new UsageError(`TRANSCRIPT_STORE_URL is not a URL: ${raw}`);
  }
  if (base.protocol !== 'http:' && base.protocol !== 'https:') throw new UsageError(`TRANSCRIPT_STORE_URL must start with http:// or https://, got ${raw}`);
  const token = process.env['TRANSCRIPT_STORE_ADMIN_TOKEN']?.trim();
  if (!token) throw new UsageError('set TRANSCRIPT_STORE_ADMIN_TOKEN to an admin token (dev: npm run -s token -- --admin --org O)');
  return { base, token };
}

function urlOf(c: Client, path: string, params: Record<string, string | undefined> = {}): URL {
  const url = new URL(c.base.href.replace(/\/$/, '') + path);
  for (const [k, v] of Object.entries(params)) if (v !== undefined) url.searchParams.set(k, v);
  return url;
}

/** fetch with the network failure named: host and errno (ECONNREFUSED, ENOTFOUND, …). */
async function request(url: URL, init: RequestInit = {}): Promise<Response> {
  try {
    return await fetch(url, init);
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    throw new CliError(`cannot reach ${url.host}: ${cause?.code ?? cause?.message ?? (err as Error).message}`);
  }
}

/** The service's answer as JSON, or a CliError naming status, code and message. 503s are retried (Retry-After). */
async function call<T>(c: Client, method: 'GET' | 'POST', path: string, params: Record<string, string | undefined> = {}, body?: unknown): Promise<{ status: number; body: T; headers: Headers }> {
  for (let attempt = 1; ; attempt++) {
    const res = await request(urlOf(c, path, params), {
      method,
      headers: { authorization: `Bearer ${c.token}`, ...(body !== undefined && { 'content-type': 'application/json' }) },
      ...(body !== undefined && { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    if (res.status === 503 && attempt < 4) {
      await new Promise((r) => setTimeout(r, 1000 * Number(res.headers.get('retry-after') ?? 1)));
      continue;
    }
    if (res.status >= 400) throw new CliError(describeError(res.status, text));
    try {
      return { status: res.status, body: JSON.parse(text) as T, headers: res.headers };
    } catch {
      throw new CliError(`${res.status}: not JSON from ${path}`);
    }
  }
}

function describeError(status: number, text: string): string {
  try {
    const e = JSON.parse(text) as { error?: string; code?: string };
    if (e.error) return `${status} ${e.code ?? ''}: ${e.error}`.replace(' :', ':');
  } catch {
    // not our JSON: a proxy or API Gateway itself
  }
  return `${status}: ${text.slice(0, 200)}`;
}

// ─── output ─────────────────────────────────────────────────────────────────────────────────────

function print(s: string): void {
  process.stdout.write(`${s}\n`);
}

/** Bytes for people: 1023 B, 1.5 KB, 12.3 MB (powers of 1,000). */
function human(n: number | null | undefined): string {
  if (n === null || n === undefined) return '-';
  if (n < 1000) return `${n} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let v = n;
  let u = -1;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return `${v.toFixed(1)} ${units[u]}`;
}

/** A plain text table: a header row and left-aligned columns, two spaces apart. */
function table(headers: string[], rows: (string | number | null | undefined)[][]): string {
  const cells = rows.map((r) => r.map((c) => (c === null || c === undefined ? '-' : String(c))));
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  return [line(headers), ...cells.map(line)].join('\n');
}

// ─── commands ───────────────────────────────────────────────────────────────────────────────────

interface Listing {
  path: string;
  key: string;
  params: Record<string, string | undefined>;
  render: (items: Record<string, unknown>[]) => string;
}

async function list(c: Client, v: Values, l: Listing): Promise<void> {
  const items: Record<string, unknown>[] = [];
  let cursor = v.cursor;
  let next: string | null = null;
  do {
    const page = await call<Record<string, unknown>>(c, 'GET', l.path, { ...l.params, limit: v.limit, cursor });
    items.push(...(page.body[l.key] as Record<string, unknown>[]));
    next = (page.body['nextCursor'] as string | null) ?? null;
    cursor = next ?? undefined;
  } while (v.all && next);
  if (v.json) return print(JSON.stringify({ [l.key]: items, nextCursor: next }, null, 2));
  print(items.length ? l.render(items) : `(no ${l.key})`);
  if (next) process.stderr.write(`more: --cursor ${next}  (or --all)\n`);
}

function need(v: Values, ...names: ('agent' | 'conv' | 'run')[]): void {
  const missing = names.filter((n) => !v[n]);
  if (missing.length) throw new UsageError(`missing ${missing.map((n) => `--${n}`).join(', ')}`);
}

const receiptRows = (rs: Record<string, unknown>[]) =>
  table(
    ['RECEIPT', 'STATE', 'SCOPE', 'CONVERSATIONS', 'RUNS', 'OBJECTS', 'BYTES', 'STARTED', 'COMPLETED'],
    rs.map((r) => {
      const s = r['scope'] as { agentId?: string; conversationId?: string };
      const scope = s.conversationId !== undefined ? `${s.agentId} / ${s.conversationId}` : s.agentId !== undefined ? `agent ${s.agentId}` : 'organization';
      return [r['receiptId'] as string, r['state'] as string, scope, r['conversations'] as number, r['runs'] as number, r['objects'] as number, human(r['bytes'] as number), r['startedAt'] as string, r['completedAt'] as string | null];
    }),
  );

async function getRun(c: Client, v: Values): Promise<void> {
  need(v, 'agent', 'conv', 'run');
  const url = urlOf(c, ADMIN_PATHS.run, { agentId: v.agent, conversationId: v.conv, runId: v.run });
  let res = await request(url, { headers: { authorization: `Bearer ${c.token}` }, redirect: 'manual' });
  if (res.status >= 400) throw new CliError(describeError(res.status, await res.text()));
  const sha256 = res.headers.get('x-snapshot-sha256');
  const status = res.headers.get('x-snapshot-terminal-status');
  if (res.status === 307) {
    await res.body?.cancel();
    // The presigned URL needs no token (and must not get one).
    res = await request(new URL(res.headers.get('location')!));
    if (res.status !== 200) throw new CliError(`storage answered ${res.status} for the presigned URL`);
  } else if (res.status !== 200) {
    throw new CliError(`unexpected ${res.status}`);
  }
  // `npm run` starts scripts in the package root; a relative -o is relative to where the operator typed it.
  const output = v.output ? resolve(process.env['INIT_CWD'] ?? process.cwd(), v.output) : undefined;
  const tmp = output ? `${output}.${process.pid}.${randomBytes(4).toString('hex')}.tmp` : undefined;
  const out = tmp ? createWriteStream(tmp, { flags: 'wx' }) : process.stdout;
  const hash = createHash('sha256');
  let bytes = 0;
  try {
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      hash.update(chunk);
      bytes += chunk.length;
      if (!out.write(chunk)) await once(out, 'drain');
    }
    if (tmp) {
      (out as ReturnType<typeof createWriteStream>).end();
      await once(out, 'finish');
    }
    // fetch has undone any gzip coding: what was written is the run's bytes, checked against its digest.
    if (sha256 && hash.digest('hex') !== sha256) throw new CliError(`downloaded bytes do not match the run's sha256 ${sha256}`);
    if (tmp) await rename(tmp, output!);
  } catch (err) {
    if (tmp) await unlink(tmp).catch(() => {});
    throw err;
  }
  if (output) process.stderr.write(`run ${v.run} (${status ?? 'unknown status'}): ${bytes} bytes, sha256 ${sha256 ?? '?'} → ${output}\n`);
}

async function lines(c: Client, v: Values): Promise<void> {
  need(v, 'agent', 'conv');
  const all: Record<string, unknown>[] = [];
  let cursor = v.cursor;
  let page: { runId: number; bytes: number; lines: Record<string, unknown>[]; nextCursor: string | null };
  do {
    page = (await call<typeof page>(c, 'GET', ADMIN_PATHS.lines, { agentId: v.agent, conversationId: v.conv, runId: v.run, limit: v.limit, cursor })).body;
    if (v.json) all.push(...page.lines);
    else for (const l of page.lines) print(`${String(l['line']).padStart(6)}  ${l['text'] as string}${l['truncated'] ? ` … [${l['bytes'] as number} bytes]` : ''}`);
    cursor = page.nextCursor ?? undefined;
  } while (v.all && page.nextCursor);
  if (v.json) print(JSON.stringify({ runId: page.runId, bytes: page.bytes, lines: all, nextCursor: page.nextCursor }, null, 2));
  else if (page.nextCursor) process.stderr.write(`more: --cursor ${page.nextCursor}  (or --all)\n`);
}

/** The organization an admin token names, for the confirmation prompt only (the service verifies the token). */
function tokenOrganization(token: string): string {
  try {
    const payload = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as { organizationId?: unknown };
    return typeof payload.organizationId === 'string' ? payload.organizationId : '(unknown)';
  } catch {
    return '(unknown)';
  }
}

async function erase(c: Client, v: Values): Promise<void> {
  if (v.conv && !v.agent) throw new UsageError('--conv needs --agent');
  const scope = { ...(v.agent && { agentId: v.agent }), ...(v.conv && { conversationId: v.conv }) };
  const org = tokenOrganization(c.token);
  const what = v.conv ? `conversation ${v.agent} / ${v.conv}` : v.agent ? `every conversation of agent ${v.agent}` : 'EVERY conversation';
  if (!v.yes) {
    if (!process.stdin.isTTY) throw new UsageError('refusing to erase without --yes (stdin is not a terminal)');
    const rl = createInterface({ input: process.stdin, output: process.stderr });
    const answer = await rl.question(`Erase ${what} of organization ${org}? This cannot be undone. Type "erase" to confirm: `);
    rl.close();
    if (answer.trim() !== 'erase') throw new CliError('not confirmed; nothing erased');
  }
  for (;;) {
    const res = await call<Record<string, unknown>>(c, 'POST', ADMIN_PATHS.erasures, {}, scope);
    if (res.status === 200) {
      if (v.json) print(JSON.stringify(res.body, null, 2));
      else print(receiptRows([res.body]));
      return;
    }
    process.stderr.write(`erasing… ${res.body['conversations'] as number} conversations so far (receipt ${res.body['receiptId'] as string})\n`);
    // A 202 also answers at once while another call holds the erasure's lease (one that died holds it for up to
    // its deadline + 2 minutes): do not spin.
    await new Promise((r) => setTimeout(r, 1000));
  }
}

async function main(argv: string[]): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const v = parsed.values as Values;
  const [command, ...rest] = parsed.positionals;
  if (v.help || command === undefined || command === 'help') {
    print(USAGE);
    return;
  }
  if (v.limit !== undefined && !/^[1-9]\d{0,3}$/.test(v.limit)) throw new UsageError(`--limit must be a positive integer, got "${v.limit}"`);
  if (v.run !== undefined && !/^[1-9]\d{0,15}$/.test(v.run)) throw new UsageError(`--run must be a positive integer, got "${v.run}"`);
  if (rest.length > 0 && command !== 'receipt') throw new UsageError(`unexpected argument "${rest[0]}"`);
  const c = client();
  switch (command) {
    case 'conversations':
      return list(c, v, {
        path: ADMIN_PATHS.conversations,
        key: 'conversations',
        params: { agentId: v.agent },
        render: (cs) =>
          table(
            ['AGENT', 'CONVERSATION', 'LAST ACTIVITY', 'LATEST RUN', 'LATEST', 'RUNS', 'STORED'],
            cs.map((x) => [x['agentId'] as string, x['conversationId'] as string, x['lastActivityAt'] as string, x['latestRunId'] as number | null, human(x['latestBytes'] as number | null), x['runs'] as number, human(x['bytes'] as number)]),
          ),
      });
    case 'runs':
      need(v, 'agent', 'conv');
      return list(c, v, {
        path: ADMIN_PATHS.runs,
        key: 'runs',
        params: { agentId: v.agent, conversationId: v.conv },
        render: (rs) =>
          table(
            ['RUN', 'STATUS', 'STATE', 'BYTES', 'STORED', 'CREATED', 'SHA256'],
            rs.map((r) => [r['runId'] as number, r['terminalStatus'] as string, r['state'] as string, human(r['bytes'] as number), human(r['storedBytes'] as number), r['createdAt'] as string, (r['sha256'] as string).slice(0, 16)]),
          ),
      });
    case 'get':
      return getRun(c, v);
    case 'lines':
      return lines(c, v);
    case 'agents':
      return list(c, v, {
        path: ADMIN_PATHS.agents,
        key: 'agents',
        params: {},
        render: (as) => table(['AGENT', 'CONVERSATIONS', 'RUNS', 'STORED'], as.map((a) => [a['agentId'] as string, a['conversations'] as number, a['runs'] as number, human(a['bytes'] as number)])),
      });
    case 'erase':
      return erase(c, v);
    case 'erasures':
      return list(c, v, { path: ADMIN_PATHS.erasures, key: 'erasures', params: {}, render: receiptRows });
    case 'receipt': {
      const id = rest[0];
      if (!id || rest.length > 1) throw new UsageError('usage: receipt <receiptId>');
      const r = await call<Record<string, unknown>>(c, 'GET', `${ADMIN_PATHS.erasures}/${encodeURIComponent(id)}`);
      return print(v.json ? JSON.stringify(r.body, null, 2) : receiptRows([r.body]));
    }
    default:
      throw new UsageError(`unknown command "${command}"`);
  }
}

/** True for the error of writing to a pipe whose reader has gone (`npm run admin -- get … | head`). */
function isBrokenPipe(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | undefined)?.code === 'EPIPE';
}

// The reader of stdout went away: what it wanted it has; stop quietly, as other command-line tools do.
process.stdout.on('error', (err) => {
  if (isBrokenPipe(err)) process.exit(0);
  throw err;
});

try {
  await main(process.argv.slice(2));
} catch (err) {
  if (isBrokenPipe(err)) process.exit(0);
  if (err instanceof UsageError) {
    process.stderr.write(`admin: ${err.message}\n\n${USAGE}\n`);
    process.exit(2);
  }
  process.stderr.write(`admin: ${err instanceof CliError ? err.message : String((err as Error).stack ?? err)}\n`);
  process.exit(1);
}
