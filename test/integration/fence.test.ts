import { QueryCommand } from '@aws-sdk/client-dynamodb';
import { HeadObjectCommand, NotFound } from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { conversationKey } from '../../functions/lib/ids.js';
import { currentGenerationCondition, isCurrent, legacyGeneration, staleGenerationCondition } from '../../functions/lib/store/fence.js';
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
    expect(await store.hydrate(ids)).toMatchObject({ kind: 'none' });
  });

  it('the predicate, the publish condition and the delete condition are exact complements for every generation', () => {
    for (const head of [0, 1, 2, 5]) {
      for (const run of [0, 1, 2, 5]) {
        if (run > head) continue; // a run is claimed in a generation HEAD has reached
        const current = run === head;
        expect(isCurrent(run, head)).toBe(current);
        const pub = currentGenerationCondition(run);
        const headItem: Record<string, number> = head === 0 ? {} : { generation: head };
        expect(evaluate(pub.expression, headItem, pub.values), `publish run ${run} at head ${head}`).toBe(current);
        const del = staleGenerationCondition(head);
        const runItem: Record<string, number> = run === 0 && head === 1 ? {} : { generation: run }; // records from before generations have none
        expect(evaluate(del.expression, runItem, del.values), `delete run ${run} at head ${head}`).toBe(!current);
      }
    }
  });

  it('places a writer that echoes no generation by its token iat bounded by the service clock, with the window in whole seconds', () => {
    const clear = { generation: 3, clearedAtMs: 100_500 }; // second 100
    expect(legacyGeneration(90, 200_000, { generation: 0, clearedAtMs: undefined }, 0)).toBe(0); // never cleared
    expect(legacyGeneration(100, 200_000, clear, 0)).toBe(3); // same second counts as after (window 0)
    expect(legacyGeneration(99, 200_000, clear, 0)).toBeUndefined(); // before the clear
    expect(legacyGeneration(104, 200_000, clear, 5)).toBeUndefined(); // inside a 5 s window: fenced
    expect(legacyGeneration(105, 200_000, clear, 5)).toBe(3);
    // An issuer 30 s fast cannot place a run that reached us inside the window after the clear.
    expect(legacyGeneration(135, 104_999, clear, 5)).toBeUndefined();
    expect(legacyGeneration(135, 105_000, clear, 5)).toBe(3);
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
