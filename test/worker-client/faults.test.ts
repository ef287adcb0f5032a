/**
 * The client behind a fault-injecting proxy in front of the real local service: it recovers where
 * a retry can help, gives up within its deadline where it cannot, and a failed hydrate never
 * changes, truncates or litters the directory of the existing session file.
 *
 * No assertion depends on the machine's speed. Attempt counts are exact where no timer can fire
 * during a healthy attempt (FAST: 20 s per attempt); where a test needs a short timeout (stalls), it
 * asserts what holds at any speed: the injected faults come first and end with the expected error
 * code, every later request is a clean pass, and the count of attempts equals the requests the proxy
 * saw. Durations are only checked against bounds that cannot be reached by a correct client on a
 * slow machine but are by the bug (e.g. "less than the per-attempt timeout it must not wait for").
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
  ])('after %s', async (_label, fault) => {
    const text = transcript(200);
    const c = await seeded(text);
    proxy.enqueue(fault, fault);
    const sessionFile = join(dir, 'session.jsonl');
    await writeFile(sessionFile, 'old\n');
    const { events, logger } = collectEvents();
    // FAST's 20 s per-attempt timeout cannot fire on a healthy attempt: exactly fault, fault, pass.
    const r = await hydrateSnapshot({ sessionFile, gatewayUrl: proxy.url, workerToken: c.convToken, logger, ...FAST });
    expect(r).toMatchObject({ status: 'hydrated', attempts: 3, verified: true });
    expect(await readFile(sessionFile, 'utf8')).toBe(text);
    expect(proxy.requests.map((q) => q.fault)).toEqual([fault.kind, fault.kind, 'pass']);
    expect(events.filter((e) => e.event === 'retry')).toHaveLength(2);
    expect(await tempFilesIn(dir)).toEqual([]);
  });

  it('after a stall longer than the per-attempt timeout (twice)', async () => {
    const text = transcript(200);
    const c = await seeded(text);
    // The proxy holds each stalled request 5 s; the client must give up on it after its 1 s timeout.
    proxy.enqueue({ kind: 'stall' }, { kind: 'stall' });
    const sessionFile = join(dir, 'session.jsonl');
    await writeFile(sessionFile, 'old\n');
    const { events, logger } = collectEvents();
    const r = await hydrateSnapshot({ sessionFile, gatewayUrl: proxy.url, workerToken: c.convToken, logger, ...FAST, timeoutMs: 1_000 });
    expect(r).toMatchObject({ status: 'hydrated', verified: true });
    expect(await readFile(sessionFile, 'utf8')).toBe(text);
    // A short timeout may also cut a healthy attempt on a very slow machine: that costs one more clean
    // attempt, never a wrong result. What holds at any speed:
    const kinds = proxy.requests.map((q) => q.fault);
    expect(kinds.slice(0, 2)).toEqual(['stall', 'stall']);
    expect(kinds.slice(2).every((k) => k === 'pass')).toBe(true);
    expect(r.attempts).toBe(kinds.length);
    const retries = events.filter((e) => e.event === 'retry');
    expect(retries).toHaveLength(r.attempts - 1);
    // Both stalls ended by the client's own timeout (the proxy would only drop them after 5 s).
    expect(retries.slice(0, 2).map((e) => e['code'])).toEqual(['timeout', 'timeout']);
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
    // Each stall lasts 5 s (the proxy's cap), then the connection drops and would be retried; the abort
    // is sent as soon as the proxy holds the request. Only the abort can end the call as `aborted`.
    plan = { kind: 'stall' };
    const sessionFile = join(dir, 'session.jsonl');
    await writeFile(sessionFile, 'keep\n');
    const ac = new AbortController();
    const stalled = setInterval(() => proxy.requests.length > 0 && ac.abort(), 10);
    const err = await hydrateFromSnapshot({ sessionFile, gatewayUrl: proxy.url, workerToken: c.convToken, signal: ac.signal, ...FAST, timeoutMs: 60_000, deadlineMs: 120_000 })
      .catch((e: unknown) => e)
      .finally(() => clearInterval(stalled));
    // Only the abort can end this call before the test times out (timeout 60 s, deadline 120 s).
    expect(err).toMatchObject({ code: 'aborted', attempts: 1 });
    expect(proxy.requests).toHaveLength(1);
    expect(await readFile(sessionFile, 'utf8')).toBe('keep\n');
    expect(await tempFilesIn(dir)).toEqual([]);
  });
});

describe('hydrate gives up within its deadline', () => {
  it('stops a stalled attempt at the deadline even when the per-attempt timeout is longer', async () => {
    const c = await seeded('remote\n');
    plan = { kind: 'stall' };
    const t0 = performance.now();
    const err = await hydrateFromSnapshot({ sessionFile: join(dir, 's.jsonl'), gatewayUrl: proxy.url, workerToken: c.convToken, ...FAST, timeoutMs: 20_000, deadlineMs: 600 }).catch((e: unknown) => e);
    const elapsed = performance.now() - t0;
    // Ended by the deadline in the first attempt: a client waiting for its per-attempt timeout would
    // see the proxy drop the stall after 5 s (a network error) and retry.
    expect(err).toMatchObject({ code: 'deadline', attempts: 1 });
    expect(proxy.requests).toHaveLength(1);
    // Bounds that hold at any speed: never before the deadline, and never as late as the 5 s stall cap.
    expect(elapsed).toBeGreaterThanOrEqual(590);
    expect(elapsed).toBeLessThan(5_000);
  });

  it('does not sleep through a Retry-After that would end past the deadline', async () => {
    const c = await seeded('remote\n');
    plan = { kind: 'status', status: 503, headers: { 'retry-after': '3600' } };
    const t0 = performance.now();
    const err = await hydrateFromSnapshot({ sessionFile: join(dir, 's.jsonl'), gatewayUrl: proxy.url, workerToken: c.convToken, ...FAST, deadlineMs: 20_000 }).catch((e: unknown) => e);
    // Gave up right away: sleeping through the hour-long Retry-After would outlive the test (30 s), and
    // waiting until the deadline would take the whole 20 s.
    expect(err).toMatchObject({ code: 'deadline', status: 503, attempts: 1 });
    expect(proxy.requests).toHaveLength(1);
    expect(performance.now() - t0).toBeLessThan(20_000);
  });

  it('keeps retrying timeouts until the deadline, then reports deadline', async () => {
    const c = await seeded('remote\n');
    plan = { kind: 'stall' };
    const { events, logger } = collectEvents();
    const err = await hydrateFromSnapshot({ sessionFile: join(dir, 's.jsonl'), gatewayUrl: proxy.url, workerToken: c.convToken, logger, ...FAST, timeoutMs: 150, retries: 100, deadlineMs: 1_500 }).catch((e: unknown) => e);
    // `deadline`, not `timeout`: the retry budget (101 attempts) was not what stopped it.
    expect(err).toMatchObject({ code: 'deadline' });
    const attempts = (err as { attempts: number }).attempts;
    expect(proxy.requests).toHaveLength(attempts);
    // Each attempt lasts at least its 150 ms timeout, so at most 1500 / 150 + 1 fit in the deadline,
    // however fast the machine; and the timeouts were retried.
    expect(attempts).toBeLessThanOrEqual(11);
    expect(events.filter((e) => e.event === 'retry' && e['code'] === 'timeout').length).toBeGreaterThanOrEqual(1);
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
    const r = await writeSnapshot({ sessionFile, gatewayUrl: proxy.url, workerToken: await c.runToken(3), terminalStatus: 'completed', runId: 3, ...FAST, timeoutMs: 200, deadlineMs: 700 });
    // `deadline`, not `timeout`: 5 attempts × 200 ms would outlast the 700 ms deadline, so a client
    // ignoring its deadline would report the last timeout instead. At most 700 / 200 + 1 attempts fit.
    expect(r).toMatchObject({ status: 'failed', reason: 'deadline' });
    expect(proxy.requests.length).toBeLessThanOrEqual(4);
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
