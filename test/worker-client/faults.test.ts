/**
 * The client behind a fault-injecting proxy in front of the real local service: it recovers where
 * a retry can help, gives up within its deadline where it cannot, and a failed hydrate never
 * changes, truncates or litters the directory of the existing session file.
 */
import { randomBytes } from 'node:crypto';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { LocalService } from '../../local/service.js';
import { clearSnapshots, hydrateFromSnapshot, hydrateSnapshot, writeSnapshot } from '../../worker-client/src/index.js';
import { type Fault, type FaultProxy, startFaultProxy } from '../helpers/fault-proxy.js';
import { collectEvents, conversation, FAST, tempFilesIn, useServiceAndTempDir } from './support.js';

let svc: LocalService;
let proxy: FaultProxy;
let dir: string;
let plan: Fault | undefined;
useServiceAndTempDir(
  (s) => (svc = s),
  (d) => (dir = d),
);

beforeEach(async () => {
  plan = undefined;
  proxy = await startFaultProxy({ upstream: svc.url, maxStallMs: 5_000, plan: () => plan });
});
afterEach(async () => {
  await proxy.close();
});

/** A conversation with one completed snapshot (written directly, not through the proxy). */
async function seeded(text: string) {
  const c = await conversation(svc);
  const src = join(dir, 'seed.jsonl');
  await writeFile(src, text);
  const r = await writeSnapshot({ sessionFile: src, gatewayUrl: svc.url, workerToken: await c.runToken(1), terminalStatus: 'completed', runId: 1 });
  expect(r.status).toBe('written');
  return c;
}

const transcript = (lines: number) =>
  Array.from({ length: lines }, (_, i) => JSON.stringify({ type: 'message', i, text: `línea ${i} ${randomBytes(8).toString('hex')} 🚀` })).join('\n') + '\n';

describe('hydrate recovers from transient faults', () => {
  it.each<[string, Fault]>([
    ['a 503 with Retry-After: 0', { kind: 'status', status: 503, headers: { 'retry-after': '0' } }],
    ['a 429', { kind: 'status', status: 429 }],
    ['a 502 from a load balancer with an HTML body', { kind: 'status', status: 502, headers: { 'content-type': 'text/html' }, body: '<html>bad gateway</html>' }],
    ['a dropped connection', { kind: 'drop' }],
    ['a body cut halfway (content-length framing)', { kind: 'cut-body', at: 0.5, framing: 'content-length' }],
    ['a body cut halfway that looks like a clean end (close framing)', { kind: 'cut-body', at: 0.5, framing: 'close' }],
    ['a corrupted byte in the body', { kind: 'corrupt-body' }],
    ['a stall longer than the per-attempt timeout', { kind: 'stall' }],
  ])('after %s', async (_label, fault) => {
    const text = transcript(200);
    const c = await seeded(text);
    proxy.enqueue(fault, fault);
    const sessionFile = join(dir, 'session.jsonl');
    await writeFile(sessionFile, 'old\n');
    const { events, logger } = collectEvents();
    const r = await hydrateSnapshot({ sessionFile, gatewayUrl: proxy.url, workerToken: c.convToken, logger, ...FAST, timeoutMs: 300 });
    expect(r).toMatchObject({ status: 'hydrated', attempts: 3, verified: true });
    expect(await readFile(sessionFile, 'utf8')).toBe(text);
    expect(proxy.requests.map((q) => q.fault)).toEqual([fault.kind, fault.kind, 'pass']);
    expect(events.filter((e) => e.event === 'retry')).toHaveLength(2);
    expect(await tempFilesIn(dir)).toEqual([]);
  });

  it('streams a 3 MB snapshot through a cut and a retry', async () => {
    const text = transcript(45_000);
    expect(Buffer.byteLength(text)).toBeGreaterThan(3 * 1000 * 1000);
    const c = await seeded(text);
    proxy.enqueue({ kind: 'cut-body', at: 0.7 });
    const sessionFile = join(dir, 'session.jsonl');
    const r = await hydrateSnapshot({ sessionFile, gatewayUrl: proxy.url, workerToken: c.convToken, ...FAST });
    expect(r).toMatchObject({ status: 'hydrated', attempts: 2, bytes: Buffer.byteLength(text) });
    expect(await readFile(sessionFile, 'utf8')).toBe(text);
  });
});

describe('a hydrate that fails leaves the existing file exactly as it was', () => {
  it.each<[string, Fault]>([
    ['every attempt answered 503', { kind: 'status', status: 503 }],
    ['every connection dropped', { kind: 'drop' }],
    ['every body cut (content-length framing)', { kind: 'cut-body', at: 0.5 }],
    ['every body cut (close framing)', { kind: 'cut-body', at: 0.5, framing: 'close' }],
    ['every body corrupted', { kind: 'corrupt-body' }],
    ['every attempt stalled', { kind: 'stall' }],
  ])('when %s', async (_label, fault) => {
    const c = await seeded(transcript(300));
    plan = fault;
    const sessionFile = join(dir, 'session.jsonl');
    const original = transcript(50);
    await writeFile(sessionFile, original);
    const before = await stat(sessionFile);
    const err = await hydrateFromSnapshot({ sessionFile, gatewayUrl: proxy.url, workerToken: c.convToken, ...FAST, timeoutMs: 200, retries: 2 }).catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'TranscriptStoreError', attempts: 3 });
    expect(proxy.requests).toHaveLength(3);
    const after = await stat(sessionFile);
    expect(await readFile(sessionFile, 'utf8')).toBe(original);
    expect(after.ino).toBe(before.ino);
    expect(after.mtimeMs).toBe(before.mtimeMs);
    expect(await tempFilesIn(dir)).toEqual([]);
  });

  it('when the caller aborts during a stalled download', async () => {
    const c = await seeded('remote\n');
    plan = { kind: 'stall' };
    const sessionFile = join(dir, 'session.jsonl');
    await writeFile(sessionFile, 'keep\n');
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 100);
    const t0 = Date.now();
    const err = await hydrateFromSnapshot({ sessionFile, gatewayUrl: proxy.url, workerToken: c.convToken, signal: ac.signal }).catch((e: unknown) => e);
    expect(Date.now() - t0).toBeLessThan(2_000);
    expect(err).toMatchObject({ code: 'aborted', attempts: 1 });
    expect(await readFile(sessionFile, 'utf8')).toBe('keep\n');
    expect(await tempFilesIn(dir)).toEqual([]);
  });
});

describe('hydrate gives up within its deadline', () => {
  it('stops a stalled attempt at the deadline even when the per-attempt timeout is longer', async () => {
    const c = await seeded('remote\n');
    plan = { kind: 'stall' };
    const t0 = Date.now();
    const err = await hydrateFromSnapshot({ sessionFile: join(dir, 's.jsonl'), gatewayUrl: proxy.url, workerToken: c.convToken, ...FAST, timeoutMs: 10_000, deadlineMs: 600 }).catch((e: unknown) => e);
    const elapsed = Date.now() - t0;
    expect(err).toMatchObject({ code: 'deadline', attempts: 1 });
    expect(elapsed).toBeGreaterThanOrEqual(590);
    expect(elapsed).toBeLessThan(2_500); // the per-attempt timeout alone would be 10 s
  });

  it('does not sleep through a Retry-After that would end past the deadline', async () => {
    const c = await seeded('remote\n');
    plan = { kind: 'status', status: 503, headers: { 'retry-after': '30' } };
    const t0 = Date.now();
    const err = await hydrateFromSnapshot({ sessionFile: join(dir, 's.jsonl'), gatewayUrl: proxy.url, workerToken: c.convToken, ...FAST, deadlineMs: 2_000 }).catch((e: unknown) => e);
    expect(Date.now() - t0).toBeLessThan(1_500); // sleeping through Retry-After would take 30 s
    expect(err).toMatchObject({ code: 'deadline', status: 503, attempts: 1 });
  });

  it('keeps retrying timeouts until the deadline, then reports deadline', async () => {
    const c = await seeded('remote\n');
    plan = { kind: 'stall' };
    const t0 = Date.now();
    const err = await hydrateFromSnapshot({ sessionFile: join(dir, 's.jsonl'), gatewayUrl: proxy.url, workerToken: c.convToken, ...FAST, timeoutMs: 150, retries: 100, deadlineMs: 800 }).catch((e: unknown) => e);
    const elapsed = Date.now() - t0;
    expect(err).toMatchObject({ code: 'deadline' });
    expect((err as { attempts: number }).attempts).toBeGreaterThanOrEqual(3);
    expect(elapsed).toBeLessThan(2_500); // 101 attempts × 150 ms would take 15 s
  });
});

describe('writeSnapshot through faults', () => {
  it('counts a 409 after a lost response as written (the earlier attempt committed)', async () => {
    const c = await conversation(svc);
    const text = transcript(20);
    const sessionFile = join(dir, 's.jsonl');
    await writeFile(sessionFile, text);
    proxy.enqueue({ kind: 'drop-after-upstream' });
    const r = await writeSnapshot({ sessionFile, gatewayUrl: proxy.url, workerToken: await c.runToken(3), terminalStatus: 'completed', runId: 3, ...FAST });
    expect(r).toEqual({
      status: 'written',
      bytes: Buffer.byteLength(text),
      attempts: 2,
      afterRetry: true,
      transport: 'direct',
      encoding: 'gzip',
      wireBytes: expect.any(Number),
      parts: 0,
    });
    expect(proxy.requests.map((q) => [q.fault, q.upstreamStatus])).toEqual([
      ['drop-after-upstream', 200],
      ['pass', 409],
    ]);
    const out = join(dir, 'out.jsonl');
    expect(await hydrateFromSnapshot({ sessionFile: out, gatewayUrl: svc.url, workerToken: c.convToken })).toBe(true);
    expect(await readFile(out, 'utf8')).toBe(text);
  });

  it('retries a 503 that never reached the service and writes once', async () => {
    const c = await conversation(svc);
    const sessionFile = join(dir, 's.jsonl');
    await writeFile(sessionFile, 'x\n');
    proxy.enqueue({ kind: 'status', status: 503, headers: { 'retry-after': '0' } });
    const r = await writeSnapshot({ sessionFile, gatewayUrl: proxy.url, workerToken: await c.runToken(3), terminalStatus: 'completed', runId: 3, ...FAST });
    expect(r).toMatchObject({ status: 'written', attempts: 2, afterRetry: false, id: expect.any(Number) });
  });

  it('never throws and stays within the deadline when every attempt stalls', async () => {
    const c = await conversation(svc);
    const sessionFile = join(dir, 's.jsonl');
    await writeFile(sessionFile, 'x\n');
    plan = { kind: 'stall' };
    const t0 = Date.now();
    const r = await writeSnapshot({ sessionFile, gatewayUrl: proxy.url, workerToken: await c.runToken(3), terminalStatus: 'completed', runId: 3, ...FAST, timeoutMs: 200, deadlineMs: 700 });
    expect(Date.now() - t0).toBeLessThan(2_500);
    expect(r).toMatchObject({ status: 'failed', reason: 'deadline' });
  });

  it('reports failed/timeout after the retry budget when each attempt times out', async () => {
    const c = await conversation(svc);
    const sessionFile = join(dir, 's.jsonl');
    await writeFile(sessionFile, 'x\n');
    plan = { kind: 'stall' };
    const r = await writeSnapshot({ sessionFile, gatewayUrl: proxy.url, workerToken: await c.runToken(3), terminalStatus: 'completed', runId: 3, ...FAST, timeoutMs: 100, retries: 1 });
    expect(r).toMatchObject({ status: 'failed', reason: 'timeout', attempts: 2 });
  });
});

describe('clearSnapshots through faults', () => {
  it('retries a dropped connection and a lost response (DELETE is idempotent)', async () => {
    const c = await seeded('x\n');
    proxy.enqueue({ kind: 'drop' }, { kind: 'drop-after-upstream' });
    const r = await clearSnapshots({ gatewayUrl: proxy.url, workerToken: c.convToken, ...FAST });
    expect(r).toEqual({ status: 'cleared', deleted: 0, attempts: 3 });
    expect(await hydrateFromSnapshot({ sessionFile: join(dir, 'h.jsonl'), gatewayUrl: svc.url, workerToken: c.convToken })).toBe(false);
  });
});
