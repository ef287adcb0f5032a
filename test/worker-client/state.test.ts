import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseGeneration, readState, scopeOf, statePath, writeState } from '../../worker-client/src/state.js';

/** The client's memory of a session file (state.ts): never trusted when corrupt or someone else's. */
let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wc-state-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const token = (claims: Record<string, unknown>) => `e30.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.sig`;
const conv = { organizationId: 'o', agentId: 'a', conversationId: 'c' };

describe('worker-client state', () => {
  it('names a conversation at a gateway by the token claims, and nothing for an unreadable token', () => {
    const url = 'https://gw.example/worker/transcript/snapshot';
    expect(scopeOf(url, token(conv))).toMatch(/^[0-9a-f]{64}$/);
    expect(scopeOf(url, token(conv))).toBe(scopeOf(url, token({ ...conv, runId: 7, iat: 1 })));
    expect(scopeOf(url, token({ ...conv, conversationId: 'd' }))).not.toBe(scopeOf(url, token(conv)));
    expect(scopeOf('https://other.example/worker/transcript/snapshot', token(conv))).not.toBe(scopeOf(url, token(conv)));
    for (const bad of ['not-a-jwt', 'a.%%%.c', token({ organizationId: 'o' }), token({ ...conv, agentId: 5 })]) expect(scopeOf(url, bad)).toBeUndefined();
  });

  it('reads back what it wrote, atomically, and ignores state of another scope, a corrupt file or bad fields', async () => {
    const file = join(dir, 'session.jsonl');
    expect(await writeState(file, { scope: 's1', generation: 3, runId: 9, bytes: 10, sha256: 'a'.repeat(64) })).toBe(true);
    expect(await readState(file, 's1')).toEqual({ scope: 's1', generation: 3, runId: 9, bytes: 10, sha256: 'a'.repeat(64) });
    expect(await readState(file, 's2')).toBeUndefined();
    expect(await readState(file, undefined)).toBeUndefined();
    expect((await readdir(dir)).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    for (const corrupt of ['', '{', 'null', '[]', JSON.stringify({ v: 1, scope: 's1', generation: -1 }), JSON.stringify({ v: 2, scope: 's1', generation: 1 })]) {
      await writeFile(statePath(file), corrupt);
      expect(await readState(file, 's1'), corrupt).toBeUndefined();
    }
    await writeFile(statePath(file), JSON.stringify({ v: 1, scope: 's1', generation: 2, sha256: 'nothex', runId: 1.5 }));
    expect(await readState(file, 's1')).toEqual({ scope: 's1', generation: 2, runId: undefined, bytes: undefined, sha256: undefined });
  });

  it('never creates a missing directory and never throws when it cannot save', async () => {
    expect(await writeState(join(dir, 'missing', 'session.jsonl'), { scope: 's', generation: 0 })).toBe(false);
    expect(await readdir(dir)).not.toContain('missing');
  });

  it('parses only plain non-negative integers as a generation', () => {
    expect(parseGeneration('0')).toBe(0);
    expect(parseGeneration(' 42 ')).toBe(42);
    for (const bad of [null, '', '-1', '1.5', '1e3', '0x1', 'abc', '99999999999999999', '1, 2']) expect(parseGeneration(bad), String(bad)).toBeUndefined();
  });

  it('keeps the state file private to the user (mode 0600)', async () => {
    const file = join(dir, 'private.jsonl');
    await writeState(file, { scope: 's', generation: 1 });
    const { stat } = await import('node:fs/promises');
    expect((await stat(statePath(file))).mode & 0o777).toBe(0o600);
    expect(JSON.parse(await readFile(statePath(file), 'utf8'))).toMatchObject({ v: 1, generation: 1 });
  });
});
