import { describe, expect, it } from 'vitest';
import { SnapshotStore } from '../../functions/lib/store/index.js';
import { DEFAULT_LEGACY_FENCE_WINDOW_SECONDS } from '../../functions/lib/store/context.js';
import { FaultPlan, faultyStore } from '../helpers/faults.js';
import { freshScope, useLocalService, type Scope } from '../helpers/service.js';

/**
 * Adversarial: the store's default legacy fence window. context.ts documents the default as "the
 * verifier's default clock tolerance" (JWT_CLOCK_TOLERANCE_SECONDS, 5 s) and config.ts defaults
 * LEGACY_FENCE_WINDOW_SECONDS to 0, but DEFAULT_LEGACY_FENCE_WINDOW_SECONDS is 5_000 — seconds
 * (83 minutes), apparently milliseconds written into a seconds field. Any SnapshotStore built without
 * the option (functions/reconcile.ts, test/helpers/faults.ts faultyStore, embedders) fences every
 * legacy writer for 83 minutes after a clear; tests built on faultyStore exercise the legacy rule under
 * that window, not the deployed one.
 *
 * Expected: the default is the documented 5 s (or the config's 0): a legacy writer whose token is issued
 * 60 s after a clear is not fenced by a store with default options.
 */
const ctx = useLocalService();
const ids = (s: Scope) => ({ organizationId: s.org, agentId: s.agent, conversationId: s.conv });

describe('default legacy fence window', () => {
  it('is the documented verifier clock tolerance (5 s), not 5,000 s', () => {
    expect(DEFAULT_LEGACY_FENCE_WINDOW_SECONDS).toBeLessThanOrEqual(5);
  });

  it('a store built with default options does not fence a legacy run whose token was issued 60 s after the clear', async () => {
    const { api, svc } = ctx;
    const scope = freshScope('default-window');
    const t = Math.floor(Date.now() / 1000);
    // The clear happened 60 s ago (clock of the clearing instance pinned there).
    await faultyStore(svc, new FaultPlan(), { now: () => (t - 60) * 1000 }).clear(ids(scope));
    const store = new SnapshotStore({ s3: svc.s3, ddb: svc.ddb, bucket: svc.config.bucketName, table: svc.config.tableName });
    const result = await store.write({ ...ids(scope), issuedAt: t }, { runId: 1, status: 'completed', body: Buffer.from('a run a minute after the reset\n') });
    expect(result.kind).toBe('stored');
    expect((await api.hydrate(scope))?.body.toString()).toBe('a run a minute after the reset\n');
  });

  it('the service itself (LEGACY_FENCE_WINDOW_SECONDS unset → 0) stores that run', async () => {
    const { api, svc } = ctx;
    const scope = freshScope('service-window');
    const t = Math.floor(Date.now() / 1000);
    await faultyStore(svc, new FaultPlan(), { now: () => (t - 60) * 1000 }).clear(ids(scope));
    expect((await api.write(scope, 1, 'fresh\n', 'completed', { issuedAt: t })).status).toBe(200);
  });
});
