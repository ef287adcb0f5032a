import { createHash } from 'node:crypto';
import { GetItemCommand, QueryCommand } from '@aws-sdk/client-dynamodb';
import { HeadObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { conversationKey } from '../../functions/lib/ids.js';
import { RECONCILER_PK } from '../../functions/lib/store/index.js';
import { FaultPlan, faultyStore } from '../helpers/faults.js';
import { freshScope, useLocalService, type Scope } from '../helpers/service.js';

/**
 * The scheduled reconciler (docs/DESIGN.md § Invariants: orphaned objects are cleaned up by a reconciler): it deletes
 * objects no record refers to once they are past the grace period, never a referenced one, and it
 * resumes from a saved cursor. "Later" is simulated by giving the reconciling store a clock 2 h ahead.
 */
const ctx = useLocalService();
const GRACE = 3600;
const later = () => Date.now() + 2 * 3600 * 1000;
const ids = (s: Scope) => ({ organizationId: s.org, agentId: s.agent, conversationId: s.conv, issuedAt: Math.floor(Date.now() / 1000) });

async function keysOf(scope: Scope): Promise<string[]> {
  const { svc } = ctx;
  const prefix = `snapshots/${conversationKey(ids(scope))}/`;
  const res = await svc.s3.send(new ListObjectsV2Command({ Bucket: svc.config.bucketName, Prefix: prefix }));
  return (res.Contents ?? []).map((o) => o.Key!).sort();
}

/** A writer that dies between its upload and its claim leaves exactly one orphan. */
async function orphanOf(scope: Scope, runId: number): Promise<void> {
  // A writer that echoes its generation: the call after its upload (its chain record) never happens.
  const plan = new FaultPlan();
  let uploaded = false;
  let armed = false;
  plan.onCall((name, n) => {
    if (uploaded && !armed) {
      armed = true;
      plan.failBeforeCall(n);
    }
    if (name === 'PutObjectCommand') uploaded = true;
  });
  await expect(faultyStore(ctx.svc, plan).write({ ...ids(scope), generation: 0 }, { runId, status: 'completed', body: Buffer.from(`orphan ${runId}\n`) })).rejects.toThrow('injected');
}

/** Runs reconcile passes until one completes a full sweep from the start of the bucket. */
async function reconcileFully(now = later): Promise<void> {
  const store = faultyStore(ctx.svc, new FaultPlan(), { now });
  let sawStart = false;
  for (let i = 0; i < 100; i++) {
    const r = await store.reconcile({ graceSeconds: GRACE, deadlineAt: Date.now() + 60_000 });
    if (r.complete && sawStart) return;
    if (r.complete) sawStart = true;
  }
  throw new Error('reconcile did not complete');
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('orphan reconciler and chains', () => {
  it('deletes a chain object whose append died before its chain update, and keeps every object a chain lists', async () => {
    const { api, svc } = ctx;
    const scope = freshScope();
    const one = Buffer.from('one\n');
    const two = Buffer.from('one\ntwo\n');
    await api.write(scope, 1, one.toString());
    await api.write(scope, 2, two.toString()); // extends run 1: stored as its chain's second member
    expect(await keysOf(scope)).toHaveLength(2);
    // BatchGetItem, PutObject, ✗ UpdateItem CHAIN (HEAD caches the chain's layout: no read of it).
    const append = { runId: 3, status: 'completed' as const, base: { runId: 2, bytes: two.length, sha256: sha(two) }, append: Buffer.from('three\n'), sha256: sha(Buffer.concat([two, Buffer.from('three\n')])) };
    await expect(faultyStore(svc, new FaultPlan().failBeforeCall(3)).append({ ...ids(scope), generation: 0 }, append)).rejects.toThrow('injected');
    expect(await keysOf(scope)).toHaveLength(3);
    await reconcileFully(Date.now); // within the grace: untouched
    expect(await keysOf(scope)).toHaveLength(3);
    await reconcileFully();
    expect(await keysOf(scope)).toHaveLength(2);
    expect((await api.hydrate(scope))?.body.toString()).toBe('one\ntwo\n');
    // The append, retried, still works on the same chain.
    expect(await faultyStore(svc, new FaultPlan()).append({ ...ids(scope), generation: 0 }, append)).toMatchObject({ kind: 'stored', latest: true });
    expect((await api.hydrate(scope))?.body.toString()).toBe('one\ntwo\nthree\n');
    await reconcileFully();
    expect(await keysOf(scope)).toHaveLength(3);
  });

  it('leaves nothing behind after compactions: every object left is one the chain lists, and the reconciler deletes none', async () => {
    const { api, svc } = ctx;
    const scope = freshScope();
    let content = '';
    for (let run = 1; run <= 12; run++) {
      content += `turn ${run} ${'x'.repeat(run * 37)}\n`;
      expect((await api.write(scope, run, content)).status).toBe(200);
    }
    const keys = await keysOf(scope);
    const chains = await svc.ddb.send(
      new QueryCommand({
        TableName: svc.config.tableName,
        KeyConditionExpression: 'pk = :pk AND begins_with(sk, :c)',
        ExpressionAttributeValues: { ':pk': { S: conversationKey(ids(scope)) }, ':c': { S: 'CHAIN#' } },
        ConsistentRead: true,
      }),
    );
    expect(chains.Items).toHaveLength(1);
    const listed = chains.Items![0]!['extents']!.L!.map((e) => e.M!['k']!.S!).sort();
    expect(listed.length).toBeLessThanOrEqual(4);
    expect(keys).toEqual(listed);
    await reconcileFully();
    expect(await keysOf(scope)).toEqual(listed);
    expect((await api.hydrate(scope))?.body.toString()).toBe(content);
  });
});

describe('orphan reconciler', () => {
  it('deletes unreferenced objects past the grace period, and nothing a record refers to', async () => {
    const { api, svc } = ctx;
    const scope = freshScope();
    await api.write(scope, 1, 'committed\n');
    await orphanOf(scope, 2);
    // A duplicate is answered at admission, before it writes anything (its cleanup cannot fail).
    const dupPlan = new FaultPlan().onCall((cmd) => {
      if (cmd === 'DeleteObjectCommand') throw new Error('injected: cleanup lost');
    });
    expect(await faultyStore(svc, dupPlan).write(ids(scope), { runId: 1, status: 'completed', body: Buffer.from('dup\n') })).toEqual({ kind: 'duplicate' });
    const before = await keysOf(scope);
    expect(before).toHaveLength(2);

    // Within the grace period nothing is touched: the writer might still be about to claim.
    await reconcileFully(Date.now);
    expect(await keysOf(scope)).toEqual(before);

    await reconcileFully();
    const after = await keysOf(scope);
    expect(after).toHaveLength(1);
    expect((await api.hydrate(scope))?.body.toString()).toBe('committed\n');
    // The survivor is exactly the object the record points at.
    const run = await svc.ddb.send(
      new GetItemCommand({ TableName: svc.config.tableName, Key: { pk: { S: conversationKey(ids(scope)) }, sk: { S: 'RUN#0000000000000001' } } }),
    );
    expect(after[0]).toBe(run.Item?.['s3Key']?.S);
  });

  it('keeps superseded and non-completed runs (they are referenced) however old', async () => {
    const { api } = ctx;
    const scope = freshScope();
    await api.write(scope, 1, 'one\n');
    await api.write(scope, 2, 'two\n');
    await api.write(scope, 3, 'three failed\n', 'failed');
    const before = await keysOf(scope);
    await reconcileFully();
    expect(await keysOf(scope)).toEqual(before);
    expect(await api.clear(scope)).toBe(3);
  });

  it('resumes from a cursor saved in DynamoDB when a run stops early', async () => {
    const { svc } = ctx;
    const scope = freshScope();
    for (const runId of [1, 2, 3, 4, 5]) await orphanOf(scope, runId);
    await reconcileFully(Date.now); // settle any pass in progress, deleting nothing
    const store = faultyStore(svc, new FaultPlan(), { now: later });
    const first = await store.reconcile({ graceSeconds: GRACE, deadlineAt: Date.now() + 60_000, maxKeys: 2 });
    expect(first.complete).toBe(false);
    expect(first.scanned).toBe(2);
    const saved = await svc.ddb.send(
      new GetItemCommand({ TableName: svc.config.tableName, Key: { pk: { S: RECONCILER_PK }, sk: { S: 'CURSOR' } }, ConsistentRead: true }),
    );
    expect(saved.Item?.['startAfter']?.S).toBe(first.cursor);
    let last = first;
    for (let i = 0; i < 200 && !last.complete; i++) {
      const next = await store.reconcile({ graceSeconds: GRACE, deadlineAt: Date.now() + 60_000, maxKeys: 2 });
      if (!next.complete) expect(next.cursor! > last.cursor!).toBe(true);
      last = next;
    }
    expect(last.complete).toBe(true);
    expect(await keysOf(scope)).toEqual([]);
  });

  it('dying at any AWS call never deletes a referenced object, and the next run finishes the job', async () => {
    const { api, svc } = ctx;
    const probe = freshScope();
    await api.write(probe, 1, 'x\n');
    await reconcileFully(Date.now);
    const counter = new FaultPlan();
    await faultyStore(svc, counter, { now: later }).reconcile({ graceSeconds: GRACE, deadlineAt: Date.now() + 60_000, maxKeys: 1 });
    const calls = counter.calls.length; // GetItem cursor, List, GetItem RUN (old), PutItem cursor
    expect(calls).toBeGreaterThanOrEqual(4);
    for (let n = 1; n <= calls + 2; n++) {
      const scope = freshScope(`rec-${n}`);
      await api.write(scope, 1, `kept ${n}\n`);
      await orphanOf(scope, 2);
      const plan = new FaultPlan().failBeforeCall(n);
      await faultyStore(svc, plan, { now: later })
        .reconcile({ graceSeconds: GRACE, deadlineAt: Date.now() + 60_000, maxKeys: 3 })
        .catch(() => undefined);
      expect((await api.hydrate(scope))?.body.toString(), `after a crash at call ${n}`).toBe(`kept ${n}\n`);
      await reconcileFully();
      expect(await keysOf(scope)).toHaveLength(1);
      const [kept] = await keysOf(scope);
      await svc.s3.send(new HeadObjectCommand({ Bucket: svc.config.bucketName, Key: kept! }));
      expect((await api.hydrate(scope))?.body.toString()).toBe(`kept ${n}\n`);
    }
  }, 120_000);
});
