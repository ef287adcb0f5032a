/**
 * Fault 2: a second `npm start` on a DATA_DIR already in use stops with ONE clear line naming the
 * other process (pid) — not a dynalite/LevelDB stack trace — and a stale lock (its process is gone,
 * e.g. after kill -9) is taken over. Children are spawned asynchronously (never execFileSync from a
 * process hosting emulators).
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runToExit, startNpm } from './support.js';

const LOCK = 'npm-start.lock';
let dataDir: string;

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'data-dir-lock-'));
});
afterAll(async () => {
  await rm(dataDir, { recursive: true, force: true });
});

/** A pid that belonged to a process which has exited (so it is, for now, not running). */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' });
  await new Promise((resolve) => child.once('exit', resolve));
  return child.pid!;
}

describe('one npm start per DATA_DIR', () => {
  it('refuses a second start on the same DATA_DIR with one line naming the first pid, and the first keeps serving', async () => {
    const first = await startNpm(dataDir);
    try {
      const second = await runToExit(dataDir);
      expect(second.code).toBe(1);
      const lines = second.stderr.split('\n').filter((l) => l.trim() !== '');
      expect(lines, second.stderr).toHaveLength(1);
      expect(lines[0]).toContain(`pid ${first.child.pid}`);
      expect(lines[0]).toContain(dataDir);
      expect(second.stderr).not.toMatch(/LevelDB|LEVEL_|at .*\(.*:\d+:\d+\)/);
      expect(second.stdout).toBe('');
      // The first one is unaffected.
      const res = await fetch(`${first.url}/worker/transcript/snapshot`);
      expect(res.status).toBe(401);
      await res.body?.cancel();
      expect(first.alive()).toBe(true);
    } finally {
      expect(await first.stop('SIGTERM')).toBe(0);
    }
    // A clean stop releases the lock.
    await expect(readFile(join(dataDir, LOCK), 'utf8')).rejects.toMatchObject({ code: 'ENOENT' });
  }, 120_000);

  it('takes over the lock of a process killed with kill -9', async () => {
    const first = await startNpm(dataDir);
    expect(JSON.parse(await readFile(join(dataDir, LOCK), 'utf8'))).toMatchObject({ pid: first.child.pid });
    await first.stop('SIGKILL');
    const second = await startNpm(dataDir);
    try {
      expect(JSON.parse(await readFile(join(dataDir, LOCK), 'utf8'))).toMatchObject({ pid: second.child.pid });
    } finally {
      await second.stop();
    }
  }, 120_000);

  it('takes over a stale or torn lock file', async () => {
    for (const content of [JSON.stringify({ pid: await deadPid(), startedAt: '2026-01-01T00:00:00Z', hostname: (await import('node:os')).hostname() }), '']) {
      await writeFile(join(dataDir, LOCK), content);
      const svc = await startNpm(dataDir);
      await svc.stop();
    }
  }, 120_000);
});
