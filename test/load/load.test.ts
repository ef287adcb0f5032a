/**
 * Short version of `npm run test:load` (the long one: `npm run test:load -- --ops 20000 --workers 8`),
 * plus a self-test proving the checker reports real loss and cross-conversation reads.
 *
 * Bounded by an operation count, not by time: each worker makes its share of the requests with its own
 * seeded choices, so how much is exercised does not depend on the machine's speed. Every assertion is
 * on counts and correctness; throughput is `npm run bench`'s business.
 */
import { DeleteObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { ScanCommand, UpdateItemCommand, type AttributeValue } from '@aws-sdk/client-dynamodb';
import { describe, expect, it } from 'vitest';
import { HEAD_SK, SNAPSHOT_PREFIX } from '../../functions/lib/store/index.js';
import type { LocalService } from '../../local/service.js';
import { failed, runLoad, summary } from '../../scripts/load.js';

describe('load: workers loop hydrate → append → write with resets and shared conversations', () => {
  it('loses nothing, tears nothing and never reads across conversations (5 workers, 600 requests)', async () => {
    const r = await runLoad({ ops: 600, workers: 5, seed: 7 });
    const lines = summary(r);
    console.log(lines.join('\n'));
    expect(lines.at(-1)).toMatch(/^load: \d+ ops, 0 lost, 0 errors$/);
    expect(r.violations).toEqual([]);
    expect(failed(r)).toBe(false);
    // The count bounds the run: 600 requests, at most one iteration (≤ 3 requests) over per worker.
    expect(r.ops).toBeGreaterThanOrEqual(600);
    expect(r.ops).toBeLessThanOrEqual(600 + 3 * 5);
    // The run really exercised the interesting cases (about half the requests are writes).
    expect(r.acknowledgedWrites).toBeGreaterThan(200);
    expect(r.clears).toBeGreaterThan(0);
    expect(r.statuses['GET 200']).toBeGreaterThan(50);
    expect(r.checkedInStorage).toBeGreaterThan(50);
  }, 60_000);
});

/** Copies one conversation's published HEAD onto another's and deletes some objects: what a broken store would do. */
async function sabotage(svc: LocalService): Promise<void> {
  const heads = (await svc.ddb.send(new ScanCommand({ TableName: svc.config.tableName }))).Items?.filter(
    (i) => i['sk']?.S === HEAD_SK && i['latestKey'] !== undefined,
  ) ?? [];
  expect(heads.length).toBeGreaterThan(1);
  // The highest published run onto the lowest: the victim's own later runs cannot out-publish it.
  heads.sort((a, b) => Number(a['latestRunId']!.N) - Number(b['latestRunId']!.N));
  const [from, to] = [heads.at(-1)!, heads[0]!];
  const names = ['latestRunId', 'latestKey', 'latestSha256', 'latestBytes', 'latestStoredBytes', 'latestEncoding', 'latestStoredSha256', 'latestChainId', 'latestExtents', 'latestHashState'].filter((n) => from[n] !== undefined);
  const values: Record<string, AttributeValue> = {};
  names.forEach((n, i) => (values[`:v${i}`] = from[n]!));
  await svc.ddb.send(
    new UpdateItemCommand({
      TableName: svc.config.tableName,
      Key: { pk: to['pk']!, sk: to['sk']! },
      UpdateExpression: 'SET ' + names.map((n, i) => `${n} = :v${i}`).join(', '),
      ExpressionAttributeValues: values,
    }),
  );
  const objects = (await svc.s3.send(new ListObjectsV2Command({ Bucket: svc.config.bucketName, Prefix: SNAPSHOT_PREFIX }))).Contents ?? [];
  for (const o of objects.filter((x) => x.Key !== from['latestKey']!.S).slice(0, 20)) await svc.s3.send(new DeleteObjectCommand({ Bucket: svc.config.bucketName, Key: o.Key! }));
}

describe('load checker', () => {
  it('reports lost writes and cross-conversation reads when storage is tampered with mid-run', async () => {
    const r = await runLoad({ ops: 240, workers: 3, seed: 3, resetProbability: 0, midway: { afterOps: 120, run: sabotage } });
    expect(r.lost).toBeGreaterThan(0);
    expect(r.cross).toBeGreaterThan(0);
    expect(failed(r)).toBe(true);
    expect(summary(r).at(-1)).toMatch(/^load: \d+ ops, [1-9]\d* lost, \d+ errors$/);
  }, 60_000);
});
