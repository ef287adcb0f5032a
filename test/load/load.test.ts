/**
 * Short version of `npm run test:load` (the long one: `npm run test:load -- --ops 20000 --workers 8`),
 * plus a self-test proving the checker reports real loss and cross-conversation reads.
 *
 * Bounded by an operation count, not by time: each worker makes its share of the requests with its own
 * seeded choices, so how much is exercised does not depend on the machine's speed. Every assertion is
 * on counts and correctness; throughput is `npm run bench`'s business.
 */
import { CopyObjectCommand, DeleteObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { GetItemCommand, PutItemCommand, ScanCommand, UpdateItemCommand, type AttributeValue } from '@aws-sdk/client-dynamodb';
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
  const table = svc.config.tableName;
  const bucket = svc.config.bucketName;
  const heads = (await svc.ddb.send(new ScanCommand({ TableName: table }))).Items?.filter(
    (i) => i['sk']?.S === HEAD_SK && i['latestKey'] !== undefined,
  ) ?? [];
  expect(heads.length).toBeGreaterThan(1);
  // The highest published run onto the lowest: the victim's own later runs cannot out-publish it.
  heads.sort((a, b) => Number(a['latestRunId']!.N) - Number(b['latestRunId']!.N));
  const [from, to] = [heads.at(-1)!, heads[0]!];
  const latest = { ...from };
  // A chain run: copy its objects to keys of their own (the other conversation keeps appending and
  // compacting, deleting what its chain no longer lists) and give the victim a CHAIN record naming them.
  const chainId = from['latestChainId']?.S;
  const keep = new Set<string | undefined>([from['latestKey']!.S]);
  // The other conversation's workers are still running: a compaction may delete an object between the
  // read of its chain and the copy; read again then.
  for (let attempt = 1; chainId !== undefined; attempt++) {
    const chain = (await svc.ddb.send(new GetItemCommand({ TableName: table, Key: { pk: from['pk']!, sk: { S: `CHAIN#${chainId}` } }, ConsistentRead: true }))).Item!;
    const extents = [];
    try {
      for (const e of chain['extents']!.L!) {
        const key = e.M!['k']!.S!;
        await svc.s3.send(new CopyObjectCommand({ Bucket: bucket, Key: `${key}.cross`, CopySource: `${bucket}/${encodeURIComponent(key).replaceAll('%2F', '/')}` }));
        keep.add(`${key}.cross`);
        extents.push({ M: { ...e.M!, k: { S: `${key}.cross` } } });
      }
    } catch (err) {
      if ((err as Error).name !== 'NoSuchKey' || attempt >= 5) throw err;
      continue;
    }
    await svc.ddb.send(new PutItemCommand({ TableName: table, Item: { ...chain, pk: to['pk']!, extents: { L: extents } } }));
    latest['latestExtents'] = { L: extents };
    break;
  }
  // Every attribute that describes the published run: the victim's HEAD becomes exactly the other's.
  const all = Object.keys(latest).filter((n) => n.startsWith('latest'));
  const stale = Object.keys(to).filter((n) => n.startsWith('latest') && latest[n] === undefined);
  const values: Record<string, AttributeValue> = {};
  all.forEach((n, i) => (values[`:v${i}`] = latest[n]!));
  await svc.ddb.send(
    new UpdateItemCommand({
      TableName: table,
      Key: { pk: to['pk']!, sk: to['sk']! },
      UpdateExpression: 'SET ' + all.map((n, i) => `${n} = :v${i}`).join(', ') + (stale.length ? ` REMOVE ${stale.join(', ')}` : ''),
      ExpressionAttributeValues: values,
    }),
  );
  // Delete objects the victim does not now name, so acknowledged writes go missing.
  const objects = (await svc.s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: SNAPSHOT_PREFIX }))).Contents ?? [];
  for (const o of objects.filter((x) => !keep.has(x.Key)).slice(0, 20)) await svc.s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: o.Key! }));
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
