import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { LocalService } from '../../local/service.js';
import { clearSnapshots, hydrateSnapshot, writeSnapshot } from '../../worker-client/src/index.js';
import { statePath } from '../../worker-client/src/state.js';
import { conversation, useServiceAndTempDir } from './support.js';

/**
 * I4 without clocks: the worker-client remembers the reset generation of its hydrate and echoes it on
 * its write, so a reset in between fences the write, and a run after the reset publishes, whatever the
 * token issuer's clock says (±30 s here, far outside the verifier's 5 s tolerance for `iat` in the
 * future — a fast issuer is simulated by an `iat` just inside it).
 */
let svc: LocalService;
let dir: string;
useServiceAndTempDir(
  (s) => (svc = s),
  (d) => (dir = d),
);

const now = () => Math.floor(Date.now() / 1000);

async function write(c: Awaited<ReturnType<typeof conversation>>, file: string, runId: number, issuedAt?: number) {
  return writeSnapshot({ sessionFile: file, gatewayUrl: svc.url, workerToken: await c.runToken(runId, issuedAt), runId, terminalStatus: 'completed' });
}

describe('reset generation (worker-client)', () => {
  it('a run that hydrated before a reset is fenced even when its token is issued after the reset (issuer fast)', async () => {
    const c = await conversation(svc);
    const file = join(dir, `fast-${c.conv}.jsonl`);
    await writeFile(file, 'old history\n');
    expect(await write(c, file, 1)).toMatchObject({ status: 'written' });
    expect(await hydrateSnapshot({ sessionFile: file, gatewayUrl: svc.url, workerToken: c.convToken })).toMatchObject({ generation: 0 });

    expect(await clearSnapshots({ gatewayUrl: svc.url, workerToken: c.convToken })).toMatchObject({ status: 'cleared' });
    await writeFile(file, 'old history\nmore of the old run\n');
    // The token says the run started 4 s after the clear; the generation says it started before.
    expect(await write(c, file, 2, now() + 4)).toMatchObject({ status: 'skipped', reason: 'reset' });
    expect(await hydrateSnapshot({ sessionFile: join(dir, `fresh-${c.conv}.jsonl`), gatewayUrl: svc.url, workerToken: c.convToken })).toMatchObject({
      status: 'not_found',
      generation: 1,
    });
  });

  it('the first run after a reset publishes even when its token issuer is 30 s slow', async () => {
    const c = await conversation(svc);
    const file = join(dir, `slow-${c.conv}.jsonl`);
    await writeFile(file, 'before\n');
    expect(await write(c, file, 1)).toMatchObject({ status: 'written' });
    expect(await clearSnapshots({ gatewayUrl: svc.url, workerToken: c.convToken })).toMatchObject({ status: 'cleared' });
    expect(await hydrateSnapshot({ sessionFile: file, gatewayUrl: svc.url, workerToken: c.convToken })).toMatchObject({ status: 'not_found', generation: 1 });
    await writeFile(file, 'a new conversation\n');
    // iat 30 s before the clear: the legacy rule would fence it; the echoed generation places it after.
    expect(await write(c, file, 2, now() - 30)).toMatchObject({ status: 'written' });
    const out = join(dir, `out-${c.conv}.jsonl`);
    expect(await hydrateSnapshot({ sessionFile: out, gatewayUrl: svc.url, workerToken: c.convToken })).toMatchObject({ status: 'hydrated', runId: 2, generation: 1 });
    expect(await readFile(out, 'utf8')).toBe('a new conversation\n');
  });

  it('remembers the generation next to the session file, and ignores state saved for another conversation', async () => {
    const a = await conversation(svc);
    const b = await conversation(svc);
    const file = join(dir, `shared-${a.conv}.jsonl`);
    await writeFile(file, 'a\n');
    expect(await write(a, file, 1)).toMatchObject({ status: 'written' });
    await clearSnapshots({ gatewayUrl: svc.url, workerToken: a.convToken });
    await clearSnapshots({ gatewayUrl: svc.url, workerToken: a.convToken });
    await hydrateSnapshot({ sessionFile: file, gatewayUrl: svc.url, workerToken: a.convToken });
    expect(JSON.parse(await readFile(statePath(file), 'utf8'))).toMatchObject({ generation: 2 });
    // Conversation b was never reset (generation 0): a's generation 2 must not be echoed for it.
    expect(await write(b, file, 1, now() - 30)).toMatchObject({ status: 'written' });
  });

  it('a 404 after a reset leaves the old file in place; writing that old history is still fenced, a rewritten file is written', async () => {
    const c = await conversation(svc);
    const file = join(dir, `stale-${c.conv}.jsonl`);
    await writeFile(file, 'old history\n');
    expect(await write(c, file, 1)).toMatchObject({ status: 'written' });
    expect(await hydrateSnapshot({ sessionFile: file, gatewayUrl: svc.url, workerToken: c.convToken })).toMatchObject({ generation: 0 });
    await clearSnapshots({ gatewayUrl: svc.url, workerToken: c.convToken });
    // The next run's hydrate: nothing stored (generation 1), the local file is left as it was (drop-in).
    expect(await hydrateSnapshot({ sessionFile: file, gatewayUrl: svc.url, workerToken: c.convToken })).toMatchObject({ status: 'not_found', generation: 1 });
    expect(await readFile(file, 'utf8')).toBe('old history\n');
    await writeFile(file, 'old history\nappended by a run that never saw the reset\n');
    expect(await write(c, file, 2)).toMatchObject({ status: 'skipped', reason: 'reset' });
    // A worker that starts over after the reset writes new history.
    await writeFile(file, 'a new beginning\n');
    expect(await write(c, file, 3)).toMatchObject({ status: 'written' });
    const out = join(dir, `stale-out-${c.conv}.jsonl`);
    await hydrateSnapshot({ sessionFile: out, gatewayUrl: svc.url, workerToken: c.convToken });
    expect(await readFile(out, 'utf8')).toBe('a new beginning\n');
  });
});
