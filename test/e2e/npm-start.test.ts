import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ERRORS, errorBody } from '../../functions/lib/contract.js';

/**
 * Issue 2 acceptance, the way a user does it: `npm start` (scripts/local.ts) prints its URL, a plain
 * fetch client runs GET 404 → POST 200 → GET 200 → POST 409 → DELETE {"deleted":1} → GET 404 with
 * tokens from `npm run token` (scripts/token.ts), and a restart on the same DATA_DIR keeps the data.
 * Children are spawned asynchronously (a synchronous spawn would deadlock in-process emulators).
 */
const root = new URL('../../', import.meta.url).pathname;
const tsx = join(root, 'node_modules/.bin/tsx');
let dataDir: string;
/** Every npm start this file spawned: one still running after a failed assertion is stopped in afterAll (never leaked). */
const children = new Set<ChildProcess>();

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'npm-start-'));
});
afterAll(async () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) await stop(child, 'SIGTERM'); // tsx relays it to the service (a SIGKILL would orphan the service)
  await rm(dataDir, { recursive: true, force: true });
});

function env(): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { ...process.env, DATA_DIR: dataDir, PORT: '0' };
  delete e['JWT_SECRET'];
  delete e['AWS_ENDPOINT_URL'];
  delete e['AWS_ENDPOINT_URL_S3'];
  delete e['AWS_ENDPOINT_URL_DYNAMODB'];
  for (const k of ['RETAIN_COMPLETED_RUNS', 'RETAIN_FAILED_DAYS', 'RETENTION_INTERVAL_MINUTES', 'ORPHAN_GRACE_SECONDS', 'CONVERSATION_TTL_DAYS']) delete e[k]; // the banner shows the defaults
  return e;
}

async function start(): Promise<{ child: ChildProcess; url: string; stderr: () => string }> {
  const child = spawn(tsx, ['scripts/local.ts'], { cwd: root, env: env(), stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let out = '';
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`npm start printed no URL in 30 s: ${err}`)), 30_000);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /^(http:\/\/127\.0\.0\.1:\d+)$/m.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    child.once('exit', (code) => reject(new Error(`npm start exited early (${code}): ${err}`)));
  });
  return { child, url, stderr: () => err };
}

async function stop(child: ChildProcess, signal: NodeJS.Signals): Promise<number | null> {
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.kill(signal);
  return exited;
}

async function token(args: string[]): Promise<string> {
  const child = spawn(tsx, ['scripts/token.ts', ...args], { cwd: root, env: env(), stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  expect(code, `npm run token failed: ${err.slice(-2000)}`).toBe(0);
  return out.trim().split('\n').at(-1)!;
}

describe('npm start + npm run token (issue 2 acceptance)', () => {
  it('serves the whole contract flow to a plain fetch client and keeps data across a restart', async () => {
    const conv = ['--org', 'acme', '--agent', 'bot', '--conv', 'c-1'];
    const [convToken, runToken] = await Promise.all([token(conv), token([...conv, '--run', '7'])]);
    const first = await start();
    expect(first.stderr()).toContain('transcript-store listening on');
    // When retention runs and what it keeps, with the defaults (README § Configuration).
    expect(first.stderr()).toMatch(/^ {2}retention: a pass every 60 min \(first one 60 min after start\): keeps the latest completed run \+ 2 before it, runs that did not complete 7 d; never anything younger than 3600 s$/m);
    const url = `${first.url}/worker/transcript/snapshot`;
    const auth = (t: string) => ({ authorization: `Bearer ${t}` });
    const post = () =>
      fetch(url, {
        method: 'POST',
        headers: { ...auth(runToken), 'content-type': 'application/json' },
        body: JSON.stringify({ terminalStatus: 'completed', snapshotJsonl: '{"type":"session"}\n{"a":"ü"}\n', runId: 7 }),
      });

    const r404 = await fetch(url, { headers: auth(convToken) });
    expect(r404.status).toBe(404);
    expect(await r404.json()).toEqual(errorBody(ERRORS.noSnapshot));
    expect((await post()).status).toBe(200);
    const r200 = await fetch(url, { headers: auth(convToken) });
    expect(r200.status).toBe(200);
    expect(await r200.text()).toBe('{"type":"session"}\n{"a":"ü"}\n');
    const r409 = await post();
    expect(r409.status).toBe(409);
    expect(await r409.json()).toEqual(errorBody(ERRORS.alreadyExists));
    const del = await fetch(url, { method: 'DELETE', headers: auth(convToken) });
    expect(await del.json()).toEqual({ deleted: 1 });
    expect((await fetch(url, { headers: auth(convToken) })).status).toBe(404);

    // Store something, stop cleanly, start again on the same DATA_DIR: it is still there.
    const runToken8 = await token([...conv, '--run', '8']);
    const kept = await fetch(url, {
      method: 'POST',
      headers: { ...auth(runToken8), 'content-type': 'application/json' },
      body: JSON.stringify({ terminalStatus: 'completed', snapshotJsonl: 'survives restarts\n', runId: 8 }),
    });
    expect(kept.status).toBe(200);
    expect(await stop(first.child, 'SIGTERM')).toBe(0);

    const second = await start();
    try {
      const again = await fetch(`${second.url}/worker/transcript/snapshot`, { headers: auth(convToken) });
      expect(again.status).toBe(200);
      expect(await again.text()).toBe('survives restarts\n');
    } finally {
      expect(await stop(second.child, 'SIGINT')).toBe(0);
    }
  }, 90_000);
});
