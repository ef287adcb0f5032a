import { DeleteObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { describe, expect, it } from 'vitest';
import { conversationKey } from '../../functions/lib/ids.js';
import { SnapshotStore } from '../../functions/lib/store/index.js';
import { generationOf, ids, nowSeconds, writeWithGeneration } from '../helpers/generation.js';
import { FaultPlan, faultyStore, gate } from '../helpers/faults.js';
import { freshScope, useLocalService } from '../helpers/service.js';

/**
 * Guarantees that do not trust clocks or clients (issue 11). Each case reproduces a failure of the
 * time-based fence or of the trusting upload commit, with injected clocks and interleavings.
 */
const ctx = useLocalService();
const now = nowSeconds;
const writeAt = writeWithGeneration;

describe('the reset fence follows order, not clocks (I4)', () => {
  it('a clear on an instance whose clock is 60 s ahead does not fence the runs that start after it', async () => {
    const { api, svc } = ctx;
    const scope = freshScope('ahead');
    expect((await api.write(scope, 1, 'one\n')).status).toBe(200);
    await faultyStore(svc, new FaultPlan(), { now: () => Date.now() + 60_000 }).clear(ids(scope));
    const g = await generationOf(api, scope);
    expect((await writeAt(api, scope, 2, 'after the reset\n', g)).status).toBe(200);
    expect((await api.hydrate(scope))?.body.toString()).toBe('after the reset\n');
  });

  it('a clear on an instance whose clock is behind the previous clear still takes effect', async () => {
    const { api, svc } = ctx;
    const scope = freshScope('behind');
    await faultyStore(svc, new FaultPlan(), { now: () => Date.now() + 2_000 }).clear(ids(scope));
    expect((await writeAt(api, scope, 1, 'acknowledged\n', await generationOf(api, scope))).status).toBe(200);
    // Instance B runs 2 s behind instance A: its clear is "earlier" by the clock, later in fact.
    await faultyStore(svc, new FaultPlan(), { now: () => Date.now() - 2_000 }).clear(ids(scope));
    expect(await api.hydrate(scope)).toBeUndefined();
  });

  it('a clear whose fence write is retried by the SDK after a lost response never removes a run acknowledged in between', async () => {
    const { api, svc } = ctx;
    const scope = freshScope('retried-clear');
    expect((await api.write(scope, 1, 'before\n')).status).toBe(200);
    const store = faultyStore(svc, new FaultPlan());
    const applied = gate();
    const resume = gate();
    let lost = false;
    // Inside the SDK's retry loop: the first fence write reaches DynamoDB, then its response is "lost".
    store.ddb.middlewareStack.add(
      (next, context) => async (args) => {
        const out = await next(args);
        if (context.commandName === 'UpdateItemCommand' && !lost) {
          lost = true;
          applied.open();
          await resume.wait;
          throw Object.assign(new Error('socket hang up'), { name: 'TimeoutError', code: 'ECONNRESET', $metadata: {} });
        }
        return out;
      },
      { step: 'finalizeRequest', name: 'loseFirstFenceResponse' },
    );
    const clearing = store.clear(ids(scope));
    await applied.wait;
    // Between the fence and the SDK's retry, a run after the reset is written and acknowledged.
    const g = await generationOf(api, scope);
    expect((await writeAt(api, scope, 2, 'acknowledged after the reset\n', g)).status).toBe(200);
    resume.open();
    await clearing;
    expect((await api.hydrate(scope))?.body.toString()).toBe('acknowledged after the reset\n');
  });

  it('a write that echoes the generation of a hydrate before a reset is fenced, whatever its iat (issuer ±30 s)', async () => {
    const { api } = ctx;
    for (const skew of [-30, -2, 0, 3, 30]) {
      const scope = freshScope(`skew${skew}`);
      expect((await api.write(scope, 1, 'old history\n')).status).toBe(200);
      const before = await generationOf(api, scope);
      await api.clear(scope);
      const after = await generationOf(api, scope);
      const stale = await writeAt(api, scope, 2, 'old history\nand more\n', before, now() + Math.min(skew, 4));
      expect(stale.status, `stale generation, issuer ${skew} s`).toBe(409);
      expect(((await stale.json()) as { code: string }).code).toBe('reset_fenced');
      expect(await api.hydrate(scope)).toBeUndefined();
      expect((await writeAt(api, scope, 3, 'new\n', after, now() + Math.min(skew, 4))).status, `fresh generation, issuer ${skew} s`).toBe(200);
    }
  });
});

describe('commits verify exactly what they keep', () => {
  it('a second PUT to the upload URL during the commit cannot make the record differ from the stored bytes', async () => {
    const { api, svc } = ctx;
    const scope = freshScope('reput');
    const runId = 1;
    const a = Buffer.from('version A of the transcript\n');
    const b = Buffer.from('version B of the transcript\n'); // same length: passes any size check
    const store = faultyStore(svc, new FaultPlan());
    const writer = { ...ids(scope), issuedAt: now(), generation: 0 };
    const ticket = await store.createUpload(writer, { runId, bytes: a.length, encoding: 'identity' });
    expect((await fetch(ticket.url!, { method: 'PUT', body: a })).status).toBe(200);
    // Before the commit's second data call (old order: measure, then copy; new: copy, then measure),
    // the client PUTs other bytes to the still-valid URL.
    const plan = new FaultPlan();
    let dataCalls = 0;
    plan.onCall(async (cmd) => {
      if ((cmd === 'GetObjectCommand' || cmd === 'CopyObjectCommand') && ++dataCalls === 2) {
        expect((await fetch(ticket.url!, { method: 'PUT', body: b })).status).toBe(200);
      }
    });
    const committing = faultyStore(svc, plan);
    expect(await committing.commitUpload(writer, { runId, status: 'completed', uploadId: ticket.uploadId })).toMatchObject({ kind: 'stored' });
    const res = await api.get(await api.token(scope));
    expect(res.status).toBe(200);
    const body = Buffer.from(await res.arrayBuffer());
    expect([a.toString(), b.toString()]).toContain(body.toString());
  });

  it('a multipart commit must name every part handed out (400 upload_invalid), and a retried commit converges', async () => {
    const { api, svc } = ctx;
    const scope = freshScope('parts');
    const store = new SnapshotStore({
      s3: svc.s3,
      ddb: svc.ddb,
      bucket: svc.config.bucketName,
      table: svc.config.tableName,
      limits: { multipartThresholdBytes: 1, partBytes: 5 * 1024 * 1024 },
    });
    const data = Buffer.alloc(12 * 1024 * 1024, 'x\n');
    const writer = { ...ids(scope), issuedAt: now(), generation: 0 };
    const ticket = await store.createUpload(writer, { runId: 1, bytes: data.length, encoding: 'identity' });
    expect(ticket.parts).toHaveLength(3);
    const parts: { partNumber: number; etag: string }[] = [];
    for (const p of ticket.parts!) {
      const chunk = data.subarray((p.partNumber - 1) * ticket.partBytes!, p.partNumber * ticket.partBytes!);
      const res = await fetch(p.url, { method: 'PUT', body: chunk });
      parts.push({ partNumber: p.partNumber, etag: res.headers.get('etag')! });
    }
    expect(await store.commitUpload(writer, { runId: 1, status: 'completed', uploadId: ticket.uploadId, parts: parts.slice(0, 1) })).toMatchObject({
      kind: 'upload-invalid',
    });
    expect(await api.hydrate(scope)).toBeUndefined();
    expect(await store.commitUpload(writer, { runId: 1, status: 'completed', uploadId: ticket.uploadId, parts })).toMatchObject({ kind: 'stored', latest: true });
    // The same commit again (its answer lost): 409, not a 5xx forever.
    expect(await store.commitUpload(writer, { runId: 1, status: 'completed', uploadId: ticket.uploadId, parts })).toEqual({ kind: 'duplicate' });
    expect((await api.hydrate(scope))?.body.equals(data)).toBe(true);
  }, 60_000);

  it('upload ids are signed: an altered or truncated one (announced size, encoding, parts) names no upload', async () => {
    const { svc } = ctx;
    const scope = freshScope('tamper');
    const store = faultyStore(svc, new FaultPlan());
    const writer = { ...ids(scope), issuedAt: now(), generation: 0 };
    const data = Buffer.from('twelve bytes');
    const ticket = await store.createUpload(writer, { runId: 1, bytes: data.length, encoding: 'identity' });
    await fetch(ticket.url!, { method: 'PUT', body: data });
    const [body, mac] = ticket.uploadId.split('.') as [string, string];
    const ref = JSON.parse(Buffer.from(body, 'base64url').toString()) as Record<string, unknown>;
    for (const altered of [{ ...ref, b: 5 }, { ...ref, e: 'gzip' }, { ...ref, n: 1 }]) {
      const uploadId = `${Buffer.from(JSON.stringify(altered)).toString('base64url')}.${mac}`;
      expect(await store.commitUpload(writer, { runId: 1, status: 'completed', uploadId })).toEqual({ kind: 'upload-not-found' });
    }
    expect(await store.commitUpload(writer, { runId: 1, status: 'completed', uploadId: `${body}.${mac.slice(0, -2)}` })).toEqual({ kind: 'upload-not-found' });
    expect(await store.commitUpload(writer, { runId: 1, status: 'completed', uploadId: ticket.uploadId })).toMatchObject({ kind: 'stored' });
  });

  it('the reconciler publishes a completed run whose writer died between its claim and its publish', async () => {
    const { api, svc } = ctx;
    const scope = freshScope('rollforward');
    // BatchGetItem (admission), PutItem (registry) + BatchGetItem (fences again: a new conversation), PutObject,
    // PutItem (chain), PutItem (claim), then the process dies before UpdateItem (publish).
    const crash = new FaultPlan().failBeforeCommand('UpdateItemCommand');
    await expect(faultyStore(svc, crash).write({ ...ids(scope), issuedAt: now(), generation: 0 }, { runId: 1, status: 'completed', body: Buffer.from('claimed\n') })).rejects.toThrow('injected');
    expect(await api.hydrate(scope)).toBeUndefined();
    const later = faultyStore(svc, new FaultPlan(), { now: () => Date.now() + 2 * 3600_000 });
    for (let i = 0; i < 100; i++) if ((await later.reconcile({ graceSeconds: 3600, deadlineAt: Date.now() + 60_000 })).complete) break;
    expect((await api.hydrate(scope))?.body.toString()).toBe('claimed\n');
  });
});

describe('who may reset', () => {
  it('a per-run token may DELETE its conversation (decided: existing workers clear with the token they hold)', async () => {
    const { api } = ctx;
    const scope = freshScope('per-run-delete');
    expect((await api.write(scope, 1, 'one\n')).status).toBe(200);
    const other = freshScope('per-run-delete-other');
    expect((await api.write(other, 1, 'other\n')).status).toBe(200);
    const res = await api.del(await api.token(scope, { runId: 7 }));
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ deleted: 1 });
    expect(await api.hydrate(scope)).toBeUndefined();
    expect((await api.hydrate(other))?.body.toString()).toBe('other\n');
  });
});

describe('loss is loud', () => {
  it('HEAD naming an object that is gone answers 500, never 404 (the next run would overwrite the history)', async () => {
    const { api, svc } = ctx;
    const scope = freshScope('lost');
    expect((await api.write(scope, 1, 'precious\n')).status).toBe(200);
    const { Contents } = await svc.s3.send(
      new (await import('@aws-sdk/client-s3')).ListObjectsV2Command({ Bucket: svc.config.bucketName, Prefix: `snapshots/${conversationKey(ids(scope))}/` }),
    );
    await svc.s3.send(new DeleteObjectCommand({ Bucket: svc.config.bucketName, Key: Contents![0]!.Key! }));
    const res = await api.get(await api.token(scope));
    expect(res.status).toBe(500);
  });

  it('an object whose stored bytes differ from the digest its record holds answers 500', async () => {
    const { api, svc } = ctx;
    const scope = freshScope('corrupt');
    expect((await api.write(scope, 1, 'precious\n')).status).toBe(200);
    const { Contents } = await svc.s3.send(
      new (await import('@aws-sdk/client-s3')).ListObjectsV2Command({ Bucket: svc.config.bucketName, Prefix: `snapshots/${conversationKey(ids(scope))}/` }),
    );
    const url = await getSignedUrl(svc.s3, new PutObjectCommand({ Bucket: svc.config.bucketName, Key: Contents![0]!.Key! }), { expiresIn: 60 });
    await fetch(url, { method: 'PUT', body: 'tampered' });
    expect((await api.get(await api.token(scope), { 'accept-encoding': 'gzip' })).status).toBe(500);
    expect((await api.get(await api.token(scope))).status).toBe(500);
  });
});
