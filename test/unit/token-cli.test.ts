import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeProtectedHeader, jwtVerify } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

let dataDir: string;
let secretFile: string;
let first: Run;
let second: Run;
let badRun: Run;
let missingOrg: Run;

/** Runs the token CLI asynchronously (a synchronous spawn can deadlock a process hosting emulators). */
function runCli(args: string[]): Promise<Run> {
  const env: NodeJS.ProcessEnv = { ...process.env, DATA_DIR: dataDir };
  delete env['JWT_SECRET'];
  delete env['JWT_ISSUER'];
  delete env['JWT_AUDIENCE'];
  return new Promise((resolvePromise, reject) => {
    const child = spawn('npx', ['tsx', 'scripts/token.ts', ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolvePromise({ code, stdout, stderr }));
  });
}

const lastLine = (s: string) => s.trimEnd().split('\n').at(-1) ?? '';

async function devKey(): Promise<Uint8Array> {
  return new TextEncoder().encode((await readFile(secretFile, 'utf8')).trim());
}

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'token-cli-'));
  secretFile = join(dataDir, 'dev-jwt-secret');
  // The first run creates the dev secret; the others are independent of each other and run concurrently.
  first = await runCli(['--org', 'org-1', '--agent', 'agent-1', '--conv', 'conv/1', '--run', '42', '--ttl', '90s']);
  [second, badRun, missingOrg] = await Promise.all([
    runCli(['--org', 'org-1', '--agent', 'agent-1', '--conv', 'conv/1', '--ttl', '2h']),
    runCli(['--org', 'o', '--agent', 'a', '--conv', 'c', '--run', '1.5']),
    runCli(['--agent', 'a', '--conv', 'c']),
  ]);
});

afterAll(async () => {
  await rm(dataDir, { recursive: true, force: true });
});

describe('scripts/token.ts', () => {
  it('prints a JWT with exactly the worker claims and exp - iat equal to --ttl', async () => {
    expect(first.code, first.stderr).toBe(0);
    const token = lastLine(first.stdout);
    const { payload } = await jwtVerify(token, await devKey(), { algorithms: ['HS256'] });
    expect(decodeProtectedHeader(token).alg).toBe('HS256');
    expect(Object.keys(payload).sort()).toEqual(['agentId', 'conversationId', 'exp', 'iat', 'organizationId', 'runId']);
    expect(payload).toMatchObject({ organizationId: 'org-1', agentId: 'agent-1', conversationId: 'conv/1', runId: 42 });
    expect(payload.exp! - payload.iat!).toBe(90);
    expect(Math.abs(payload.iat! - Date.now() / 1000)).toBeLessThan(120);
  });

  it('creates the dev secret once, readable only by the owner, and says so (a token for another DATA_DIR is a 401)', async () => {
    expect((await stat(secretFile)).mode & 0o777).toBe(0o600);
    expect((await readFile(secretFile, 'utf8')).trim().length).toBeGreaterThanOrEqual(32);
    expect(first.stderr).toContain(`note: ${secretFile} did not exist, so a new dev secret was created there: only an npm start with DATA_DIR=${dataDir} accepts this token`);
    expect(first.stderr).toContain(`signed with ${secretFile}:`);
    expect(second.stderr).not.toContain('note:');
    expect(second.stderr).toContain(`signed with ${secretFile}:`);
  });

  it('signs a second invocation with the same persisted secret', async () => {
    expect(second.code, second.stderr).toBe(0);
    const { payload } = await jwtVerify(lastLine(second.stdout), await devKey(), { algorithms: ['HS256'] });
    expect(payload.runId).toBeUndefined();
    expect(payload.conversationId).toBe('conv/1');
    expect(payload.exp! - payload.iat!).toBe(2 * 3600);
  });

  it('exits with code 2 and a usage message for a --run that is not a positive integer', () => {
    expect(badRun.code).toBe(2);
    expect(badRun.stdout).toBe('');
    expect(badRun.stderr).toContain('--run must be a positive integer, got "1.5"');
    expect(badRun.stderr).toContain('usage: npm run token');
  });

  it('exits with code 2 and a usage message when --org is missing', () => {
    expect(missingOrg.code).toBe(2);
    expect(missingOrg.stdout).toBe('');
    expect(missingOrg.stderr).toContain('--org, --agent and --conv are required');
    expect(missingOrg.stderr).toContain('usage: npm run token');
  });
});
