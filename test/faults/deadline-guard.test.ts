/**
 * The per-request guard (functions/lib/http.ts): whatever the route awaits, the caller gets an answer
 * before API Gateway's 30 s integration timeout — 503 + Retry-After at the deadline, never a hang.
 */
import type { Logger } from '@aws-lambda-powertools/logger';
import { describe, expect, it } from 'vitest';
import { ERRORS, SNAPSHOT_PATH, errorBody } from '../../functions/lib/contract.js';
import { httpHandler } from '../../functions/lib/http.js';
import { apiEvent, lambdaContext } from '../helpers/events.js';

const silent = { debug() {}, info() {}, warn() {}, error() {} } as unknown as Logger;
const event = apiEvent('GET', SNAPSHOT_PATH);

async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const t0 = performance.now();
  const value = await fn();
  return { value, ms: performance.now() - t0 };
}

describe('request deadline guard', () => {
  it('answers 503 + Retry-After shortly after the deadline when the work honours the abort signal', async () => {
    const handler = httpHandler('GET', silent, (_e, ctx) => new Promise((_, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason))), { deadlineMs: 300 });
    const r = await timed(() => handler(event));
    expect(r.value.statusCode).toBe(503);
    expect(r.value.headers['retry-after']).toBe('1');
    expect(JSON.parse(r.value.body as string)).toEqual(errorBody(ERRORS.unavailable));
    expect(r.ms).toBeGreaterThanOrEqual(290);
    expect(r.ms).toBeLessThan(1000);
  });

  it('answers 503 shortly after the deadline even when the work ignores the abort signal', async () => {
    let release!: () => void;
    const stuck = new Promise<never>((_, reject) => {
      release = () => reject(new Error('finally gave up'));
    });
    const handler = httpHandler('GET', silent, () => stuck, { deadlineMs: 300 });
    const r = await timed(() => Promise.race([handler(event), new Promise<'hung'>((res) => setTimeout(() => res('hung'), 3000))]));
    release(); // the abandoned work settles later; that must not crash the process (unhandled rejection)
    expect(r.value).not.toBe('hung');
    if (r.value === 'hung') return;
    expect(r.value.statusCode).toBe(503);
    expect(r.value.headers['retry-after']).toBe('1');
    expect(r.ms).toBeLessThan(1000);
  });

  it('never lets the storage budget run into the last second of the Lambda, whatever the configured deadline', async () => {
    const handler = httpHandler('GET', silent, (_e, ctx) => new Promise((_, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason))), { deadlineMs: 25_000 });
    const r = await timed(() => handler(event, lambdaContext(1600)));
    expect(r.value.statusCode).toBe(503);
    expect(r.ms).toBeGreaterThanOrEqual(590);
    expect(r.ms).toBeLessThan(1200);
  });

  it('passes a result that arrives before the deadline through untouched', async () => {
    const handler = httpHandler('GET', silent, async () => ({ statusCode: 200, headers: {}, body: 'ok' }), { deadlineMs: 300 });
    expect((await handler(event)).statusCode).toBe(200);
  });
});
