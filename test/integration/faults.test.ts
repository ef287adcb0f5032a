import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { QueryCommand } from '@aws-sdk/client-dynamodb';
import { describe, expect, it } from 'vitest';
import { ERRORS, errorBody } from '../../functions/lib/contract.js';
import { conversationKey } from '../../functions/lib/ids.js';
import { FaultPlan, withFaultyService } from '../helpers/faults.js';
import { Api, freshScope, useLocalService, type Scope } from '../helpers/service.js';
import { gzipSync } from 'node:zlib';

/**
 * I3 crash safety: for the POST and DELETE paths, fail the N-th AWS call for every N — both before it
 * is sent and after it took effect — then check that hydrate still obeys I1 and that retrying the same
 * request (on a healthy service) converges.
 */
const ctx = useLocalService();


function prefixOf(scope: Scope): string {
  return `snapshots/${conversationKey({ organizationId: scope.org, agentId: scope.agent, conversationId: scope.conv })}/`;
}

async function objectKeys(scope: Scope): Promise<string[]> {
  const { svc } = ctx;
  const res = await svc.s3.send(new ListObjectsV2Command({ Bucket: svc.config.bucketName, Prefix: prefixOf(scope) }));
  return (res.Contents ?? []).map((o) => o.Key!);
}

async function runItems(scope: Scope): Promise<number> {
  const { svc } = ctx;
  const pk = conversationKey({ organizationId: scope.org, agentId: scope.agent, conversationId: scope.conv });
  const res = await svc.ddb.send(
    new QueryCommand({
      TableName: svc.config.tableName,
      KeyConditionExpression: 'pk = :pk AND begins_with(sk, :r)',
      ExpressionAttributeValues: { ':pk': { S: pk }, ':r': { S: 'RUN#' } },
      ConsistentRead: true,
    }),
  );
  return res.Count ?? 0;
}

/** Tokens issued a few seconds ago, so a later clear deterministically counts them as "before". */
const issuedAt = () => Math.floor(Date.now() / 1000) - 3;

async function countCalls(fn: (api: Api) => Promise<Response>): Promise<{ calls: string[] }> {
  const plan = new FaultPlan();
  const res = await withFaultyService(ctx.svc, plan, fn);
  expect(res.status).toBe(200);
  return { calls: plan.calls };
}

describe('POST survives a crash at every AWS call (I3)', () => {
  it('a clean write makes exactly 1 S3 write and 2 DynamoDB writes, after one read of HEAD (admission)', async () => {
    const scope = freshScope();
    expect((await ctx.api.write(scope, 1, 'first\n')).status).toBe(200);
    const { calls } = await countCalls((api) => api.write(scope, 2, 'a\n'));
    expect(calls).toEqual(['BatchGetItemCommand', 'PutObjectCommand', 'PutItemCommand', 'PutItemCommand', 'UpdateItemCommand']);
  });

  it('the first write of a conversation registers it first: a Put of its registry item and a second read of the erasure fences', async () => {
    const scope = freshScope();
    const { calls } = await countCalls((api) => api.write(scope, 1, 'a\n'));
    expect(calls).toEqual([
      'BatchGetItemCommand',
      'PutItemCommand',
      'BatchGetItemCommand',
      'PutObjectCommand',
      'PutItemCommand',
      'PutItemCommand',
      'UpdateItemCommand',
    ]);
  });

  it('a clean write that echoes the reset generation makes the same calls: the admission read checks the generation', async () => {
    const scope = freshScope();
    expect((await ctx.api.write(scope, 1, 'first\n')).status).toBe(200);
    const { calls } = await countCalls(async (api) =>
      api.post(await api.token(scope, { runId: 2 }), { terminalStatus: 'completed', snapshotJsonl: 'a\n', runId: 2 }, { 'x-snapshot-generation': '0' }),
    );
    expect(calls).toEqual(['BatchGetItemCommand', 'PutObjectCommand', 'PutItemCommand', 'PutItemCommand', 'UpdateItemCommand']);
  });

  for (const mode of ['before', 'after'] as const) {
    it(`fails call N ${mode} it is made, for every N: hydrate serves old or new, never broken, and a retry converges`, async () => {
      const { api } = ctx;
      const scope0 = freshScope();
      expect((await api.write(scope0, 1, 'first\n')).status).toBe(200);
      const { calls } = await countCalls((a) => a.write(scope0, 2, 'probe\n'));
      for (let n = 1; n <= calls.length; n++) {
        const scope = freshScope(`post-${mode}-${n}`);
        const oldBody = `old ${n}\n`;
        const newBody = `new ${n} ✓\n`;
        expect((await api.write(scope, 1, oldBody, 'completed', { issuedAt: issuedAt() })).status).toBe(200);

        const plan = new FaultPlan();
        mode === 'before' ? plan.failBeforeCall(n) : plan.failAfterCall(n);
        const crashed = await withFaultyService(ctx.svc, plan, (a) => a.write(scope, 2, newBody, 'completed', { issuedAt: issuedAt() }));
        expect(crashed.status, `call ${n} (${calls[n - 1]})`).toBe(500);
        expect(await crashed.json()).toEqual(errorBody(ERRORS.internal));

        // I1 right after the crash: the old or the new snapshot, byte-exact.
        const mid = await api.hydrate(scope);
        expect([oldBody, newBody]).toContain(mid?.body.toString());

        // Retry the same request on a healthy service: 200, or 409 if the crashed attempt had claimed the run.
        const retry = await api.write(scope, 2, newBody, 'completed', { issuedAt: issuedAt() });
        expect([200, 409]).toContain(retry.status);
        const end = await api.hydrate(scope);
        expect(end?.runId, `after retry, call ${n} ${mode}`).toBe(2);
        expect(end?.body.toString()).toBe(newBody);

        // Nothing leaks past a reset: every object, committed or orphaned, goes with the clear.
        expect(await api.clear(scope)).toBe(2);
        expect(await objectKeys(scope)).toEqual([]);
        expect(await runItems(scope)).toBe(0);
      }
    });
  }
});

describe('DELETE survives a crash at every AWS call (I3, I4)', () => {
  async function seed(api: Api, scope: Scope): Promise<void> {
    await api.write(scope, 1, 'one\n', 'completed', { issuedAt: issuedAt() });
    await api.write(scope, 2, 'two\n', 'completed', { issuedAt: issuedAt() });
    await api.write(scope, 3, 'three failed\n', 'failed', { issuedAt: issuedAt() });
  }

  it('a clean clear makes the fence write first', async () => {
    const { api } = ctx;
    const scope = freshScope();
    await seed(api, scope);
    const { calls } = await countCalls(async (a) => a.del(await a.token(scope)));
    // Read the generation, then fence (bump it) before anything is deleted.
    expect(calls.slice(0, 2)).toEqual(['GetItemCommand', 'UpdateItemCommand']);
    // 3 RUN records and the 2 chains of the completed runs (their bodies do not extend one another).
    expect(calls.filter((c) => c === 'DeleteItemCommand')).toHaveLength(5);
  });

  for (const mode of ['before', 'after'] as const) {
    it(`fails call N ${mode} it is made, for every N: hydrate answers the old snapshot or 404, and a retry converges`, async () => {
      const { api } = ctx;
      const probe = freshScope();
      await seed(api, probe);
      const { calls } = await countCalls(async (a) => a.del(await a.token(probe)));
      for (let n = 1; n <= calls.length; n++) {
        const scope = freshScope(`del-${mode}-${n}`);
        await seed(api, scope);
        const plan = new FaultPlan();
        mode === 'before' ? plan.failBeforeCall(n) : plan.failAfterCall(n);
        const crashed = await withFaultyService(ctx.svc, plan, async (a) => a.del(await a.token(scope)));
        expect(crashed.status, `call ${n} (${calls[n - 1]})`).toBe(500);

        const mid = await api.hydrate(scope); // never a 500, never a partial body
        // Call 1 reads the generation, call 2 fences: until the fence lands the old snapshot is served.
        if (n === 1 || (n === 2 && mode === 'before')) expect(mid?.body.toString()).toBe('two\n');
        else expect(mid).toBeUndefined();

        expect(await api.clear(scope)).toBeGreaterThanOrEqual(0);
        expect(await api.hydrate(scope)).toBeUndefined();
        expect(await objectKeys(scope)).toEqual([]);
        expect(await runItems(scope)).toBe(0);
      }
    });
  }
});

describe('committing a presigned upload survives a crash at every AWS call (I3)', () => {
  async function prepare(api: Api, scope: Scope, body: Buffer) {
    const { createUpload, putUpload } = await import('../helpers/uploads.js');
    const token = await api.token(scope, { runId: 2, issuedAt: issuedAt() });
    const transfer = gzipSync(body);
    const created = await createUpload(api, token, { runId: 2, bytes: transfer.length, contentEncoding: 'gzip' });
    const ticket = (await created.json()) as import('../helpers/uploads.js').Ticket;
    await putUpload(ticket, transfer);
    return { commit: { terminalStatus: 'completed', runId: 2, uploadId: ticket.uploadId } };
  }

  it('a clean commit reads HEAD, copies the upload, measures the copy, claims, publishes, then removes the upload', async () => {
    const { api } = ctx;
    const scope = freshScope();
    expect((await api.write(scope, 1, 'first\n')).status).toBe(200);
    const { commit } = await prepare(api, scope, Buffer.from('probe\n'));
    const { calls } = await countCalls(async (a) => a.post(await a.token(scope, { runId: 2, issuedAt: issuedAt() }), commit));
    // BatchGetItem: HEAD (the writer echoes no generation: legacy rule) and the erasure fences. The copy is
    // measured, so the recorded digest is that of the bytes kept, whatever is PUT to the upload URL afterwards.
    expect(calls).toEqual(['BatchGetItemCommand', 'CopyObjectCommand', 'GetObjectCommand', 'PutItemCommand', 'UpdateItemCommand', 'DeleteObjectCommand']);
  });

  for (const mode of ['before', 'after'] as const) {
    it(`fails call N ${mode} it is made, for every N: hydrate serves old or new, and retrying the commit converges`, async () => {
      const { api } = ctx;
      for (let n = 1; n <= 6; n++) {
        const scope = freshScope(`commit-${mode}-${n}`);
        const oldBody = `old ${n}\n`;
        const newBody = Buffer.from(`uploaded ${n} ✓\n`.repeat(100));
        expect((await api.write(scope, 1, oldBody, 'completed', { issuedAt: issuedAt() })).status).toBe(200);
        const { commit } = await prepare(api, scope, newBody);

        const plan = new FaultPlan();
        mode === 'before' ? plan.failBeforeCall(n) : plan.failAfterCall(n);
        const crashed = await withFaultyService(ctx.svc, plan, async (a) => a.post(await a.token(scope, { runId: 2, issuedAt: issuedAt() }), commit));
        // Call 6 removes the committed upload; that cleanup is best effort (the clear sweep and the
        // uploads/ lifecycle rule catch leftovers), so its failure must not fail the commit.
        expect(crashed.status, `call ${n} ${mode}`).toBe(n === 6 ? 200 : 500);

        const mid = await api.hydrate(scope);
        expect([oldBody, newBody.toString()]).toContain(mid?.body.toString());

        const retry = await api.post(await api.token(scope, { runId: 2, issuedAt: issuedAt() }), commit);
        expect([200, 409], `retry after call ${n} ${mode}`).toContain(retry.status);
        const end = await api.hydrate(scope);
        expect(end?.runId, `after retry, call ${n} ${mode}`).toBe(2);
        expect(end?.body.equals(newBody)).toBe(true);

        expect(await api.clear(scope)).toBe(2);
        expect(await objectKeys(scope)).toEqual([]);
        expect(await uploadKeys(scope)).toEqual([]);
        expect(await runItems(scope)).toBe(0);
      }
    });
  }
});

async function uploadKeys(scope: Scope): Promise<string[]> {
  const { svc } = ctx;
  const res = await svc.s3.send(new ListObjectsV2Command({ Bucket: svc.config.bucketName, Prefix: prefixOf(scope).replace(/^snapshots\//, 'uploads/') }));
  return (res.Contents ?? []).map((o) => o.Key!);
}
