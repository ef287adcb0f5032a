/**
 * The swap is one import line: the existing worker's calls, verbatim, against the local service.
 * Also covers the built package (ESM + .d.ts, zero deps, bin with a shebang) and the operator CLI.
 */
import { execFile } from 'node:child_process';
import { access, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalService } from '../../local/service.js';
// The only line a worker changes (was: from "./transcript-snapshot"):
import { clearSnapshots, hydrateFromSnapshot, type TerminalStatus, writeSnapshot } from '../../worker-client/src/index.js';
import { runCli } from '../../worker-client/src/cli.js';
import { conversation, startService, tempDir } from './support.js';

const run = promisify(execFile);
const ROOT = resolve(import.meta.dirname, '../..');

let svc: LocalService;
let dir: string;
let cleanup: () => Promise<void>;

beforeAll(async () => {
  svc = await startService();
  ({ dir, cleanup } = await tempDir());
});
afterAll(async () => {
  await cleanup();
  await svc.stop();
});

describe('drop-in for the existing worker module', () => {
  it('runs the worker lifecycle (hydrate → write → hydrate elsewhere → clear) with the same calls', async () => {
    const c = await conversation(svc);
    const gatewayUrl = svc.url;
    const sessionFile = join(dir, 'pod-a', '.openclaw', 'session.jsonl');

    // Boot of the first run: nothing stored yet.
    expect(await hydrateFromSnapshot({ sessionFile, gatewayUrl, workerToken: c.convToken })).toBe(false);

    // The agent runtime writes the session; cleanup() uploads it.
    await mkdir(join(dir, 'pod-a', '.openclaw'), { recursive: true });
    await writeFile(sessionFile, '{"type":"session","version":3}\n{"type":"message","id":"m1"}\n');
    const terminalStatus: TerminalStatus = 'completed';
    await writeSnapshot({ sessionFile, gatewayUrl, workerToken: await c.runToken(41), terminalStatus, runId: 41 });

    // Next run on another pod.
    const other = join(dir, 'pod-b', '.openclaw', 'session.jsonl');
    expect(await hydrateFromSnapshot({ sessionFile: other, gatewayUrl, workerToken: c.convToken })).toBe(true);
    expect(await readFile(other, 'utf8')).toBe(await readFile(sessionFile, 'utf8'));

    // /new: reset path.
    await clearSnapshots({ gatewayUrl, workerToken: c.convToken });
    expect(await hydrateFromSnapshot({ sessionFile: join(dir, 'pod-c', 's.jsonl'), gatewayUrl, workerToken: c.convToken })).toBe(false);
  });
});

describe('built package', () => {
  let out: string;
  beforeAll(async () => {
    out = await mkdtemp(join(tmpdir(), 'wc-dist-'));
    await run(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', join(ROOT, 'worker-client/tsconfig.json'), '--outDir', out]);
  }, 60_000);
  afterAll(async () => {
    await rm(out, { recursive: true, force: true });
  });

  it('emits ESM with declarations where package.json exports point, with no runtime dependencies', async () => {
    const pkg = JSON.parse(await readFile(join(ROOT, 'worker-client/package.json'), 'utf8'));
    expect(pkg.type).toBe('module');
    expect(pkg.dependencies ?? {}).toEqual({});
    expect(pkg.exports['.'].import).toEqual({ types: './dist/index.d.ts', default: './dist/index.js' });
    expect(pkg.exports['.'].require).toEqual({ types: './dist/cjs/index.d.ts', default: './dist/cjs/index.js' });
    expect(pkg.bin['transcript-store-client']).toBe('./dist/cli.js');
    await access(join(out, 'index.d.ts'));
    const mod = await import(join(out, 'index.js'));
    expect(Object.keys(mod).sort()).toEqual(
      ['SNAPSHOT_PATH', 'TranscriptStoreError', 'clearSnapshots', 'hydrateFromSnapshot', 'hydrateSnapshot', 'isTranscriptStoreError', 'writeSnapshot'].sort(),
    );
    // Self-contained: nothing outside node: builtins and its own files.
    for (const f of ['index.js', 'snapshot.js', 'http.js', 'atomic-file.js', 'errors.js', 'cli.js']) {
      const src = await readFile(join(out, f), 'utf8');
      for (const m of src.matchAll(/from '([^']+)'/g)) expect(m[1]).toMatch(/^(node:|\.\/)/);
    }
  });

  it('ships a CLI with a shebang that hydrates with the token taken from the environment', async () => {
    const cli = join(out, 'cli.js');
    expect((await readFile(cli, 'utf8')).startsWith('#!/usr/bin/env node\n')).toBe(true);
    const c = await conversation(svc);
    const src = join(dir, 'cli-src.jsonl');
    await writeFile(src, 'cli line\n');
    const env = { ...process.env, TRANSCRIPT_STORE_TOKEN: await c.runToken(2) };
    const w = await run(process.execPath, [cli, 'write', '--gateway-url', svc.url, '--session-file', src, '--run-id', '2'], { env });
    expect(JSON.parse(w.stdout)).toMatchObject({ status: 'written', attempts: 1 });
    const dst = join(dir, 'cli-dst.jsonl');
    const h = await run(process.execPath, [cli, 'hydrate', '--gateway-url', svc.url, '--session-file', dst], { env: { ...process.env, MY_TOKEN: c.convToken }, timeout: 20_000 }).catch((e) => e);
    // Without --token-env MY_TOKEN the default variables are used; none is set → usage error.
    expect(h.code).toBe(2);
    const h2 = await run(process.execPath, [cli, 'hydrate', '--gateway-url', svc.url, '--session-file', dst, '--token-env', 'MY_TOKEN'], { env: { ...process.env, MY_TOKEN: c.convToken } });
    expect(JSON.parse(h2.stdout)).toMatchObject({ status: 'hydrated', hydrated: true, runId: 2 });
    expect(await readFile(dst, 'utf8')).toBe('cli line\n');
  }, 30_000);
});

describe('operator CLI', () => {
  function io(env: Record<string, string | undefined>) {
    const out: string[] = [];
    const err: string[] = [];
    return { out, err, io: { stdout: (s: string) => out.push(s), stderr: (s: string) => err.push(s), env } };
  }

  it('clears, reports no snapshot, and exits 0', async () => {
    const c = await conversation(svc);
    const a = io({ WORKER_TOKEN: c.convToken, DISPATCHER_URL: svc.url });
    expect(await runCli(['clear'], a.io)).toBe(0);
    expect(JSON.parse(a.out.join(''))).toEqual({ status: 'cleared', deleted: 0, attempts: 1 });
    const b = io({ WORKER_TOKEN: c.convToken, DISPATCHER_URL: svc.url });
    expect(await runCli(['hydrate', '--session-file', join(dir, 'none.jsonl')], b.io)).toBe(0);
    expect(JSON.parse(b.out.join(''))).toMatchObject({ status: 'not_found', hydrated: false });
  });

  it('write takes --direct-max-bytes and --no-compress (presigned identity upload)', async () => {
    const c = await conversation(svc);
    const src = join(dir, 'big.jsonl');
    await writeFile(src, '{"line":"x"}\n'.repeat(1000));
    const w = io({ WORKER_TOKEN: await c.runToken(3), DISPATCHER_URL: svc.url });
    expect(await runCli(['write', '--session-file', src, '--run-id', '3', '--direct-max-bytes', '1000', '--no-compress'], w.io)).toBe(0);
    expect(JSON.parse(w.out.join(''))).toMatchObject({ status: 'written', transport: 'presigned', encoding: 'identity', wireBytes: 13_000, parts: 1 });
  });

  it('exits 1 with a typed JSON failure on an invalid token, and never prints the token', async () => {
    const token = 'definitely-not-a-jwt';
    const a = io({ TRANSCRIPT_STORE_TOKEN: token });
    expect(await runCli(['hydrate', '--gateway-url', svc.url, '--session-file', join(dir, 'x.jsonl'), '--retries', '0', '--verbose'], a.io)).toBe(1);
    expect(JSON.parse(a.out.join(''))).toMatchObject({ status: 'failed', code: 'http_4xx', httpStatus: 401, serverCode: 'invalid_token', attempts: 1 });
    expect(a.err.join('')).toContain('"event":"failed"');
    expect(a.out.join('') + a.err.join('')).not.toContain(token);
  });

  it('rejects a token flag and unknown commands with exit 2', async () => {
    const a = io({ TRANSCRIPT_STORE_TOKEN: 't' });
    expect(await runCli(['hydrate', '--token', 'x', '--gateway-url', svc.url, '--session-file', 'f'], a.io)).toBe(2);
    const b = io({ TRANSCRIPT_STORE_TOKEN: 't' });
    expect(await runCli(['purge', '--gateway-url', svc.url], b.io)).toBe(2);
    const d = io({ TRANSCRIPT_STORE_TOKEN: 't' });
    expect(await runCli(['write', '--gateway-url', svc.url, '--session-file', 'f', '--run-id', '1', '--terminal-status', 'done'], d.io)).toBe(2);
  });
});
