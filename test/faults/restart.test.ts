/**
 * Storage outages in the middle of a load run (I2, docs/DESIGN.md § Invariants):
 *
 * - both emulators restarted: they stop (open connections dropped) and come back 1.5 s later on the
 *   same ports with their on-disk data;
 * - DynamoDB alone down: a TCP fault proxy in front of DynamoDB resets every connection (S3 stays up)
 *   until the load has seen a given number of failed requests, then lets traffic through again.
 *
 * Requests during an outage must be answered 503 + Retry-After (never 500, never a hang), and every
 * write acknowledged before, during or after it must still be served / stored afterwards. Both runs are
 * bounded by operation counts: the outage starts after N completed requests, the load makes a fixed
 * number of requests, and nothing asserted depends on how fast the machine is.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { startEmulators } from '../../local/emulators.js';
import { startLocalService } from '../../local/service.js';
import { failed, runLoad, summary, type LoadResult } from '../../scripts/load.js';
import { dynamodbLocalEndpoint } from '../ddb-local/engine.js';
import { Api, freshScope } from '../helpers/service.js';
import { startTcpFaultProxy } from '../helpers/tcp-fault-proxy.js';

/** The acknowledged-data and 503-contract checks shared by both outages. */
function expectOutageHandled(r: LoadResult): void {
  // Nothing acknowledged was lost, torn, resurrected or read across conversations.
  expect(r.violations.filter((v) => !v.startsWith('error:'))).toEqual([]);
  expect(r.lost + r.torn + r.cross + r.resurrected + r.nonCompleted).toBe(0);
  // The outage was seen, and every failed request was a proper 503 with Retry-After.
  expect(r.unavailable).toBeGreaterThan(0);
  expect(r.errors).toBe(r.unavailable);
  expect(Object.keys(r.statuses).filter((k) => /\b500\b|network/.test(k))).toEqual([]);
  expect(failed(r)).toBe(true); // errors > 0, by the load's own definition
}

describe('storage outages mid-load', () => {
  it('both emulators restarted: keeps every acknowledged write and answers the outage with 503 + Retry-After only', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ts-restart-'));
    const svc = await startLocalService({ dataDir: dir });
    try {
      let restarted = false;
      const r = await runLoad({
        service: svc,
        ops: 500,
        workers: 4,
        seed: 11,
        midway: {
          afterOps: 200,
          run: async (s) => {
            await s.emulators!.restart({ downMs: 1500 });
            restarted = true;
          },
        },
      });
      console.log(summary(r).join('\n'));
      expect(restarted).toBe(true);
      expectOutageHandled(r);
      // Before the outage (the first 200 requests) every write was acknowledged (bar a rare reset_fenced).
      expect(r.acknowledgedWrites).toBeGreaterThan(80);
    } finally {
      await svc.stop();
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it('DynamoDB alone down (connections reset, S3 up): same guarantees, and the service recovers when it returns', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ts-ddb-outage-'));
    // DynamoDB behind the proxy: DynamoDB Local on `npm run test:ddb-local`, else a dynalite of its own.
    const emulators = dynamodbLocalEndpoint === undefined ? await startEmulators({ dataDir: dir, persistDynamo: false }) : undefined;
    const proxy = await startTcpFaultProxy(dynamodbLocalEndpoint ?? emulators!.dynamodbEndpoint);
    // Only DynamoDB is external (through the proxy); S3 stays embedded.
    const svc = await startLocalService({ env: { ...process.env, AWS_ENDPOINT_URL_DYNAMODB: proxy.url } });
    try {
      expect(svc.storage).toEqual({ s3: 'embedded', dynamodb: 'external' });
      const FAILED_DURING_OUTAGE = 12;
      let outage: { resetsBefore: number; resetsDuring: number; ended: boolean } | undefined;
      const r = await runLoad({
        service: svc,
        ops: 500,
        workers: 4,
        seed: 13,
        midway: {
          afterOps: 200,
          run: async (_s, load) => {
            const resetsBefore = proxy.stats.resets;
            proxy.refuse(true);
            // Down until the load has been answered FAILED_DURING_OUTAGE times (or the workers are done).
            const ended = await load.until((x) => x.unavailable >= FAILED_DURING_OUTAGE);
            proxy.refuse(false);
            outage = { resetsBefore, resetsDuring: proxy.stats.resets - resetsBefore, ended };
          },
        },
      });
      console.log(summary(r).join('\n'));
      expect(outage?.ended).toBe(true);
      expect(outage!.resetsDuring).toBeGreaterThan(0);
      expectOutageHandled(r);
      expect(r.unavailable).toBeGreaterThanOrEqual(FAILED_DURING_OUTAGE);
      expect(r.acknowledgedWrites).toBeGreaterThan(80);
      // With DynamoDB back, the service answers again.
      const api = new Api(svc.url, (c) => svc.mintToken(c));
      const scope = freshScope('after-ddb-outage');
      expect((await api.write(scope, 1, 'back\n')).status).toBe(200);
      expect((await api.hydrate(scope))?.body.toString()).toBe('back\n');
    } finally {
      await svc.stop();
      await proxy.close();
      await emulators?.stop();
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
