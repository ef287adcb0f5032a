/**
 * Adversarial review of issue 12: chains larger than the inline limit (307 to one object: the chain's
 * only object or a materialized copy), 406, deltas past the limit, clear of chains and copies, and the
 * reconciler's age-based deletion of materialized copies.
 */
import { QueryCommand } from '@aws-sdk/client-dynamodb';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { gunzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { ERRORS, errorBody } from '../../functions/lib/contract.js';
import { FaultPlan, faultyStore } from '../helpers/faults.js';
import { freshScope, useLocalService, type Api, type Scope } from '../helpers/service.js';
import { sha, len, pkOf, ok } from '../helpers/append.js';
import { rawGet } from '../helpers/raw-http.js';

const INLINE = 150;
const ctx = useLocalService({ env: { ...process.env, INLINE_RESPONSE_MAX_BYTES: String(INLINE) } });

const turn = (run: number) => JSON.stringify({ run, text: `turn ${run} — ü 🚀 `.repeat(4) }) + '\n';

async function append(api: Api, scope: Scope, runId: number, baseRunId: number, base: string, added: string): Promise<Response> {
  const token = await api.token(scope, { runId });
  return api.post(token, { runId, terminalStatus: 'completed', appendJsonl: added, base: { runId: baseRunId, bytes: len(base), sha256: sha(base) }, sha256: sha(base + added) });
}

/** run 1 whole, then appends up to `last`: a chain of several objects. */
async function seedChain(api: Api, scope: Scope, last: number): Promise<string> {
  let content = turn(1);
  await ok(api.write(scope, 1, content));
  for (let run = 2; run <= last; run++) {
    await ok(append(api, scope, run, run - 1, content, turn(run)));
    content += turn(run);
  }
  return content;
}

async function list(prefix: string, scope: Scope): Promise<string[]> {
  const { svc } = ctx;
  const res = await svc.s3.send(new ListObjectsV2Command({ Bucket: svc.config.bucketName, Prefix: `${prefix}/${pkOf(scope)}/` }));
  return (res.Contents ?? []).map((o) => o.Key!);
}

async function sks(scope: Scope): Promise<string[]> {
  const { svc } = ctx;
  const res = await svc.ddb.send(
    new QueryCommand({ TableName: svc.config.tableName, KeyConditionExpression: 'pk = :pk', ExpressionAttributeValues: { ':pk': { S: pkOf(scope) } }, ConsistentRead: true }),
  );
  return (res.Items ?? []).map((i) => i['sk']!.S!);
}

describe('chains past the inline limit', () => {
  it('a multi-object chain larger than the inline limit: 307 to one object holding exactly the run; plain fetch gets it byte-exact', async () => {
    const { api } = ctx;
    const scope = freshScope('adv-307');
    const content = await seedChain(api, scope, 3);
    expect(len(content)).toBeGreaterThan(INLINE);
    const token = await api.token(scope);
    const r = await rawGet(api.url, { authorization: `Bearer ${token}`, 'accept-encoding': 'gzip' });
    expect(r.status).toBe(307);
    expect(r.headers['x-snapshot-sha256']).toBe(sha(content));
    const s3 = await rawGet(String(r.headers['location']), {});
    expect(s3.status).toBe(200);
    expect(gunzipSync(s3.body).toString('utf8')).toBe(content);
    // existing workers: plain fetch, follows the redirect and decodes every gzip member
    const h = await api.hydrate(scope);
    expect(h?.body.toString('utf8')).toBe(content);
    // the copy is reused, not re-made
    const again = await rawGet(api.url, { authorization: `Bearer ${token}` });
    expect(again.status).toBe(307);
    expect(String(again.headers['location']).split('?')[0]).toBe(String(r.headers['location']).split('?')[0]);
    // refusing gzip explicitly: 406
    const id = await rawGet(api.url, { authorization: `Bearer ${token}`, 'accept-encoding': 'identity' });
    expect(id.status).toBe(406);
    expect(JSON.parse(id.body.toString())).toEqual(errorBody(ERRORS.notAcceptable));
  });

  it('a delta whose tail is past the limit is the plain 307; a small tail is a 226', async () => {
    const { api } = ctx;
    const scope = freshScope('adv-307d');
    const content = await seedChain(api, scope, 4);
    const token = await api.token(scope);
    const r1 = await rawGet(api.url, { authorization: `Bearer ${token}`, 'a-im': 'append', 'if-none-match': `"${sha(turn(1))}"`, 'x-snapshot-base-run-id': '1', 'accept-encoding': 'identity' });
    expect(r1.status).toBe(406); // identity refused gzip, tail too large
    const r2 = await rawGet(api.url, { authorization: `Bearer ${token}`, 'a-im': 'append', 'if-none-match': `"${sha(turn(1))}"`, 'x-snapshot-base-run-id': '1', 'accept-encoding': 'gzip' });
    expect(r2.status).toBe(307);
    const base3 = turn(1) + turn(2) + turn(3);
    const r3 = await rawGet(api.url, { authorization: `Bearer ${token}`, 'a-im': 'append', 'if-none-match': `"${sha(base3)}"`, 'x-snapshot-base-run-id': '3', 'accept-encoding': 'identity' });
    expect(r3.status).toBe(226);
    expect(base3 + r3.body.toString('utf8')).toBe(content);
  });

  it('clear removes every CHAIN record, chain object and materialized copy', async () => {
    const { api } = ctx;
    const scope = freshScope('adv-307c');
    await seedChain(api, scope, 5);
    const token = await api.token(scope);
    expect((await rawGet(api.url, { authorization: `Bearer ${token}` })).status).toBe(307);
    expect((await list('materialized', scope)).length).toBe(1);
    expect((await sks(scope)).some((s) => s.startsWith('CHAIN#'))).toBe(true);
    await api.clear(scope);
    expect(await list('materialized', scope)).toEqual([]);
    expect(await list('snapshots', scope)).toEqual([]);
    expect((await sks(scope)).filter((s) => s !== 'HEAD')).toEqual([]);
    expect(await api.hydrate(scope)).toBeUndefined();
  });

  it('a materialized copy is reused only while younger than one presign TTL, and the reconciler keeps copies past twice that', async () => {
    const { api, svc } = ctx;
    const scope = freshScope('adv-307r');
    const content = await seedChain(api, scope, 3); // 3 objects: the 307 names a materialized copy
    const ids = { organizationId: scope.org, agentId: scope.agent, conversationId: scope.conv };
    const ttl = svc.config.presignTtlSeconds;
    // First redirect makes the copy.
    const first = await faultyStore(svc, new FaultPlan()).hydrate(ids, { accept: 'gzip' });
    expect(first.kind).toBe('redirect');
    // Within one TTL it is reused: no PutObject.
    const soon = new FaultPlan();
    expect((await faultyStore(svc, soon).hydrate(ids, { accept: 'gzip' })).kind).toBe('redirect');
    expect(soon.calls).not.toContain('PutObjectCommand');
    // Older than one TTL, it is written again (its date renewed) before a URL is handed out for it: a URL
    // never names a copy older than one TTL at hand-out.
    const late = new FaultPlan();
    const again = await faultyStore(svc, late, { now: () => Date.now() + (ttl + 1) * 1000 }).hydrate(ids, { accept: 'gzip' });
    expect(again.kind).toBe('redirect');
    expect(late.calls).toContain('PutObjectCommand');
    // The reconciler deletes copies only past max(grace, 2 × TTL + 60 s): at 2 × TTL it keeps them.
    const grace = 900;
    const keeps = faultyStore(svc, new FaultPlan(), { now: () => Date.now() + 2 * ttl * 1000 });
    for (let i = 0; i < 5; i++) if ((await keeps.reconcile({ graceSeconds: grace, deadlineAt: Date.now() + 30_000 })).complete) break;
    const url = (again as { url: string }).url;
    const s3 = await rawGet(url, {});
    expect(s3.status).toBe(200);
    expect(gunzipSync(s3.body).toString('utf8')).toBe(content);
    // Past the grace (> 2 × TTL + 60 s here) the copy goes.
    const sweeps = faultyStore(svc, new FaultPlan(), { now: () => Date.now() + (grace + 1) * 1000 });
    for (let i = 0; i < 5; i++) if ((await sweeps.reconcile({ graceSeconds: grace, deadlineAt: Date.now() + 30_000 })).complete) break;
    expect((await rawGet(url, {})).status).toBe(404);
  });
});
