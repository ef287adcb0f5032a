import { gunzipSync, gzipSync } from 'node:zlib';
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ERRORS, errorBody } from '../../functions/lib/contract.js';
import { freshScope, useLocalService, type Api } from '../helpers/service.js';
import { rawGet } from '../helpers/raw-http.js';
import { FaultPlan, faultyStore } from '../helpers/faults.js';
import { createUpload, putUpload, uploadSnapshot, type Ticket } from '../helpers/uploads.js';

/**
 * Issue 5: gzip at rest and on the wire, sha256 ETags and 304s, 307 to presigned S3 URLs for large
 * snapshots, presigned (multipart) uploads verified by the service before commit.
 * Limits are lowered so the large paths are exercised with small data; one test uses 50 MB for real.
 */
const ctx = useLocalService({
  env: {
    ...process.env,
    INLINE_RESPONSE_MAX_BYTES: String(256 * 1024),
    MULTIPART_THRESHOLD_BYTES: String(6 * 1024 * 1024),
    MULTIPART_PART_BYTES: String(5 * 1024 * 1024),
    MAX_UPLOAD_BYTES: String(128 * 1024 * 1024),
  },
});
const fixture = readFileSync(new URL('../fixtures/pi-large-session.jsonl', import.meta.url));
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');


async function tokenFor(api: Api, scope: ReturnType<typeof freshScope>) {
  return api.token(scope);
}

describe('compression', () => {
  it('accepts a gzip-encoded POST body and stores exactly the decoded snapshot', async () => {
    const { api } = ctx;
    const scope = freshScope();
    const token = await api.token(scope, { runId: 1 });
    const body = gzipSync(JSON.stringify({ terminalStatus: 'completed', snapshotJsonl: fixture.toString('utf8'), runId: 1 }));
    const res = await api.post(token, body, { 'content-encoding': 'gzip' });
    expect(res.status).toBe(200);
    expect((await api.hydrate(scope))?.body.equals(fixture)).toBe(true);
  });

  it('serves gzip to a client that accepts it and identity to one that does not, both byte-exact', async () => {
    const { api } = ctx;
    const scope = freshScope();
    const text = '{"a":"ü"}\r\n'.repeat(500);
    await api.write(scope, 1, text);
    const token = await tokenFor(api, scope);
    const gz = await rawGet(api.url, { authorization: `Bearer ${token}`, 'accept-encoding': 'gzip' });
    expect(gz.status).toBe(200);
    expect(gz.headers['content-encoding']).toBe('gzip');
    expect(gz.body.length).toBeLessThan(Buffer.byteLength(text) / 5);
    expect(gunzipSync(gz.body).equals(Buffer.from(text))).toBe(true);
    const plain = await rawGet(api.url, { authorization: `Bearer ${token}`, 'accept-encoding': 'identity' });
    expect(plain.headers['content-encoding']).toBeUndefined();
    expect(plain.body.equals(Buffer.from(text))).toBe(true);
    const none = await rawGet(api.url, { authorization: `Bearer ${token}` });
    expect(none.headers['content-encoding']).toBeUndefined();
    expect(none.body.equals(Buffer.from(text))).toBe(true);
  });

  it('rejects a body that claims gzip but is not, and unknown content codings, without changing the store', async () => {
    const { api } = ctx;
    const scope = freshScope();
    const token = await api.token(scope, { runId: 1 });
    const json = JSON.stringify({ terminalStatus: 'completed', snapshotJsonl: 'x', runId: 1 });
    const notGzip = await api.post(token, json, { 'content-encoding': 'gzip' });
    expect(notGzip.status).toBe(400);
    expect(await notGzip.json()).toEqual(errorBody(ERRORS.invalidJson));
    const zstd = await api.post(token, json, { 'content-encoding': 'zstd' });
    expect(zstd.status).toBe(415);
    expect(await zstd.json()).toEqual(errorBody(ERRORS.unsupportedEncoding));
    // Brotli (RFC 7932) is a supported request coding: a body that claims it but is not is 400 too.
    const notBrotli = await api.post(token, json, { 'content-encoding': 'br' });
    expect(notBrotli.status).toBe(400);
    expect(await notBrotli.json()).toEqual(errorBody(ERRORS.invalidJson));
    expect(await api.hydrate(scope)).toBeUndefined();
  });

  it('refuses a gzip bomb with 413 instead of inflating it', async () => {
    const { api, svc } = ctx;
    const scope = freshScope();
    const token = await api.token(scope, { runId: 1 });
    const huge = Buffer.alloc(svc.config.maxSnapshotBytes * 7, 0x20);
    const bomb = gzipSync(Buffer.concat([Buffer.from('{"terminalStatus":"completed","snapshotJsonl":"'), huge, Buffer.from('","runId":1}')]));
    expect(bomb.length).toBeLessThan(200_000);
    const res = await api.post(token, bomb, { 'content-encoding': 'gzip' });
    expect(res.status).toBe(413);
    expect(await res.json()).toEqual(errorBody(ERRORS.tooLarge));
  });
});

describe('integrity and conditional hydrate', () => {
  it('sends the sha256 as ETag and x-snapshot-sha256, and answers 304 with no body when it matches', async () => {
    const { api } = ctx;
    const scope = freshScope();
    await api.write(scope, 1, 'v1\n');
    const token = await tokenFor(api, scope);
    const first = await api.get(token);
    const digest = sha(Buffer.from('v1\n'));
    expect(first.headers.get('x-snapshot-sha256')).toBe(digest);
    expect(first.headers.get('etag')).toBe(`"${digest}"`);
    await first.arrayBuffer();
    const cached = await api.get(token, { 'if-none-match': `"${digest}"` });
    expect(cached.status).toBe(304);
    expect((await cached.arrayBuffer()).byteLength).toBe(0);
    expect(cached.headers.get('x-snapshot-run-id')).toBe('1');
    await api.write(scope, 2, 'v2\n');
    const stale = await api.get(token, { 'if-none-match': `"${digest}"` });
    expect(stale.status).toBe(200);
    expect(await stale.text()).toBe('v2\n');
  });
});

describe('large hydrate: 307 to a presigned S3 URL', () => {
  it('a plain fetch client follows the redirect and gets the exact bytes; Authorization is not forwarded', async () => {
    const { api } = ctx;
    const scope = freshScope();
    const big = Buffer.concat([fixture, fixture]); // 1.9 MB, stored as ~320 KB gzip > 256 KiB inline limit
    const commit = await uploadSnapshot(api, scope, 1, gzipSync(big), 'gzip');
    expect(commit.status).toBe(200);
    const token = await tokenFor(api, scope);
    const manual = await fetch(api.url, { headers: { authorization: `Bearer ${token}` }, redirect: 'manual' });
    expect(manual.status).toBe(307);
    const location = manual.headers.get('location')!;
    expect(new URL(location).origin).not.toBe(new URL(api.url).origin);
    expect(location).toContain('X-Amz-Signature=');
    expect(manual.headers.get('x-snapshot-sha256')).toBe(sha(big));
    const followed = await fetch(api.url, { headers: { authorization: `Bearer ${token}` } });
    expect(followed.status).toBe(200);
    expect(followed.redirected).toBe(true);
    expect(Buffer.from(await followed.arrayBuffer()).equals(big)).toBe(true);
  });

  it('answers 406 when the snapshot is too large to inline and the client refuses gzip', async () => {
    const { api } = ctx;
    const scope = freshScope();
    await uploadSnapshot(api, scope, 1, gzipSync(Buffer.concat([fixture, fixture])), 'gzip');
    const res = await api.get(await tokenFor(api, scope), { 'accept-encoding': 'identity' });
    expect(res.status).toBe(406);
    expect(await res.json()).toEqual(errorBody(ERRORS.notAcceptable));
  });

  it('a plain fetch GET of a 50 MB snapshot returns the exact bytes through the 307 path', async () => {
    const { api } = ctx;
    const scope = freshScope();
    const copies = Math.ceil((50 * 1024 * 1024) / fixture.length);
    const big = Buffer.concat(Array.from({ length: copies }, () => fixture)).subarray(0, 50 * 1024 * 1024);
    const commit = await uploadSnapshot(api, scope, 1, gzipSync(big, { level: 1 }), 'gzip');
    expect(commit.status).toBe(200);
    expect(((await commit.json()) as { bytes: number }).bytes).toBe(big.length);
    const res = await fetch(api.url, { headers: { authorization: `Bearer ${await tokenFor(api, scope)}` } });
    expect(res.status).toBe(200);
    expect(res.redirected).toBe(true);
    const got = Buffer.from(await res.arrayBuffer());
    expect(got.length).toBe(big.length);
    expect(got.equals(big)).toBe(true);
  }, 120_000);
});

describe('presigned uploads', () => {
  it('single-PUT identity upload commits and hydrates byte-exact', async () => {
    const { api } = ctx;
    const scope = freshScope();
    const res = await uploadSnapshot(api, scope, 4, fixture, 'identity');
    expect(res.status).toBe(200);
    const body = (await res.json()) as { id: number; sha256: string; bytes: number };
    expect(body).toMatchObject({ id: 4, sha256: sha(fixture), bytes: fixture.length });
    expect((await api.hydrate(scope))?.body.equals(fixture)).toBe(true);
  });

  it('multipart upload past the threshold commits and hydrates byte-exact', async () => {
    const { api } = ctx;
    const scope = freshScope();
    const data = Buffer.concat(Array.from({ length: 13 }, () => fixture)); // 12.7 MB identity → 3 parts of 5 MiB
    const token = await api.token(scope, { runId: 2 });
    const created = await createUpload(api, token, { runId: 2, bytes: data.length, contentEncoding: 'identity' });
    const ticket = (await created.json()) as Ticket;
    expect(ticket.parts).toHaveLength(3);
    const parts = await putUpload(ticket, data);
    const res = await api.post(token, { terminalStatus: 'completed', runId: 2, uploadId: ticket.uploadId, parts });
    expect(res.status).toBe(200);
    const got = await fetch(api.url, { headers: { authorization: `Bearer ${await tokenFor(api, scope)}` } });
    expect(Buffer.from(await got.arrayBuffer()).equals(data)).toBe(true);
  });

  it('rejects a multipart commit that S3 refuses (wrong part ETags) as upload_invalid', async () => {
    // s3rver assembles parts without checking their ETags; AWS answers InvalidPart. Inject that answer.
    const { api, svc } = ctx;
    const scope = freshScope();
    const data = Buffer.concat(Array.from({ length: 7 }, () => fixture)); // 6.8 MB → 2 parts
    const token = await api.token(scope, { runId: 2 });
    const ticket = (await (await createUpload(api, token, { runId: 2, bytes: data.length })).json()) as Ticket;
    const parts = (await putUpload(ticket, data))!;
    const plan = new FaultPlan().onCall((cmd) => {
      if (cmd === 'CompleteMultipartUploadCommand') throw Object.assign(new Error('One or more of the specified parts could not be found.'), { name: 'InvalidPart' });
    });
    const ids = { organizationId: scope.org, agentId: scope.agent, conversationId: scope.conv, issuedAt: Math.floor(Date.now() / 1000) };
    const result = await faultyStore(svc, plan).commitUpload(ids, { runId: 2, status: 'completed', uploadId: ticket.uploadId, parts });
    expect(result).toEqual({ kind: 'upload-invalid', reason: 'InvalidPart' });
    expect(await api.hydrate(scope)).toBeUndefined();
  });

  it('refuses an upload whose stored size differs from the announced size (400 upload_invalid, nothing stored)', async () => {
    const { api } = ctx;
    const scope = freshScope();
    const token = await api.token(scope, { runId: 3 });
    const created = await createUpload(api, token, { runId: 3, bytes: 10, contentEncoding: 'identity' }); // claims 10 bytes
    const ticket = (await created.json()) as Ticket;
    await putUpload(ticket, Buffer.from('actually longer than ten bytes\n'));
    const res = await api.post(token, { terminalStatus: 'completed', runId: 3, uploadId: ticket.uploadId });
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual(errorBody(ERRORS.uploadInvalid));
    expect(await api.hydrate(scope)).toBeUndefined();
  });

  it('measures the bytes it keeps and answers a repeated commit with 409', async () => {
    const { api } = ctx;
    const scope = freshScope();
    const token = await api.token(scope, { runId: 3 });
    const data = Buffer.from('exactly what was announced\n');
    const created = await createUpload(api, token, { runId: 3, bytes: data.length, contentEncoding: 'identity' });
    const ticket = (await created.json()) as Ticket;
    await putUpload(ticket, data);
    const res = await api.post(token, { terminalStatus: 'completed', runId: 3, uploadId: ticket.uploadId });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { bytes: number }).bytes).toBe(data.length);
    const again = await api.post(token, { terminalStatus: 'completed', runId: 3, uploadId: ticket.uploadId });
    expect(again.status).toBe(409);
    expect(await again.json()).toEqual(errorBody(ERRORS.alreadyExists));
  });

  it('rejects uploads that are missing, not gzip when declared gzip, empty, or over the limit — store unchanged', async () => {
    const { api } = ctx;
    const scope = freshScope();
    const token = await api.token(scope, { runId: 1 });
    const ticketFor = async (contentEncoding: string, bytes = 100) =>
      (await (await createUpload(api, token, { runId: 1, bytes, contentEncoding })).json()) as Ticket;

    const missing = await ticketFor('gzip');
    const notFound = await api.post(token, { terminalStatus: 'completed', runId: 1, uploadId: missing.uploadId });
    expect(await notFound.json()).toEqual(errorBody(ERRORS.uploadNotFound));

    const forged = await api.post(token, { terminalStatus: 'completed', runId: 1, uploadId: 'not-a-real-upload-id' });
    expect(forged.status).toBe(400);
    expect(await forged.json()).toEqual(errorBody(ERRORS.uploadNotFound));

    const bad = await ticketFor('gzip');
    await putUpload(bad, Buffer.from('this is not gzip'));
    const invalid = await api.post(token, { terminalStatus: 'completed', runId: 1, uploadId: bad.uploadId });
    expect(await invalid.json()).toEqual(errorBody(ERRORS.uploadInvalid));

    const empty = await ticketFor('identity');
    await putUpload(empty, Buffer.alloc(0));
    const emptyRes = await api.post(token, { terminalStatus: 'completed', runId: 1, uploadId: empty.uploadId });
    expect(await emptyRes.json()).toEqual(errorBody(ERRORS.uploadInvalid));

    const tooBig = await createUpload(api, token, { runId: 1, bytes: 129 * 1024 * 1024, contentEncoding: 'gzip' });
    expect(tooBig.status).toBe(413);
    const bomb = await ticketFor('gzip');
    await putUpload(bomb, gzipSync(Buffer.alloc(129 * 1024 * 1024)));
    const bombRes = await api.post(token, { terminalStatus: 'completed', runId: 1, uploadId: bomb.uploadId });
    expect(bombRes.status).toBe(413);

    expect(await api.hydrate(scope)).toBeUndefined();
  });

  it('validates the upload request: runId, bytes, contentEncoding, scope', async () => {
    const { api } = ctx;
    const scope = freshScope();
    const token = await api.token(scope, { runId: 1 });
    const expectErr = async (body: unknown, spec: (typeof ERRORS)[keyof typeof ERRORS], t = token) => {
      const res = await createUpload(api, t, body);
      expect(res.status).toBe(spec.status);
      expect(await res.json()).toEqual(errorBody(spec));
    };
    await expectErr({ bytes: 5 }, ERRORS.invalidRunId);
    await expectErr({ runId: 1, bytes: 0 }, ERRORS.invalidUploadSize);
    await expectErr({ runId: 1, bytes: 5, contentEncoding: 'br' }, ERRORS.invalidContentEncoding);
    await expectErr({ runId: 2, bytes: 5 }, ERRORS.runOutOfScope);
    await expectErr({ runId: 1, bytes: 5 }, ERRORS.runOutOfScope, await api.token(scope));
  });

  it('commits uploads for ids full of path tricks and non-ASCII (CopySource encoding)', async () => {
    const { api } = ctx;
    const base = freshScope();
    const scope = { org: `${base.conv}/../x`, agent: '%2F.. ~', conv: 'ü 😀+&?#' };
    const res = await uploadSnapshot(api, scope, 1, gzipSync(fixture), 'gzip');
    expect(res.status).toBe(200);
    expect((await api.hydrate(scope))?.body.equals(fixture)).toBe(true);
    expect(await api.clear(scope)).toBe(1);
  });

  it('an upload cannot be committed from another conversation', async () => {
    const { api } = ctx;
    const a = freshScope();
    const b = freshScope();
    const tokenA = await api.token(a, { runId: 1 });
    const ticket = (await (await createUpload(api, tokenA, { runId: 1, bytes: 5 })).json()) as Ticket;
    await putUpload(ticket, Buffer.from('A\'s data\n'));
    const tokenB = await api.token(b, { runId: 1 });
    const res = await api.post(tokenB, { terminalStatus: 'completed', runId: 1, uploadId: ticket.uploadId });
    expect(await res.json()).toEqual(errorBody(ERRORS.uploadNotFound));
    expect(await api.hydrate(b)).toBeUndefined();
  });

  it('DELETE sweeps uncommitted uploads of the conversation too', async () => {
    const { api, svc } = ctx;
    const scope = freshScope();
    const token = await api.token(scope, { runId: 1, issuedAt: Math.floor(Date.now() / 1000) - 3 });
    const ticket = (await (await createUpload(api, token, { runId: 1, bytes: 5 })).json()) as Ticket;
    await putUpload(ticket, Buffer.from('pending\n'));
    const { ListObjectsV2Command } = await import('@aws-sdk/client-s3');
    const count = async () => (await svc.s3.send(new ListObjectsV2Command({ Bucket: svc.config.bucketName, Prefix: 'uploads/' }))).Contents?.filter((o) => o.Key!.includes(encodeURIComponent(scope.conv).replaceAll('.', '%2E'))).length ?? 0;
    expect(await count()).toBe(1);
    await api.clear(scope);
    expect(await count()).toBe(0);
  });
});
