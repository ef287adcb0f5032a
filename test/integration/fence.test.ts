import { QueryCommand } from '@aws-sdk/client-dynamodb';
import { HeadObjectCommand, NotFound } from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { conversationKey } from '../../functions/lib/ids.js';
import { beforeFenceCondition, fenceAt, isAfterFence, publishCondition } from '../../functions/lib/store/fence.js';
import { FaultPlan, faultyStore } from '../helpers/faults.js';
import { freshScope, useLocalService } from '../helpers/service.js';

/**
 * The reset fence is defined once (functions/lib/store/fence.ts): the in-code predicate, the publish
 * condition and clear's delete condition must agree exactly, including on the boundary.
 */
const ctx = useLocalService();

describe('reset fence', () => {
  it('a clear in the same millisecond as a claim deletes the run record with its object (no record left pointing at nothing)', async () => {
    const { svc } = ctx;
    const scope = freshScope('same-ms');
    const ids = { organizationId: scope.org, agentId: scope.agent, conversationId: scope.conv };
    const T = Date.now();
    const store = faultyStore(svc, new FaultPlan(), { now: () => T });
    const iat = Math.floor(T / 1000);
    expect(await store.write({ ...ids, issuedAt: iat }, { runId: 1, status: 'completed', body: Buffer.from('one\n') })).toMatchObject({ kind: 'stored', latest: true });
    const runs = async () =>
      (
        await svc.ddb.send(
          new QueryCommand({
            TableName: svc.config.tableName,
            KeyConditionExpression: 'pk = :pk',
            ExpressionAttributeValues: { ':pk': { S: conversationKey(ids) } },
            ConsistentRead: true,
          }),
        )
      ).Items?.filter((i) => i['sk']?.S?.startsWith('RUN#')) ?? [];
    const [run] = await runs();
    const s3Key = run!['s3Key']!.S!;

    // Same clock reading: the claim is not after the clear (createdAtMs == clearedAtMs).
    expect(await store.clear(ids)).toEqual({ deleted: 1 });
    expect(await runs()).toEqual([]);
    await expect(svc.s3.send(new HeadObjectCommand({ Bucket: svc.config.bucketName, Key: s3Key }))).rejects.toBeInstanceOf(NotFound);
    expect(await store.hydrate(ids)).toEqual({ kind: 'none' });
  });

  it('the predicate, the publish condition and the delete condition are exact complements at every boundary', () => {
    const fence = fenceAt(10_500); // sec 10
    for (const createdAtMs of [10_499, 10_500, 10_501]) {
      for (const iat of [9, 10, 11]) {
        const after = createdAtMs > 10_500 && iat >= 10;
        expect(isAfterFence({ createdAtMs, iat }, fence)).toBe(after);
        // Evaluate the two DynamoDB conditions with their placeholders substituted.
        const pub = publishCondition({ createdAtMs, iat });
        const del = beforeFenceCondition(fence);
        const head = { clearedAtMs: 10_500, clearedAtSec: 10 };
        const run = { createdAtMs, iat };
        expect(evaluate(pub.expression, { ...head }, pub.values)).toBe(after);
        expect(evaluate(del.expression, { ...run }, del.values)).toBe(!after);
      }
    }
  });
});

/** A tiny evaluator for the comparison/AND/OR/attribute_not_exists subset the fence conditions use. */
function evaluate(expression: string, item: Record<string, number>, values: Record<string, { N?: string }>): boolean {
  const js = expression
    .replace(/attribute_not_exists\((\w+)\)/g, (_, a: string) => String(!(a in item)))
    .replace(/:(\w+)/g, (_, v: string) => values[`:${v}`]!.N!)
    .replace(/\b([a-zA-Z]\w*)\b/g, (m) => (m === 'AND' ? '&&' : m === 'OR' ? '||' : m === 'true' || m === 'false' ? m : String(item[m])))
    .replace(/(?<![<>!=])=(?!=)/g, '===');
  return Function(`return (${js});`)() as boolean;
}
