import { execFileSync } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { LocalService } from '../../local/service.js';
import { clearSnapshots, hydrateSnapshot, writeSnapshot } from '../../worker-client/src/index.js';
import { statePath } from '../../worker-client/src/state.js';
import { conversation, FAST, useServiceAndTempDir } from '../worker-client/support.js';

/**
 * Adversarial: the worker-client's remembered reset generation (`.<session file>.transcript-store.json`)
 * when it is corrupt, from another conversation or gateway, stale, or cannot be saved.
 */
let svc: LocalService;
let dir: string;
useServiceAndTempDir(
  (s) => (svc = s),
  (d) => (dir = d),
);

type Conv = Awaited<ReturnType<typeof conversation>>;
const write = async (c: Conv, file: string, runId: number, issuedAt?: number) =>
  writeSnapshot({ sessionFile: file, gatewayUrl: svc.url, workerToken: await c.runToken(runId, issuedAt), runId, terminalStatus: 'completed', ...FAST });
const hydrate = (c: Conv, file: string) => hydrateSnapshot({ sessionFile: file, gatewayUrl: svc.url, workerToken: c.convToken, ...FAST });
const now = () => Math.floor(Date.now() / 1000);

describe('corrupt or foreign state files', () => {
  const corrupt: [string, string][] = [
    ['garbage', 'not json'],
    ['null', 'null'],
    ['array', '[1,2]'],
    ['negative generation', JSON.stringify({ v: 1, generation: -1 })],
    ['string generation', JSON.stringify({ v: 1, generation: '0' })],
    ['fractional generation', JSON.stringify({ v: 1, generation: 0.5 })],
    ['huge generation', JSON.stringify({ v: 1, generation: 1e300 })],
    ['future version', JSON.stringify({ v: 2, generation: 0 })],
    ['empty', ''],
  ];
  for (const [name, content] of corrupt) {
    it(`${name}: ignored; a fresh run after a reset still writes (legacy rule) and nothing crashes`, async () => {
      const c = await conversation(svc);
      const file = join(dir, `s-${c.conv}.jsonl`);
      await writeFile(file, 'old\n');
      expect(await write(c, file, 1, now() - 5)).toMatchObject({ status: 'written' });
      expect(await clearSnapshots({ gatewayUrl: svc.url, workerToken: c.convToken, ...FAST })).toMatchObject({ status: 'cleared' });
      await writeFile(statePath(file), content);
      await writeFile(file, 'new\n');
      expect(await write(c, file, 2, now() + 1)).toMatchObject({ status: 'written' });
    });
  }

  it('state with the right shape but another conversation\'s scope digest is not echoed', async () => {
    const a = await conversation(svc);
    const b = await conversation(svc);
    const file = join(dir, `shared-${a.conv}.jsonl`);
    await writeFile(file, 'a\n');
    await hydrate(a, file);
    const st = JSON.parse(await readFile(statePath(file), 'utf8')) as Record<string, unknown>;
    await writeFile(statePath(file), JSON.stringify({ ...st, generation: 7 }));
    // b has never been reset; an echoed 7 would be fenced (409) — it must not be sent.
    expect(await write(b, file, 1)).toMatchObject({ status: 'written' });
  });

  it('a stale remembered generation (reset since the hydrate, no new hydrate) fences the write: skipped/reset', async () => {
    const c = await conversation(svc);
    const file = join(dir, `stale-${c.conv}.jsonl`);
    await writeFile(file, 'old\n');
    await hydrate(c, file);
    await clearSnapshots({ gatewayUrl: svc.url, workerToken: c.convToken, ...FAST });
    await writeFile(file, 'old\nmore\n');
    expect(await write(c, file, 2, now() + 3)).toMatchObject({ status: 'skipped', reason: 'reset' });
    expect(await hydrate(c, join(dir, `fresh-${c.conv}.jsonl`))).toMatchObject({ status: 'not_found', generation: 1 });
  });
});

describe('a state file that cannot be replaced', () => {
  it('a hydrate after a reset whose state cannot be saved must not leave the old generation to fence the next run', async () => {
    // state.ts: "Any failure to read or write it only costs that protection (the service then falls back
    // to the token's iat); it never fails a hydrate or a write." Expected: the run that started after the
    // reset (its hydrate saw generation 1) is written. Before the fix: the hydrate cannot save generation 1
    // (directory not writable, simulated with chattr +i as root), the OLD state file (generation 0) stays,
    // the write echoes 0 and is fenced — the first run after the reset is dropped (skipped/reset).
    const c = await conversation(svc);
    const sub = join(dir, `ro-${c.conv}`);
    await (await import('node:fs/promises')).mkdir(sub);
    const file = join(sub, 'session.jsonl');
    await writeFile(file, 'old history\n');
    expect(await write(c, file, 1)).toMatchObject({ status: 'written' });
    expect(await hydrate(c, file)).toMatchObject({ generation: 0 });
    expect(await clearSnapshots({ gatewayUrl: svc.url, workerToken: c.convToken, ...FAST })).toMatchObject({ status: 'cleared' });
    execFileSync('chattr', ['+i', sub]);
    try {
      // The next run hydrates after the reset (404, generation 1) but the state file cannot be replaced.
      expect(await hydrate(c, file)).toMatchObject({ status: 'not_found', generation: 1 });
      // The new run overwrites the existing session file in place (allowed in an immutable directory).
      await writeFile(file, 'a new conversation after the reset\n');
      const result = await write(c, file, 2);
      expect(result).toMatchObject({ status: 'written' });
    } finally {
      execFileSync('chattr', ['-i', sub]);
    }
  });
});
