/**
 * Fault 4: no request can crash the local service. s3rver 3.7.1's filesystem store pipes streams
 * without error handlers, so a storage-side stream error used to be an uncaughtException that killed
 * `npm start` with every conversation in flight. Each case runs against a real `npm start` child (the
 * emulators in its process) and asserts the answer AND that the child is still serving afterwards.
 */
import { request } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ERRORS, errorBody, SNAPSHOT_PATH, UPLOADS_PATH } from '../../functions/lib/contract.js';
import { loadOrCreateDevSecret, mintDevToken } from '../../local/dev-secret.js';
import { startNpm, type NpmStart } from './support.js';

const BUCKET = 'transcript-store-local';
const MiB = 1024 * 1024;
let dataDir: string;
let svc: NpmStart;
let s3: S3Client;

/** (Re)starts the child when there is none or the previous case killed it, so each case stands alone. */
async function ensureRunning(): Promise<void> {
  if (svc?.alive()) {
    // A crash of the previous case may not have been reaped yet: probe, and on failure wait for the exit.
    const ok = await fetch(`${svc.url}${SNAPSHOT_PATH}`).then(
      async (r) => (await r.body?.cancel(), true),
      () => false,
    );
    if (ok) return;
    await svc.stop('SIGKILL');
  }
  s3?.destroy();
  // Small multipart settings, so the service's own multipart commit can be exercised with 6 MiB.
  svc = await startNpm(dataDir, { MULTIPART_THRESHOLD_BYTES: String(6 * MiB), MULTIPART_PART_BYTES: String(5 * MiB) });
  expect(svc.s3Endpoint).toMatch(/^http:/);
  s3 = new S3Client({
    endpoint: svc.s3Endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
    maxAttempts: 1,
  });
}

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 's3rver-crash-'));
});
beforeEach(ensureRunning, 60_000);
afterAll(async () => {
  s3?.destroy();
  await svc?.stop();
  await rm(dataDir, { recursive: true, force: true });
});

/** The service still answers (an unauthenticated GET → its contract 401), and the process is alive. */
async function expectServing(): Promise<void> {
  expect(svc.alive(), svc.stderr()).toBe(true);
  const res = await fetch(`${svc.url}${SNAPSHOT_PATH}`);
  expect(res.status).toBe(401);
  await res.body?.cancel();
  expect(svc.alive(), svc.stderr()).toBe(true);
}

/** The S3 error a command failed with: its code and HTTP status (fails if it succeeded). */
async function s3Error(p: Promise<unknown>): Promise<{ name: string; status: number | undefined }> {
  try {
    await p;
  } catch (err) {
    if (err instanceof S3ServiceException) return { name: err.name, status: err.$metadata.httpStatusCode };
    return { name: `not an S3 error: ${String(err)}`, status: undefined };
  }
  return { name: 'succeeded', status: 200 };
}

describe('s3rver stream errors never crash npm start', () => {
  it('CompleteMultipartUpload naming a part that was never uploaded → 400 InvalidPart', async () => {
    const key = 'crash/multipart-missing-part';
    const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: BUCKET, Key: key }));
    const err = await s3Error(
      s3.send(
        new CompleteMultipartUploadCommand({
          Bucket: BUCKET,
          Key: key,
          UploadId,
          MultipartUpload: { Parts: [{ PartNumber: 1, ETag: '"0123456789abcdef0123456789abcdef"' }] },
        }),
      ),
    );
    expect(err).toEqual({ name: 'InvalidPart', status: 400 });
    await expectServing();
  });

  it('CompleteMultipartUpload naming one uploaded and one missing part → 400 InvalidPart, and a correct retry still completes', async () => {
    const key = 'crash/multipart-partial';
    const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: BUCKET, Key: key }));
    const { ETag } = await s3.send(new UploadPartCommand({ Bucket: BUCKET, Key: key, UploadId, PartNumber: 1, Body: 'part one\n' }));
    const err = await s3Error(
      s3.send(
        new CompleteMultipartUploadCommand({
          Bucket: BUCKET,
          Key: key,
          UploadId,
          MultipartUpload: { Parts: [{ PartNumber: 1, ETag }, { PartNumber: 2, ETag }] },
        }),
      ),
    );
    expect(err).toEqual({ name: 'InvalidPart', status: 400 });
    await expectServing();
    await s3.send(new CompleteMultipartUploadCommand({ Bucket: BUCKET, Key: key, UploadId, MultipartUpload: { Parts: [{ PartNumber: 1, ETag }] } }));
    const got = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
    expect(await got.Body!.transformToString()).toBe('part one\n');
  });

  it('CompleteMultipartUpload of an unknown upload id → 404 NoSuchUpload', async () => {
    const err = await s3Error(
      s3.send(
        new CompleteMultipartUploadCommand({
          Bucket: BUCKET,
          Key: 'crash/no-such-upload',
          UploadId: 'f'.repeat(32),
          MultipartUpload: { Parts: [{ PartNumber: 1, ETag: '"x"' }] },
        }),
      ),
    );
    expect(err).toEqual({ name: 'NoSuchUpload', status: 404 });
    await expectServing();
  });

  it('a PUT whose object file cannot be created (a 300-byte key segment: ENAMETOOLONG) → a 4xx S3 error', async () => {
    const err = await s3Error(s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: `crash/${'n'.repeat(300)}`, Body: 'x' })));
    expect(err.status).toBeGreaterThanOrEqual(400);
    expect(err.status).toBeLessThan(500);
    await expectServing();
  });

  it('a PUT whose client disconnects mid-body', async () => {
    const { hostname, port } = new URL(svc.s3Endpoint);
    await new Promise<void>((resolve) => {
      // s3rver accepts unsigned requests in its default (non-strict) mode.
      const req = request({ host: hostname, port, method: 'PUT', path: `/${BUCKET}/crash/aborted`, headers: { 'content-length': '1000000' } });
      req.on('error', () => resolve());
      req.write(Buffer.alloc(1000, 1), () => setTimeout(() => req.destroy(), 50));
      req.on('close', () => resolve());
    });
    await expectServing();
  });

  it('PUTs racing DELETEs of the same conversation directory', async () => {
    // The store's PUT creates the key's directory, then opens the file; a DELETE of the last object
    // in that directory removes it in between (ENOENT on the write stream). Not deterministic by
    // nature, so many rounds; every PUT must either succeed or get an S3 error, and the service live.
    const dir = 'crash/race';
    let errors = 0;
    for (let round = 0; round < 40; round++) {
      const ops: Promise<unknown>[] = [];
      for (let i = 0; i < 8; i++) {
        const key = `${dir}/r${round}/k${i}`;
        ops.push(s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: 'y'.repeat(100) })).catch(() => errors++));
        ops.push(s3.send(new DeleteObjectCommand({ Bucket: BUCKET, Key: `${dir}/r${round}/k${(i + 1) % 8}` })).catch(() => errors++));
      }
      await Promise.all(ops);
      expect(svc.alive(), svc.stderr()).toBe(true);
    }
    await expectServing();
    expect(errors).toBeGreaterThanOrEqual(0);
  }, 120_000);

  it('through the service: a multipart commit naming a part that was never uploaded → 400 upload_invalid', async () => {
    const secret = await loadOrCreateDevSecret(dataDir, {});
    const token = await mintDevToken(secret, { org: 'crash', agent: 'bot', conv: 'multipart', runId: 1 });
    const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
    const bytes = 6 * MiB + 1;
    const created = await fetch(`${svc.url}${UPLOADS_PATH}`, { method: 'POST', headers, body: JSON.stringify({ runId: 1, bytes, contentEncoding: 'identity' }) });
    expect(created.status).toBe(200);
    const ticket = (await created.json()) as { uploadId: string; partBytes: number; parts: { partNumber: number; url: string }[] };
    expect(ticket.parts).toHaveLength(2);
    const put = await fetch(ticket.parts[0]!.url, { method: 'PUT', body: Buffer.alloc(ticket.partBytes, 0x61) });
    expect(put.status).toBe(200);
    const etag = put.headers.get('etag')!;
    const commit = await fetch(`${svc.url}${SNAPSHOT_PATH}`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ terminalStatus: 'completed', runId: 1, uploadId: ticket.uploadId, parts: [{ partNumber: 1, etag }, { partNumber: 2, etag }] }),
    });
    expect(commit.status).toBe(400);
    expect(await commit.json()).toEqual(errorBody(ERRORS.uploadInvalid));
    await expectServing();
  });
});
