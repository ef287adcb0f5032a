/**
 * Storage restarted in the middle of a load run (I2): both emulators stop (open connections dropped)
 * and come back 1.5 s later on the same ports with their on-disk data. Requests during the outage must
 * be answered 503 + Retry-After (never 500, never a hang), and every write acknowledged before, during
 * or after the outage must still be served / stored afterwards.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { startLocalService } from '../../local/service.js';
import { failed, runLoad, summary } from '../../scripts/load.js';

describe('storage restart mid-load', () => {
  it('keeps every acknowledged write and answers the outage with 503 + Retry-After only', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ts-restart-'));
    const svc = await startLocalService({ dataDir: dir });
    try {
      let restarted = false;
      const r = await runLoad({
        service: svc,
        seconds: 8,
        workers: 4,
        seed: 11,
        midway: {
          afterMs: 2500,
          run: async (s) => {
            await s.emulators!.restart({ downMs: 1500 });
            restarted = true;
          },
        },
      });
      console.log(summary(r).join('\n'));
      expect(restarted).toBe(true);
      // Nothing acknowledged was lost, torn, resurrected or read across conversations.
      expect(r.lost + r.torn + r.cross + r.resurrected + r.nonCompleted).toBe(0);
      // The outage was seen, and every failed request was a proper 503 with Retry-After.
      expect(r.unavailable).toBeGreaterThan(0);
      expect(r.errors).toBe(r.unavailable);
      expect(Object.keys(r.statuses).filter((k) => /\b500\b|network/.test(k))).toEqual([]);
      expect(r.acknowledgedWrites).toBeGreaterThan(50);
      expect(failed(r)).toBe(r.errors > 0);
    } finally {
      await svc.stop();
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
