/**
 * The write path's half of the operator API and erasure (docs/DESIGN.md § Registry, activity and scope fences):
 * every write lists its conversation on HEAD and in its organization's registry, and no write admitted before
 * an erasure fence moved can create a conversation behind it.
 */
import { GetItemCommand, QueryCommand, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import { describe, expect, it } from 'vitest';
import { errorBody, ERRORS } from '../../functions/lib/contract.js';
import { conversationKey } from '../../functions/lib/ids.js';
import { agentFenceKey, INDEX, orgFenceKey, registryKey, segmentsOf } from '../../functions/lib/store/registry.js';
import { FaultPlan, faultyStore } from '../helpers/faults.js';
import { freshScope, useLocalService, type Scope } from '../helpers/service.js';

const ctx = useLocalService();

const idsOf = (s: Scope) => ({ organizationId: s.org, agentId: s.agent, conversationId: s.conv });
const pkOf = (s: Scope) => conversationKey(idsOf(s));
const now = () => Math.floor(Date.now() / 1000);

async function head(s: Scope): Promise<Record<string, unknown> | undefined> {
  const res = await ctx.svc.ddb.send(new GetItemCommand({ TableName: ctx.svc.config.tableName, Key: marshall({ pk: pkOf(s), sk: 'HEAD' }), ConsistentRead: true }));
  return res.Item && unmarshall(res.Item);
}

async function registered(s: Scope): Promise<boolean> {
  const res = await ctx.svc.ddb.send(new GetItemCommand({ TableName: ctx.svc.config.tableName, Key: registryKey(segmentsOf(idsOf(s))), ConsistentRead: true }));
  return res.Item !== undefined;
}

/** Everything stored for a conversation: its records (any sk) and its objects. */
async function stored(s: Scope): Promise<{ records: string[]; objects: string[] }> {
  const q = await ctx.svc.ddb.send(
    new QueryCommand({ TableName: ctx.svc.config.tableName, KeyConditionExpression: 'pk = :pk', ExpressionAttributeValues: marshall({ ':pk': pkOf(s) }), ConsistentRead: true }),
  );
  const objects: string[] = [];
  for (const prefix of ['snapshots/', 'uploads/', 'materialized/']) {
    const l = await ctx.svc.s3.send(new ListObjectsV2Command({ Bucket: ctx.svc.config.bucketName, Prefix: `${prefix}${pkOf(s)}/` }));
    objects.push(...(l.Contents ?? []).map((o) => o.Key!));
  }
  return { records: (q.Items ?? []).map((i) => i['sk']!.S!), objects };
}

/** Conversation ids of an index partition, newest activity first (what the operator API lists). */
async function listed(index: 'byOrganization' | 'byAgent', partition: string): Promise<string[]> {
  const spec = INDEX[index];
  const res = await ctx.svc.ddb.send(
    new QueryCommand({
      TableName: ctx.svc.config.tableName,
      IndexName: spec.name,
      KeyConditionExpression: `${spec.partitionKey} = :p`,
      ExpressionAttributeValues: marshall({ ':p': partition }),
      ScanIndexForward: false,
    }),
  );
  return (res.Items ?? []).map((i) => unmarshall(i)['conversationId'] as string);
}

async function setFence(key: ReturnType<typeof orgFenceKey>, update: string, values: Record<string, unknown>): Promise<void> {
  await ctx.svc.ddb.send(
    new UpdateItemCommand({
      TableName: ctx.svc.config.tableName,
      Key: key,
      UpdateExpression: update,
      ...(Object.keys(values).length > 0 && { ExpressionAttributeValues: marshall(values) }),
    }),
  );
}

describe('every write lists its conversation', () => {
  it('a completed write sets the listing attributes, counts the run and registers the conversation', async () => {
    const s = freshScope('listed');
    expect((await ctx.api.write(s, 1, 'one\n')).status).toBe(200);
    const h = await head(s);
    const seg = segmentsOf(idsOf(s));
    expect(h).toMatchObject({
      orgKey: seg.org,
      agentKey: `${seg.org}/${seg.agent}`,
      agentId: s.agent,
      conversationId: s.conv,
      runCount: 1,
      latestRunId: 1,
    });
    expect(h!['activityAtMs']).toBe(h!['retentionDueAtMs']);
    expect(h!['storedBytesTotal']).toBeGreaterThan(0);
    expect(h!['retentionShard']).toMatch(/^r([0-9]|1[0-5])$/);
    expect(await registered(s)).toBe(true);
    expect((await ctx.api.write(s, 2, 'one\ntwo\n')).status).toBe(200);
    const after = await head(s);
    expect(after!['runCount']).toBe(2);
    expect(after!['storedBytesTotal']).toBeGreaterThan(h!['storedBytesTotal'] as number);
    expect(after!['activityAtMs']).toBeGreaterThanOrEqual(h!['activityAtMs'] as number);
  });

  it('a run that did not complete lists its conversation too (never published)', async () => {
    const s = freshScope('failed-only');
    expect((await ctx.api.write(s, 1, 'boom\n', 'failed')).status).toBe(200);
    const h = await head(s);
    expect(h).toMatchObject({ conversationId: s.conv, runCount: 1 });
    expect(h!['latestRunId']).toBeUndefined();
    expect(await ctx.api.hydrate(s)).toBeUndefined();
    expect(await registered(s)).toBe(true);
  });

  it('the indexes list an organization and an agent newest activity first, with the raw ids (also ids that are hashed in keys)', async () => {
    const org = `org-list-${process.pid}-${Date.now()}`;
    const long = 'x/'.repeat(300); // encodes past 200 characters: its key segment is a hash
    const scopes: Scope[] = [
      { org, agent: 'a/1', conv: 'c ✓ 1' },
      { org, agent: 'a/1', conv: long },
      { org, agent: 'b', conv: '..%2F' },
    ];
    for (const s of scopes) expect((await ctx.api.write(s, 1, `${s.conv}\n`)).status).toBe(200);
    const seg = segmentsOf(idsOf(scopes[0]!));
    const all = await listed('byOrganization', seg.org);
    expect(all).toHaveLength(3);
    expect(new Set(all)).toEqual(new Set(scopes.map((s) => s.conv)));
    expect(await listed('byAgent', `${seg.org}/${seg.agent}`)).toHaveLength(2);
    // A later write moves its conversation to the front.
    expect((await ctx.api.write(scopes[0]!, 2, `${scopes[0]!.conv}\nmore\n`)).status).toBe(200);
    const h0 = await head(scopes[0]!);
    const others = await Promise.all(scopes.slice(1).map(head));
    if (others.every((h) => (h!['activityAtMs'] as number) < (h0!['activityAtMs'] as number))) {
      expect((await listed('byOrganization', seg.org))[0]).toBe(scopes[0]!.conv);
    }
  });

  it('a clear keeps the conversation listed (empty); nothing is published', async () => {
    const s = freshScope('cleared');
    expect((await ctx.api.write(s, 1, 'one\n')).status).toBe(200);
    expect(await ctx.api.clear(s)).toBe(1);
    const h = await head(s);
    expect(h).toMatchObject({ conversationId: s.conv, generation: 1 });
    expect(h!['latestRunId']).toBeUndefined();
  });

  it("a clear takes what it removed off the conversation's counters (runs in a chain, a failed run); later writes count from zero", async () => {
    const s = freshScope('cleared-counts');
    expect((await ctx.api.write(s, 1, 'one\n')).status).toBe(200);
    expect((await ctx.api.write(s, 2, 'one\ntwo\n')).status).toBe(200); // an append: the same chain
    expect((await ctx.api.write(s, 3, 'one\ntwo\nboom\n', 'failed')).status).toBe(200); // an object of its own
    expect(await head(s)).toMatchObject({ runCount: 3 });
    expect(await ctx.api.clear(s)).toBe(3);
    expect(await head(s)).toMatchObject({ runCount: 0, storedBytesTotal: 0 });
    // A clear of an empty conversation changes nothing; a write after the clear counts only itself.
    expect(await ctx.api.clear(s)).toBe(0);
    expect(await head(s)).toMatchObject({ runCount: 0, storedBytesTotal: 0 });
    expect((await ctx.api.write(s, 4, 'fresh\n')).status).toBe(200);
    const after = await head(s);
    expect(after!['runCount']).toBe(1);
    expect(after!['storedBytesTotal']).toBeGreaterThan(0);
    expect((await stored(s)).objects).toHaveLength(1);
  });
});

describe('erasure fences at admission', () => {
  it('a write while its organization is being erased is 409 reset_fenced and stores nothing', async () => {
    const s = { ...freshScope('org-erasing'), org: `org-erasing-${process.pid}-${Date.now()}` };
    const seg = segmentsOf(idsOf(s));
    await setFence(orgFenceKey(seg.org), 'SET erasing = :r ADD epoch :one', { ':r': 'receipt-1', ':one': 1 });
    const res = await ctx.api.write(s, 1, 'one\n');
    expect(res.status).toBe(409);
    expect(await res.json()).toEqual(errorBody(ERRORS.resetFenced));
    expect(await stored(s)).toEqual({ records: [], objects: [] });
    expect(await registered(s)).toBe(false);
    // A failed run is fenced the same way.
    expect((await ctx.api.write(s, 2, 'boom\n', 'failed')).status).toBe(409);
    expect(await stored(s)).toEqual({ records: [], objects: [] });
    // Once the erasure is over (epoch stays bumped), writes land again.
    await setFence(orgFenceKey(seg.org), 'REMOVE erasing', {});
    expect((await ctx.api.write(s, 3, 'three\n')).status).toBe(200);
    expect((await ctx.api.hydrate(s))?.body.toString()).toBe('three\n');
  });

  it('an agent fence stops that agent only', async () => {
    const org = `org-agent-fence-${process.pid}-${Date.now()}`;
    const fenced = { org, agent: 'fenced', conv: 'c' };
    const other = { org, agent: 'other', conv: 'c' };
    const seg = segmentsOf(idsOf(fenced));
    await setFence(agentFenceKey(seg.org, seg.agent), 'SET erasing = :r ADD epoch :one', { ':r': 'receipt-2', ':one': 1 });
    expect((await ctx.api.write(fenced, 1, 'one\n')).status).toBe(409);
    expect((await ctx.api.write(other, 1, 'one\n')).status).toBe(200);
    expect(await stored(fenced)).toEqual({ records: [], objects: [] });
    // A listed conversation is fenced by the agent fence too (admission reads it on every write).
    await setFence(agentFenceKey(seg.org, segmentsOf(idsOf(other)).agent), 'SET erasing = :r ADD epoch :one', { ':r': 'receipt-3', ':one': 1 });
    expect((await ctx.api.write(other, 2, 'one\ntwo\n')).status).toBe(409);
    expect((await ctx.api.hydrate(other))?.body.toString()).toBe('one\n');
  });

  for (const which of ['org', 'agent'] as const) {
    it(`a first write whose ${which} fence moves between its admission and its registration stores nothing`, async () => {
      const s = { org: `org-race-${which}-${process.pid}-${Date.now()}`, agent: 'a', conv: 'c' };
      const seg = segmentsOf(idsOf(s));
      const plan = new FaultPlan();
      // The erasure bumps the fence (and finishes: erasing removed) right after the registry Put —
      // before the writer reads the fences again.
      let done = false;
      plan.onCall(async (name) => {
        if (name === 'PutItemCommand' && !done) {
          done = true;
          const key = which === 'org' ? orgFenceKey(seg.org) : agentFenceKey(seg.org, seg.agent);
          await setFence(key, 'ADD epoch :one', { ':one': 1 });
        }
      });
      const result = await faultyStore(ctx.svc, plan).write({ ...idsOf(s), issuedAt: now(), generation: 0 }, { runId: 1, status: 'completed', body: Buffer.from('one\n') });
      expect(result).toEqual({ kind: 'fenced' });
      // Fenced at the second read: it removes the registry item it put (an erasure may have read the
      // registry before it was there), and stores nothing else.
      expect(plan.calls).toEqual(['BatchGetItemCommand', 'PutItemCommand', 'BatchGetItemCommand', 'DeleteItemCommand']);
      expect(await stored(s)).toEqual({ records: [], objects: [] });
      expect(await registered(s)).toBe(false);
      // A new write (admitted after the bump) lands.
      expect((await ctx.api.write(s, 2, 'two\n')).status).toBe(200);
    });
  }

  it('a non-completed run fenced between its claim and its listing update removes its own claim and object', async () => {
    const s = freshScope('failed-fenced');
    expect((await ctx.api.write(s, 1, 'one\n')).status).toBe(200);
    const before = await stored(s);
    const plan = new FaultPlan();
    let fenced = false;
    plan.onCall(async (name) => {
      if (name === 'UpdateItemCommand' && !fenced) {
        fenced = true;
        // A clear's (or an erasure's) fence lands, and that clear dies before deleting anything.
        await ctx.svc.ddb.send(
          new UpdateItemCommand({ TableName: ctx.svc.config.tableName, Key: marshall({ pk: pkOf(s), sk: 'HEAD' }), UpdateExpression: 'SET generation = :g', ExpressionAttributeValues: marshall({ ':g': 1 }) }),
        );
      }
    });
    const result = await faultyStore(ctx.svc, plan).write({ ...idsOf(s), issuedAt: now(), generation: 0 }, { runId: 2, status: 'failed', body: Buffer.from('boom\n') });
    expect(result).toEqual({ kind: 'fenced' });
    expect(plan.calls).toEqual(['BatchGetItemCommand', 'PutObjectCommand', 'PutItemCommand', 'UpdateItemCommand', 'DeleteItemCommand', 'DeleteObjectCommand']);
    expect(await stored(s)).toEqual(before);
  });
});
