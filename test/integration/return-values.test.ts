import { ConditionalCheckFailedException, DynamoDBClient, GetItemCommand } from '@aws-sdk/client-dynamodb';
import { describe, expect, it } from 'vitest';
import { onDynamoDbLocal } from '../ddb-local/engine.js';
import { FaultPlan, faultyStore, gate } from '../helpers/faults.js';
import { freshScope, useLocalService } from '../helpers/service.js';

/**
 * On DynamoDB, a failed conditional write can return the item that failed the condition
 * (ReturnValuesOnConditionCheckFailure: ALL_OLD); dynalite silently ignores the option. This shim gives
 * dynalite that behaviour (it attaches the item, read through a separate client that is not counted),
 * so we can show that on AWS a write that loses a race after its admission read costs no further read:
 * 1 read (admission) + 1 S3 write + 2 conditional DynamoDB writes, exactly as a winning write — and that
 * the outcomes are the same as with the fallback read.
 *
 * On DynamoDB Local (`npm run test:ddb-local`), AWS's own emulator, the shim is NOT installed: the
 * native ALL_OLD behaviour must give the same calls per losing write on its own.
 */
const ctx = useLocalService();

/** On dynalite, attaches the failing item to a ConditionalCheckFailedException; a no-op on DynamoDB Local. */
function withReturnValuesShim(store: ReturnType<typeof faultyStore>, side: DynamoDBClient): void {
  if (onDynamoDbLocal) return; // the real behaviour is under test there
  const ddb = (store as unknown as { ddb: DynamoDBClient }).ddb;
  ddb.middlewareStack.add(
    (next, context) => async (args) => {
      try {
        return await next(args);
      } catch (err) {
        const input = (args as { input: { ReturnValuesOnConditionCheckFailure?: string; TableName: string; Key?: unknown; Item?: Record<string, unknown> } }).input;
        if (err instanceof ConditionalCheckFailedException && input.ReturnValuesOnConditionCheckFailure === 'ALL_OLD') {
          const k = input.Key ?? { pk: input.Item!['pk'], sk: input.Item!['sk'] };
          const res = await side.send(new GetItemCommand({ TableName: input.TableName, Key: k as never, ConsistentRead: true }));
          err.Item = res.Item;
        }
        void context;
        throw err;
      }
    },
    { step: 'initialize', name: 'returnValuesShim', priority: 'low' },
  );
}

describe('a write that loses a race (DynamoDB returning the failing item)', () => {
  it('skips the publish when its admission read already shows a higher run (4 AWS calls), and answers stored/not latest', async () => {
    const { api, svc } = ctx;
    const scope = freshScope();
    await api.write(scope, 9, 'nine\n');
    const plan = new FaultPlan();
    const store = faultyStore(svc, plan);
    withReturnValuesShim(store, svc.ddb);
    const ids = { organizationId: scope.org, agentId: scope.agent, conversationId: scope.conv, issuedAt: Math.floor(Date.now() / 1000), generation: 0 };
    const result = await store.write(ids, { runId: 4, status: 'completed', body: Buffer.from('four\n') });
    expect(result).toMatchObject({ kind: 'stored', latest: false });
    expect(plan.calls).toEqual(['BatchGetItemCommand', 'PutObjectCommand', 'PutItemCommand', 'PutItemCommand']);
    expect((await api.hydrate(scope))?.body.toString()).toBe('nine\n');
  });

  it('costs exactly 5 AWS calls (no read after the failed condition) when a higher run publishes after its admission', async () => {
    const { api, svc } = ctx;
    const scope = freshScope();
    const plan = new FaultPlan();
    const admitted = gate();
    const resume = gate();
    plan.onCall(async (cmd) => {
      if (cmd === 'PutObjectCommand') {
        admitted.open();
        await resume.wait;
      }
    });
    const store = faultyStore(svc, plan);
    withReturnValuesShim(store, svc.ddb);
    const ids = { organizationId: scope.org, agentId: scope.agent, conversationId: scope.conv, issuedAt: Math.floor(Date.now() / 1000), generation: 0 };
    expect((await api.write(scope, 1, 'one\n')).status).toBe(200); // a listed conversation: no registration calls
    const writing = store.write(ids, { runId: 4, status: 'completed', body: Buffer.from('four\n') });
    await admitted.wait;
    expect((await api.write(scope, 9, 'nine\n')).status).toBe(200);
    resume.open();
    expect(await writing).toMatchObject({ kind: 'stored', latest: false });
    expect(plan.calls).toEqual(['BatchGetItemCommand', 'PutObjectCommand', 'PutItemCommand', 'PutItemCommand', 'UpdateItemCommand']);
    expect((await api.hydrate(scope))?.body.toString()).toBe('nine\n');
  });

  it('tells a run fenced after its admission apart without a read, and a duplicate without a read', async () => {
    const { api, svc } = ctx;
    const scope = freshScope();
    const ids = { organizationId: scope.org, agentId: scope.agent, conversationId: scope.conv };
    await api.write(scope, 1, 'one\n');

    const plan = new FaultPlan();
    const admitted = gate();
    const resume = gate();
    plan.onCall(async (cmd) => {
      if (cmd === 'PutObjectCommand' && plan.calls.length === 2) {
        admitted.open();
        await resume.wait;
      }
    });
    const store = faultyStore(svc, plan);
    withReturnValuesShim(store, svc.ddb);
    // Admitted at generation 0; a clear lands before its publish.
    const writing = store.write({ ...ids, issuedAt: Math.floor(Date.now() / 1000), generation: 0 }, { runId: 2, status: 'completed', body: Buffer.from('old+\n') });
    await admitted.wait;
    await api.clear(scope);
    resume.open();
    expect(await writing).toEqual({ kind: 'fenced' });
    expect(plan.calls.slice(0, 5)).toEqual(['BatchGetItemCommand', 'PutObjectCommand', 'PutItemCommand', 'PutItemCommand', 'UpdateItemCommand']);
    expect(plan.calls.filter((c) => c === 'GetItemCommand' || c === 'BatchGetItemCommand')).toHaveLength(1);

    await api.write(scope, 3, 'three\n');
    plan.reset();
    expect(await store.write({ ...ids, issuedAt: Math.floor(Date.now() / 1000), generation: 1 }, { runId: 3, status: 'completed', body: Buffer.from('dup\n') })).toEqual({
      kind: 'duplicate',
    });
    // One read: the admission, which finds the run's record and answers before writing anything.
    expect(plan.calls.filter((c) => c === 'GetItemCommand' || c === 'BatchGetItemCommand')).toHaveLength(1);
    expect(plan.calls).not.toContain('PutObjectCommand');
    expect((await api.hydrate(scope))?.body.toString()).toBe('three\n');
  });
});
