/**
 * The per-request guard (functions/lib/http.ts): whatever the route awaits, the caller gets an answer
 * before API Gateway's 30 s integration timeout — 503 + Retry-After at the deadline, never a hang.
 *
 * Deterministic: the guard's timers run on vitest's fake clock, so "not answered 1 ms before the
 * budget, answered at it" is checked exactly, whatever the machine's load.
 */
import type { Logger } from '@aws-lambda-powertools/logger';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ERRORS, SNAPSHOT_PATH, errorBody } from '../../functions/lib/contract.js';
import { httpHandler, type HttpResult } from '../../functions/lib/http.js';
import { apiEvent, lambdaContext } from '../helpers/events.js';

const silent = { debug() {}, info() {}, warn() {}, error() {} } as unknown as Logger;
const event = apiEvent('GET', SNAPSHOT_PATH);

/** Tracks whether a handler's promise has settled, without awaiting it. */
function track(p: Promise<HttpResult>): { readonly settled: boolean; readonly value: HttpResult | undefined; done: Promise<HttpResult> } {
  const state = { settled: false, value: undefined as HttpResult | undefined };
  const done = p.then((v) => {
    state.settled = true;
    state.value = v;
    return v;
  });
  return {
    get settled() {
      return state.settled;
    },
    get value() {
      return state.value;
    },
    done,
  };
}

/** Work that only ends when its abort signal fires (what storage calls do at the deadline). */
const honoursAbort = (_e: unknown, ctx: { signal: AbortSignal }) =>
  new Promise<never>((_, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason)));

describe('request deadline guard', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('answers 503 + Retry-After exactly at the deadline when the work honours the abort signal', async () => {
    const handler = httpHandler('GET', silent, honoursAbort, { deadlineMs: 300 });
    const r = track(handler(event));
    await vi.advanceTimersByTimeAsync(299);
    expect(r.settled).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(r.settled).toBe(true);
    const res = await r.done;
    expect(res.statusCode).toBe(503);
    expect(res.headers['retry-after']).toBe('1');
    expect(JSON.parse(res.body as string)).toEqual(errorBody(ERRORS.unavailable));
  });

  it('answers 503 at the hard stop (deadline + 250 ms) even when the work ignores the abort signal', async () => {
    let release!: () => void;
    const stuck = new Promise<never>((_, reject) => {
      release = () => reject(new Error('finally gave up'));
    });
    const handler = httpHandler('GET', silent, () => stuck, { deadlineMs: 300 });
    const r = track(handler(event));
    await vi.advanceTimersByTimeAsync(300 + 249);
    expect(r.settled).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(r.settled).toBe(true);
    release(); // the abandoned work settles later; that must not crash the process (unhandled rejection)
    const res = await r.done;
    expect(res.statusCode).toBe(503);
    expect(res.headers['retry-after']).toBe('1');
  });

  it('never lets the storage budget run into the last second of the Lambda, whatever the configured deadline', async () => {
    const handler = httpHandler('GET', silent, honoursAbort, { deadlineMs: 25_000 });
    // 1.6 s left → a 0.6 s budget, not 25 s.
    const r = track(handler(event, lambdaContext(1600)));
    await vi.advanceTimersByTimeAsync(599);
    expect(r.settled).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(r.settled).toBe(true);
    expect((await r.done).statusCode).toBe(503);
  });

  it('passes a result that arrives before the deadline through untouched', async () => {
    const handler = httpHandler('GET', silent, async () => ({ statusCode: 200, headers: {}, body: 'ok' }), { deadlineMs: 300 });
    expect((await handler(event)).statusCode).toBe(200);
  });
});
