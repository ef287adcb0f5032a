/**
 * The local service's retention timer (local/service.ts `retentionTimer`): a pass every interval, never two
 * at once, on demand too, stopped (and waited for) on stop, and never keeping the process alive. The store
 * is a fake whose passes end when the test says so; time is vitest's fake clock.
 */
import { Logger } from '@aws-lambda-powertools/logger';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { RetentionResult } from '../../functions/lib/store/index.js';
import { retentionTimer } from '../../local/service.js';

const RESULT: RetentionResult = { conversations: 0, runs: 0, objects: 0, bytes: 0, expired: 0, failed: 0, complete: true };
const logger = new Logger({ logLevel: 'SILENT' });

/** A store whose passes each wait for `finish()`; counts passes and the most ever running at once. */
function fakeStore() {
  const pending: (() => void)[] = [];
  const stats = { started: 0, running: 0, maxRunning: 0 };
  return {
    stats,
    finish: () => pending.shift()?.(),
    runScheduledRetention: () => {
      stats.started += 1;
      stats.running += 1;
      stats.maxRunning = Math.max(stats.maxRunning, stats.running);
      return new Promise<RetentionResult>((resolve) =>
        pending.push(() => {
          stats.running -= 1;
          resolve(RESULT);
        }),
      );
    },
  };
}

afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
});

describe('retention timer (npm start)', () => {
  it('runs a pass every interval, and skips a tick while a pass is still running', async () => {
    vi.useFakeTimers();
    const store = fakeStore();
    const timer = retentionTimer(store, 60_000, logger);
    await vi.advanceTimersByTimeAsync(59_999);
    expect(store.stats.started).toBe(0);
    await vi.advanceTimersByTimeAsync(1);
    expect(store.stats.started).toBe(1);
    await vi.advanceTimersByTimeAsync(3 * 60_000); // three ticks during the pass: skipped
    expect(store.stats.started).toBe(1);
    store.finish();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(store.stats.started).toBe(2);
    expect(store.stats.maxRunning).toBe(1);
    store.finish();
    await timer.stop();
  });

  it('runs on demand without overlapping: a call during a pass waits for it, then runs its own', async () => {
    const store = fakeStore();
    const timer = retentionTimer(store, 3_600_000, logger);
    const first = timer.runNow();
    const second = timer.runNow();
    const third = timer.runNow();
    await new Promise((r) => setImmediate(r));
    expect(store.stats.started).toBe(1);
    for (let i = 0; i < 3; i++) {
      store.finish();
      await new Promise((r) => setImmediate(r));
    }
    await expect(Promise.all([first, second, third])).resolves.toEqual([RESULT, RESULT, RESULT]);
    expect(store.stats).toMatchObject({ started: 3, maxRunning: 1 });
    await timer.stop();
  });

  it('stop() clears the timer and waits for the pass in progress; later calls are refused', async () => {
    vi.useFakeTimers();
    const store = fakeStore();
    const timer = retentionTimer(store, 60_000, logger);
    await vi.advanceTimersByTimeAsync(60_000);
    let stopped = false;
    const stopping = timer.stop().then(() => (stopped = true));
    await vi.advanceTimersByTimeAsync(0);
    expect(stopped).toBe(false);
    store.finish();
    await stopping;
    await vi.advanceTimersByTimeAsync(10 * 60_000);
    expect(store.stats.started).toBe(1);
    await expect(timer.runNow()).rejects.toThrow(/stopped/);
  });

  it('never keeps the process alive (unref’d timer)', async () => {
    const spy = vi.spyOn(globalThis, 'setInterval');
    const timer = retentionTimer(fakeStore(), 3_600_000, logger);
    const handle = spy.mock.results[0]!.value as NodeJS.Timeout;
    expect(handle.hasRef()).toBe(false);
    await timer.stop();
  });

  it('logs a failed pass and keeps ticking', async () => {
    vi.useFakeTimers();
    const errors: unknown[] = [];
    const log = new Logger({ logLevel: 'SILENT' });
    vi.spyOn(log, 'error').mockImplementation((...args: unknown[]) => void errors.push(args));
    let calls = 0;
    const timer = retentionTimer({ runScheduledRetention: () => (++calls === 1 ? Promise.reject(new Error('storage down')) : Promise.resolve(RESULT)) }, 60_000, log);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(errors).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(calls).toBe(2);
    await timer.stop();
  });
});
