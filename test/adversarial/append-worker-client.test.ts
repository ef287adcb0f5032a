/**
 * Adversarial review of issue 12, worker-client side: tampered state files, a session file that
 * changes while an append is in flight, and misbehaving proxies answering delta hydrates.
 */
import { createHash } from 'node:crypto';
import { readFile, writeFile, appendFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { LocalService } from '../../local/service.js';
import { hydrateSnapshot, writeSnapshot } from '../../worker-client/src/index.js';
import { statePath } from '../../worker-client/src/state.js';
import { conversation, FAST, useServiceAndTempDir } from '../worker-client/support.js';

let svc: LocalService;
let dir: string;
useServiceAndTempDir(
  (s) => (svc = s),
  (d) => (dir = d),
);

type Conv = Awaited<ReturnType<typeof conversation>>;
const sha = (s: string | Buffer) => createHash('sha256').update(s).digest('hex');
const url = () => `${svc.url}/worker/transcript/snapshot`;
const write = async (c: Conv, file: string, runId: number, extra: Record<string, unknown> = {}) =>
  writeSnapshot({ sessionFile: file, gatewayUrl: svc.url, workerToken: await c.runToken(runId), runId, terminalStatus: 'completed', ...FAST, ...extra });
const hydrate = (c: Conv, file: string, extra: Record<string, unknown> = {}) =>
  hydrateSnapshot({ sessionFile: file, gatewayUrl: svc.url, workerToken: c.convToken, ...FAST, ...extra });

async function served(c: Conv): Promise<string> {
  const res = await fetch(url(), { headers: { authorization: `Bearer ${c.convToken}` } });
  expect(res.status).toBe(200);
  return Buffer.from(await res.arrayBuffer()).toString('utf8');
}

const L1 = '{"role":"user","text":"héllo"}\n';
const L2 = '{"role":"assistant","text":"🚀"}\n';
const L3 = '{"role":"user","text":"third"}\r\n';

describe('worker-client appends against tampered state', () => {
  it('baseline: a second write of a grown file is an append; the store is byte-exact', async () => {
    const c = await conversation(svc);
    const file = join(dir, `a-${c.conv}.jsonl`);
    expect(await hydrate(c, file)).toMatchObject({ status: 'not_found' }); // learns the generation: state file
    await writeFile(file, L1);
    expect(await write(c, file, 1)).toMatchObject({ status: 'written' });
    await appendFile(file, L2);
    expect(await write(c, file, 2)).toMatchObject({ status: 'written', transport: 'append' });
    expect(await served(c)).toBe(L1 + L2);
  });

  for (const [name, tamper] of [
    ['bytes larger than the file', (st: Record<string, unknown>) => ({ ...st, bytes: 10_000 })],
    ['sha256 of another file', (st: Record<string, unknown>) => ({ ...st, sha256: sha('something else\n') })],
    ['bytes fractional', (st: Record<string, unknown>) => ({ ...st, bytes: 3.5 })],
    ['runId of a run that does not exist', (st: Record<string, unknown>) => ({ ...st, runId: 999 })],
    ['runId as a string', (st: Record<string, unknown>) => ({ ...st, runId: '1' })],
  ] as const) {
    it(`state ${name}: the write still lands and the store is byte-exact`, async () => {
      const c = await conversation(svc);
      const file = join(dir, `t-${c.conv}.jsonl`);
      expect(await hydrate(c, file)).toMatchObject({ status: 'not_found' });
      await writeFile(file, L1);
      expect(await write(c, file, 1)).toMatchObject({ status: 'written' });
      const st = JSON.parse(await readFile(statePath(file), 'utf8')) as Record<string, unknown>;
      await writeFile(statePath(file), JSON.stringify(tamper(st)));
      await appendFile(file, L2);
      expect(await write(c, file, 2)).toMatchObject({ status: 'written' });
      expect(await served(c)).toBe(L1 + L2);
    });
  }

  it('state naming run 1 whose stored bytes differ from the file prefix (another pod rewrote history): 412 → whole file, byte-exact', async () => {
    const c = await conversation(svc);
    const file = join(dir, `h-${c.conv}.jsonl`);
    expect(await hydrate(c, file)).toMatchObject({ status: 'not_found' }); // learns the generation: state file
    await writeFile(file, L1);
    expect(await write(c, file, 1)).toMatchObject({ status: 'written' });
    // the state claims the file's first bytes are a run that holds something else
    const other = join(dir, `h2-${c.conv}.jsonl`);
    await writeFile(other, 'X'.repeat(Buffer.byteLength(L1)));
    expect(await write(c, other, 2)).toMatchObject({ status: 'written' });
    const st = JSON.parse(await readFile(statePath(file), 'utf8')) as Record<string, unknown>;
    await writeFile(statePath(file), JSON.stringify({ ...st, runId: 2 }));
    await appendFile(file, L2);
    expect(await write(c, file, 3)).toMatchObject({ status: 'written' });
    expect(await served(c)).toBe(L1 + L2);
  });

  it('the session file is rewritten while the append is in flight: what is stored is one consistent file, and the next write stores the new file exactly', async () => {
    const c = await conversation(svc);
    const file = join(dir, `r-${c.conv}.jsonl`);
    expect(await hydrate(c, file)).toMatchObject({ status: 'not_found' }); // learns the generation: state file
    await writeFile(file, L1);
    expect(await write(c, file, 1)).toMatchObject({ status: 'written' });
    await appendFile(file, L2);
    const rewritten = 'Z'.repeat(Buffer.byteLength(L1)) + L2 + L3;
    const racing: typeof fetch = async (input, init) => {
      if (init?.method === 'POST') await writeFile(file, rewritten);
      return fetch(input, init);
    };
    const r = await write(c, file, 2, { fetch: racing });
    expect(r).toMatchObject({ status: 'written' });
    const stored = await served(c);
    expect([L1 + L2, rewritten]).toContain(stored);
    expect(await write(c, file, 3)).toMatchObject({ status: 'written' });
    expect(await served(c)).toBe(rewritten);
  });
});

describe('worker-client delta hydrate against misbehaving proxies', () => {
  async function setup(): Promise<{ c: Conv; file: string; whole: string }> {
    const c = await conversation(svc);
    const file = join(dir, `d-${c.conv}.jsonl`);
    expect(await hydrate(c, file)).toMatchObject({ status: 'not_found' }); // learns the generation: state file
    await writeFile(file, L1);
    expect(await write(c, file, 1)).toMatchObject({ status: 'written' });
    // another pod appends run 2
    const other = join(dir, `d2-${c.conv}.jsonl`);
    await writeFile(other, L1 + L2);
    expect(await write(c, other, 2)).toMatchObject({ status: 'written' });
    return { c, file, whole: L1 + L2 };
  }

  it('a genuine 226: the file becomes base + tail', async () => {
    const { c, file, whole } = await setup();
    const r = await hydrate(c, file);
    expect(r).toMatchObject({ status: 'hydrated', delta: { baseBytes: Buffer.byteLength(L1), appendedBytes: Buffer.byteLength(L2) } });
    expect(await readFile(file, 'utf8')).toBe(whole);
  });

  const forge = (body: string | Buffer, headers: (real: Headers) => Record<string, string>): typeof fetch => async (input, init) => {
    const h = new Headers(init?.headers);
    const real = await fetch(input, init);
    if (!h.has('a-im') || real.status !== 226) return real;
    const forged = headers(real.headers);
    await real.arrayBuffer();
    return new Response(body, { status: 226, headers: forged });
  };
  const realHeaders = (real: Headers) => Object.fromEntries([...real.entries()].filter(([k]) => k !== 'content-length' && k !== 'content-encoding'));

  for (const [name, f] of [
    ['an unrelated body of the right length', forge('Q'.repeat(Buffer.byteLength(L2)), realHeaders)],
    ['a longer body', forge(L2 + 'extra\n', realHeaders)],
    ['a shorter body', forge(L2.slice(0, 5), realHeaders)],
    ['no x-snapshot-bytes', forge(L2, (r) => { const h = realHeaders(r); delete h['x-snapshot-bytes']; return h; })],
    ['a Delta-Base of another snapshot', forge(L2, (r) => ({ ...realHeaders(r), 'delta-base': `"${sha('x')}"` }))],
    ['no IM header', forge(L2, (r) => { const h = realHeaders(r); delete h['im']; return h; })],
    ['an x-snapshot-sha256 that differs from the ETag', forge(L2, (r) => ({ ...realHeaders(r), 'x-snapshot-sha256': sha('other') }))],
    ['a gzip body labelled identity', forge(Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]), realHeaders)],
  ] as const) {
    it(`a 226 with ${name} is not used; the file ends byte-exact (plain GET)`, async () => {
      const { c, file, whole } = await setup();
      const r = await hydrate(c, file, { fetch: f });
      expect(r).toMatchObject({ status: 'hydrated' });
      expect(await readFile(file, 'utf8')).toBe(whole);
    });
  }
});
