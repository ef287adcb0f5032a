import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { conversationKey } from '../../functions/lib/ids.js';
import { SnapshotStore } from '../../functions/lib/store/index.js';
import { FaultPlan, faultyStore, gate } from '../helpers/faults.js';
import { freshScope, useLocalService, type Scope } from '../helpers/service.js';

/**
 * Adversarial: hostile upload commits — ticket/commit generation mismatch, clears interleaved with the
 * commit's steps, re-PUTs to the presigned URL, foreign upload ids, and multipart part lists that are
 * reordered, duplicated, missing or padded.
 */
const ctx = useLocalService();
const ids = (s: Scope) => ({ organizationId: s.org, agentId: s.agent, conversationId: s.conv });
const now = () => Math.floor(Date.now() / 1000);

async function objectCount(prefix: 'snapshots' | 'uploads', scope: Scope): Promise<number> {
  const { svc } = ctx;
  const res = await svc.s3.send(new ListObjectsV2Command({ Bucket: svc.config.bucketName, Prefix: `${prefix}/${conversationKey(ids(scope))}/` }));
  return res.KeyCount ?? 0;
}

describe('generation of an upload ticket vs. its commit', () => {
  it('a ticket handed out at generation 0 (before a clear) cannot be committed as generation 1 after the clear', async () => {
    // Expected: the ticket is signed with the generation the writer echoed when it asked for the upload
    // (its run started under generation 0); a clear since then must fence the commit (409 reset_fenced),
    // whatever generation the commit request echoes. Before the fix it claimed the run with the COMMIT's
    // generation and ignores the one signed into the ticket, so a pre-reset run publishes after the reset.
    const { api, svc } = ctx;
    const scope = freshScope('ticket-gen');
    const store = faultyStore(svc, new FaultPlan());
    expect(await store.write({ ...ids(scope), issuedAt: now(), generation: 0 }, { runId: 1, status: 'completed', body: Buffer.from('history\n') })).toMatchObject({ kind: 'stored' });
    const data = Buffer.from('history\npre-reset run continues\n');
    const ticket = await store.createUpload({ ...ids(scope), issuedAt: now(), generation: 0 }, { runId: 2, bytes: data.length, encoding: 'identity' });
    await api.clear(scope);
    // The presigned URL outlives the clear; the clear's sweep of uploads/ ran before this PUT.
    expect((await fetch(ticket.url!, { method: 'PUT', body: data })).status).toBe(200);
    const result = await store.commitUpload({ ...ids(scope), issuedAt: now(), generation: 1 }, { runId: 2, status: 'completed', uploadId: ticket.uploadId });
    expect(result).toEqual({ kind: 'fenced' });
    expect(await api.hydrate(scope)).toBeUndefined();
  });

  it('legacy writers: a ticket handed out to a token issued before a clear cannot be committed after it with a re-minted token', async () => {
    // Expected: the ticket carries its writer's iat (signed); a run whose ticket predates the clear is
    // fenced at commit. Before the fix it judged the commit by the COMMIT token's iat only, so a run that
    // began before the reset (and re-minted its per-run token, e.g. after expiry) publishes after it.
    const { api, svc } = ctx;
    const scope = freshScope('ticket-legacy');
    const t = now();
    const data = Buffer.from('a run that began before the reset\n');
    const ticket = await svc.store.createUpload({ ...ids(scope), issuedAt: t - 10 }, { runId: 1, bytes: data.length, encoding: 'identity' });
    await faultyStore(svc, new FaultPlan(), { now: () => (t - 5) * 1000 }).clear(ids(scope));
    expect((await fetch(ticket.url!, { method: 'PUT', body: data })).status).toBe(200);
    // svc.store: the service's own store (LEGACY_FENCE_WINDOW_SECONDS = 0, as deployed).
    const result = await svc.store.commitUpload({ ...ids(scope), issuedAt: t }, { runId: 1, status: 'completed', uploadId: ticket.uploadId });
    expect(result).toEqual({ kind: 'fenced' });
    expect(await api.hydrate(scope)).toBeUndefined();
  });

  it('a ticket and commit both echoing the pre-reset generation are fenced, and the copy is not left behind', async () => {
    const { api, svc } = ctx;
    const scope = freshScope('ticket-gen-same');
    const store = faultyStore(svc, new FaultPlan());
    const writer = { ...ids(scope), issuedAt: now(), generation: 0 };
    const data = Buffer.from('pre-reset\n');
    const ticket = await store.createUpload(writer, { runId: 1, bytes: data.length, encoding: 'identity' });
    await api.clear(scope);
    expect((await fetch(ticket.url!, { method: 'PUT', body: data })).status).toBe(200);
    expect(await store.commitUpload(writer, { runId: 1, status: 'completed', uploadId: ticket.uploadId })).toEqual({ kind: 'fenced' });
    expect(await api.hydrate(scope)).toBeUndefined();
    expect(await objectCount('snapshots', scope)).toBe(0);
  });
});

describe('clears interleaved with a commit', () => {
  for (const step of ['CopyObjectCommand', 'GetObjectCommand', 'PutItemCommand', 'UpdateItemCommand'] as const) {
    it(`a clear just before the commit's ${step}: fenced or upload gone, nothing served, no snapshot object left`, async () => {
      const { api, svc } = ctx;
      const scope = freshScope(`commit-clear-${step}`);
      const writer = { ...ids(scope), issuedAt: now(), generation: 0 };
      const data = Buffer.from(`bytes of a run before the reset (${step})\n`);
      const ticket = await faultyStore(svc, new FaultPlan()).createUpload(writer, { runId: 1, bytes: data.length, encoding: 'identity' });
      expect((await fetch(ticket.url!, { method: 'PUT', body: data })).status).toBe(200);
      let done = false;
      const plan = new FaultPlan().onCall(async (cmd) => {
        if (cmd === step && !done) {
          done = true;
          await api.clear(scope);
        }
      });
      const result = await faultyStore(svc, plan).commitUpload(writer, { runId: 1, status: 'completed', uploadId: ticket.uploadId });
      expect(done).toBe(true);
      expect(['fenced', 'upload-not-found']).toContain(result.kind);
      expect(await api.hydrate(scope)).toBeUndefined();
      expect(await objectCount('snapshots', scope)).toBe(0);
    });
  }
});

describe('re-PUTs and foreign upload ids', () => {
  it('a re-PUT to the presigned URL after a successful commit changes nothing served, and a retried commit converges to 409', async () => {
    const { api, svc } = ctx;
    const scope = freshScope('reput-after');
    const store = faultyStore(svc, new FaultPlan());
    const writer = { ...ids(scope), issuedAt: now(), generation: 0 };
    const a = Buffer.from('version A\n');
    const b = Buffer.from('version B\n');
    const ticket = await store.createUpload(writer, { runId: 1, bytes: a.length, encoding: 'identity' });
    await fetch(ticket.url!, { method: 'PUT', body: a });
    expect(await store.commitUpload(writer, { runId: 1, status: 'completed', uploadId: ticket.uploadId })).toMatchObject({ kind: 'stored', latest: true });
    expect((await fetch(ticket.url!, { method: 'PUT', body: b })).status).toBe(200);
    expect(await store.commitUpload(writer, { runId: 1, status: 'completed', uploadId: ticket.uploadId })).toEqual({ kind: 'duplicate' });
    expect((await api.hydrate(scope))?.body.toString()).toBe('version A\n');
    expect(await objectCount('snapshots', scope)).toBe(1);
  });

  it('a re-PUT of a different size after the copy: announced size enforced, record matches what is served', async () => {
    const { api, svc } = ctx;
    const scope = freshScope('reput-size');
    const writer = { ...ids(scope), issuedAt: now(), generation: 0 };
    const a = Buffer.from('short\n');
    const ticket = await faultyStore(svc, new FaultPlan()).createUpload(writer, { runId: 1, bytes: a.length, encoding: 'identity' });
    await fetch(ticket.url!, { method: 'PUT', body: Buffer.from('a much longer body than announced\n') });
    expect(await faultyStore(svc, new FaultPlan()).commitUpload(writer, { runId: 1, status: 'completed', uploadId: ticket.uploadId })).toMatchObject({ kind: 'upload-invalid' });
    await fetch(ticket.url!, { method: 'PUT', body: a });
    expect(await faultyStore(svc, new FaultPlan()).commitUpload(writer, { runId: 1, status: 'completed', uploadId: ticket.uploadId })).toMatchObject({ kind: 'stored' });
    expect((await api.hydrate(scope))?.body.toString()).toBe('short\n');
  });

  it('an upload id from another conversation, or another run, names no upload', async () => {
    const { api, svc } = ctx;
    const victim = freshScope('foreign-victim');
    const attacker = freshScope('foreign-attacker');
    const store = faultyStore(svc, new FaultPlan());
    const data = Buffer.from('attacker bytes\n');
    const ticket = await store.createUpload({ ...ids(attacker), issuedAt: now(), generation: 0 }, { runId: 1, bytes: data.length, encoding: 'identity' });
    await fetch(ticket.url!, { method: 'PUT', body: data });
    expect(await store.commitUpload({ ...ids(victim), issuedAt: now(), generation: 0 }, { runId: 1, status: 'completed', uploadId: ticket.uploadId })).toEqual({ kind: 'upload-not-found' });
    expect(await store.commitUpload({ ...ids(attacker), issuedAt: now(), generation: 0 }, { runId: 2, status: 'completed', uploadId: ticket.uploadId })).toEqual({ kind: 'upload-not-found' });
    expect(await api.hydrate(victim)).toBeUndefined();
    expect(await api.hydrate(attacker)).toBeUndefined();
  });

  it('upload ids that are not the service\'s (garbage, empty, unsigned, signature of another id) name no upload', async () => {
    const { svc } = ctx;
    const scope = freshScope('garbage-id');
    const store = faultyStore(svc, new FaultPlan());
    const writer = { ...ids(scope), issuedAt: now(), generation: 0 };
    const data = Buffer.from('twelve bytes');
    const t1 = await store.createUpload(writer, { runId: 1, bytes: data.length, encoding: 'identity' });
    const t2 = await store.createUpload(writer, { runId: 1, bytes: 5, encoding: 'identity' });
    await fetch(t1.url!, { method: 'PUT', body: data });
    const [body1] = t1.uploadId.split('.') as [string, string];
    const [, mac2] = t2.uploadId.split('.') as [string, string];
    for (const uploadId of ['', '.', 'x', `${body1}.`, `${body1}`, `.${mac2}`, `${body1}.${mac2}`, `${body1}.${body1}`, '{"u":"x"}.AAAA']) {
      expect(await store.commitUpload(writer, { runId: 1, status: 'completed', uploadId }), JSON.stringify(uploadId)).toEqual({ kind: 'upload-not-found' });
    }
  });
});

describe('multipart part lists', () => {
  it('duplicated, missing, extra and zero-numbered parts are refused; a reordered full list commits exactly the uploaded bytes', async () => {
    const { api, svc } = ctx;
    const scope = freshScope('mp-parts');
    const store = new SnapshotStore({
      s3: svc.s3,
      ddb: svc.ddb,
      bucket: svc.config.bucketName,
      table: svc.config.tableName,
      uploadIds: svc.store.uploadIds,
      limits: { multipartThresholdBytes: 1, partBytes: 5 * 1024 * 1024 },
    });
    const data = Buffer.alloc(5 * 1024 * 1024 + 7, 'y\n');
    const writer = { ...ids(scope), issuedAt: now(), generation: 0 };
    const ticket = await store.createUpload(writer, { runId: 1, bytes: data.length, encoding: 'identity' });
    expect(ticket.parts).toHaveLength(2);
    const parts: { partNumber: number; etag: string }[] = [];
    for (const p of ticket.parts!) {
      const chunk = data.subarray((p.partNumber - 1) * ticket.partBytes!, p.partNumber * ticket.partBytes!);
      const res = await fetch(p.url, { method: 'PUT', body: chunk });
      parts.push({ partNumber: p.partNumber, etag: res.headers.get('etag')! });
    }
    const [p1, p2] = parts as [(typeof parts)[0], (typeof parts)[0]];
    const hostile = [
      [p1, p1],
      [p2, p2],
      [p1],
      [p1, p2, { partNumber: 3, etag: p2.etag }],
      [{ partNumber: 0, etag: p1.etag }, p1, p2],
      [{ partNumber: 0, etag: p1.etag }, p2],
      [p1, { partNumber: 2, etag: p1.etag }], // part 2 with part 1's etag
      [],
    ];
    for (const list of hostile) {
      const r = await store.commitUpload(writer, { runId: 1, status: 'completed', uploadId: ticket.uploadId, parts: list });
      expect(r.kind, JSON.stringify(list.map((p) => p.partNumber))).toBe('upload-invalid');
    }
    expect(await api.hydrate(scope)).toBeUndefined();
    expect(await store.commitUpload(writer, { runId: 1, status: 'completed', uploadId: ticket.uploadId, parts: [p2, p1] })).toMatchObject({ kind: 'stored', latest: true });
    expect((await api.hydrate(scope))?.body.equals(data)).toBe(true);
  }, 60_000);
});

describe('two commits of one ticket at once', () => {
  it('exactly one stores, the other converges (409), one snapshot object remains', async () => {
    const { api, svc } = ctx;
    const scope = freshScope('double-commit');
    const writer = { ...ids(scope), issuedAt: now(), generation: 0 };
    const data = Buffer.from('once\n');
    const ticket = await faultyStore(svc, new FaultPlan()).createUpload(writer, { runId: 1, bytes: data.length, encoding: 'identity' });
    await fetch(ticket.url!, { method: 'PUT', body: data });
    const bothCopied = gate();
    let claims = 0;
    const plan = new FaultPlan().onCall(async (cmd) => {
      if (cmd === 'PutItemCommand') {
        if (++claims === 2) bothCopied.open();
        await bothCopied.wait;
      }
    });
    const s = faultyStore(svc, plan);
    const results = await Promise.all([
      s.commitUpload(writer, { runId: 1, status: 'completed', uploadId: ticket.uploadId }),
      s.commitUpload(writer, { runId: 1, status: 'completed', uploadId: ticket.uploadId }),
    ]);
    expect(results.map((r) => r.kind).sort()).toEqual(['duplicate', 'stored']);
    expect((await api.hydrate(scope))?.body.toString()).toBe('once\n');
    expect(await objectCount('snapshots', scope)).toBe(1);
  });
});

describe('a clear between the commit\'s copy and its measure, over HTTP', () => {
  it('the commit answers 409 reset_fenced (not a 500 the worker would treat as a server fault), and a retry does not 400', async () => {
    // Expected: the run is fenced by the clear, so the answer is 409 {"code":"reset_fenced"}. Current
    // code: the clear's sweep deletes the fresh copy under snapshots/ (tagged g0 < 1), the commit's
    // GetObject of the copy throws NoSuchKey, which nothing catches → 500 internal; the worker's retry
    // then finds the upload swept too → 400 upload_not_found instead of the fence.
    const { api, svc } = ctx;
    const scope = freshScope('http-copy-clear');
    const token = await api.token(scope, { runId: 1 });
    const data = Buffer.from('bytes of a run before the reset\n');
    const created = await fetch(`${api.baseUrl}/worker/transcript/snapshot/uploads`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'x-snapshot-generation': '0' },
      body: JSON.stringify({ runId: 1, bytes: data.length, contentEncoding: 'identity' }),
    });
    expect(created.status).toBe(200);
    const ticket = (await created.json()) as { uploadId: string; url: string };
    expect((await fetch(ticket.url, { method: 'PUT', body: data })).status).toBe(200);
    let armed = true;
    const name = `adversarialClearBeforeMeasure${Date.now()}`;
    svc.s3.middlewareStack.add(
      (next, context) => async (args) => {
        if (armed && context.commandName === 'GetObjectCommand') {
          armed = false;
          await api.clear(scope);
        }
        return next(args);
      },
      { step: 'initialize', name },
    );
    const commit = () =>
      api.post(token, { terminalStatus: 'completed', runId: 1, uploadId: ticket.uploadId }, { 'x-snapshot-generation': '0' });
    let first: Response;
    try {
      first = await commit();
    } finally {
      svc.s3.middlewareStack.remove(name);
    }
    expect(armed).toBe(false);
    const firstBody = (await first.json()) as { code: string };
    expect(await api.hydrate(scope)).toBeUndefined();
    const retry = await commit();
    const retryBody = (await retry.json()) as { code: string };
    expect([
      { status: first.status, code: firstBody.code },
      { status: retry.status, code: retryBody.code },
    ]).toEqual([
      { status: 409, code: 'reset_fenced' },
      { status: 409, code: 'reset_fenced' },
    ]);
  });
});

describe('an upload that spans a clear, over HTTP (minor: answer accuracy)', () => {
  it('PUT, then a clear (which sweeps the upload), then the commit echoing the old generation: 409 reset_fenced, not 400 upload_not_found', async () => {
    // Expected: the writer echoes generation 0 while HEAD is at 1, which the service can know is fenced:
    // the documented answer for "a clear happened after the run started" is 409 reset_fenced. Current
    // code never compares an echoed generation with HEAD before the copy, finds the upload swept and
    // answers 400 upload_not_found, which a worker cannot tell from a client bug.
    const { api } = ctx;
    const scope = freshScope('http-swept');
    const token = await api.token(scope, { runId: 1 });
    const data = Buffer.from('bytes of a run before the reset\n');
    const created = await fetch(`${api.baseUrl}/worker/transcript/snapshot/uploads`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'x-snapshot-generation': '0' },
      body: JSON.stringify({ runId: 1, bytes: data.length, contentEncoding: 'identity' }),
    });
    const ticket = (await created.json()) as { uploadId: string; url: string };
    expect((await fetch(ticket.url, { method: 'PUT', body: data })).status).toBe(200);
    await api.clear(scope);
    const res = await api.post(token, { terminalStatus: 'completed', runId: 1, uploadId: ticket.uploadId }, { 'x-snapshot-generation': '0' });
    expect({ status: res.status, code: ((await res.json()) as { code: string }).code }).toEqual({ status: 409, code: 'reset_fenced' });
    expect(await api.hydrate(scope)).toBeUndefined();
  });
});

describe('re-PUT to the presigned URL before every step of a commit', () => {
  for (const step of ['CopyObjectCommand', 'GetObjectCommand', 'PutItemCommand', 'UpdateItemCommand', 'DeleteObjectCommand'] as const) {
    for (const size of ['same', 'different'] as const) {
      it(`re-PUT (${size} size) before ${step}: what is served equals what was measured, never a 500`, async () => {
        const { api, svc } = ctx;
        const scope = freshScope(`reput-${step}-${size}`);
        const writer = { ...ids(scope), issuedAt: now(), generation: 0 };
        const a = Buffer.from('version A of the run\n');
        const b = Buffer.from(size === 'same' ? 'version B of the run\n' : 'version B, longer than A\n');
        const ticket = await faultyStore(svc, new FaultPlan()).createUpload(writer, { runId: 1, bytes: a.length, encoding: 'identity' });
        await fetch(ticket.url!, { method: 'PUT', body: a });
        let fired = false;
        const plan = new FaultPlan().onCall(async (cmd) => {
          if (cmd === step && !fired) {
            fired = true;
            expect((await fetch(ticket.url!, { method: 'PUT', body: b })).status).toBe(200);
          }
        });
        const result = await faultyStore(svc, plan).commitUpload(writer, { runId: 1, status: 'completed', uploadId: ticket.uploadId });
        expect(fired).toBe(true);
        const res = await api.get(await api.token(scope));
        const served = res.status === 200 ? Buffer.from(await res.arrayBuffer()).toString() : (await res.body?.cancel(), undefined);
        if (result.kind === 'stored') {
          expect(res.status).toBe(200);
          expect(result.meta.bytes).toBe(Buffer.byteLength(served!));
          expect([a.toString(), b.toString()]).toContain(served);
        } else {
          expect(result.kind).toBe('upload-invalid'); // B of another size copied before the measure
          expect(res.status).toBe(404);
        }
      });
    }
  }
});

describe('a retried commit converges (409 or the original answer)', () => {
  it('the retry of a commit that was fenced answers 409 reset_fenced again, not 400 upload_not_found', async () => {
    // Expected (issue 11: "a retried commit converges (409 or the original answer)"): a worker whose first
    // commit was answered 409 reset_fenced but lost that answer retries and must get a 409 again. Current
    // code deletes the upload on the fenced path, so the retry's copy finds nothing and answers 400
    // upload_not_found, which the worker-client reports as a failed write rather than skipped/reset.
    const { api } = ctx;
    const scope = freshScope('fenced-retry');
    const token = await api.token(scope, { runId: 1 });
    const data = Buffer.from('a run from before the reset\n');
    const created = await fetch(`${api.baseUrl}/worker/transcript/snapshot/uploads`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'x-snapshot-generation': '0' },
      body: JSON.stringify({ runId: 1, bytes: data.length, contentEncoding: 'identity' }),
    });
    const ticket = (await created.json()) as { uploadId: string; url: string };
    await api.clear(scope);
    expect((await fetch(ticket.url, { method: 'PUT', body: data })).status).toBe(200); // after the clear's sweep
    const commit = async () => {
      const res = await api.post(token, { terminalStatus: 'completed', runId: 1, uploadId: ticket.uploadId }, { 'x-snapshot-generation': '0' });
      return { status: res.status, code: ((await res.json()) as { code?: string }).code };
    };
    const first = await commit();
    const retry = await commit();
    expect(first).toEqual({ status: 409, code: 'reset_fenced' });
    expect(retry.status).toBe(409);
    expect(await api.hydrate(scope)).toBeUndefined();
  });
});
