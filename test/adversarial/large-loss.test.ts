import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeleteObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { Logger } from '@aws-lambda-powertools/logger';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { conversationKey } from '../../functions/lib/ids.js';
import { startLocalService, type LocalService } from '../../local/service.js';
import { hydrateSnapshot } from '../../worker-client/src/index.js';
import { Api, freshScope, type Scope } from '../helpers/service.js';

/**
 * Adversarial: "loss is loud" (HEAD naming a missing object → 500) for snapshots too large to answer
 * inline. With a small INLINE_RESPONSE_MAX_BYTES every snapshot goes through the 307 path, which hands
 * out a presigned URL (before the fix, without checking that the object HEAD names exists).
 *
 * Expected: a GET whose HEAD names a missing object answers 500 whatever the snapshot's size (never a
 * redirect to a 404, which a worker reads as "no history" and then overwrites the conversation), and
 * the worker-client reports a failure, not `not_found`.
 */
let svc: LocalService;
let api: Api;
let dir: string;
beforeAll(async () => {
  svc = await startLocalService({
    port: 0,
    env: { ...process.env, INLINE_RESPONSE_MAX_BYTES: '64' },
    logger: new Logger({ serviceName: 'test', logLevel: 'SILENT' }),
  });
  api = new Api(svc.url, (c) => svc.mintToken(c));
  dir = await mkdtemp(join(tmpdir(), 'adv-large-loss-'));
});
afterAll(async () => {
  await svc?.stop();
  await rm(dir, { recursive: true, force: true });
});

const ids = (s: Scope) => ({ organizationId: s.org, agentId: s.agent, conversationId: s.conv });

async function loseObject(scope: Scope): Promise<void> {
  const { Contents } = await svc.s3.send(new ListObjectsV2Command({ Bucket: svc.config.bucketName, Prefix: `snapshots/${conversationKey(ids(scope))}/` }));
  expect(Contents).toHaveLength(1);
  await svc.s3.send(new DeleteObjectCommand({ Bucket: svc.config.bucketName, Key: Contents![0]!.Key! }));
}

/** Incompressible enough that the stored gzip is over the 64-byte inline limit. */
const precious = () => `${randomBytes(300).toString('base64')}\n`;

describe('loss is loud past the inline limit', () => {
  it('sanity: an intact large snapshot is served by a 307 whose URL returns the bytes', async () => {
    const scope = freshScope('large-ok');
    const body = precious();
    expect((await api.write(scope, 1, body)).status).toBe(200);
    const res = await fetch(api.url, { headers: { authorization: `Bearer ${await api.token(scope)}`, 'accept-encoding': 'gzip' }, redirect: 'manual' });
    expect(res.status).toBe(307);
    const obj = await fetch(res.headers.get('location')!);
    expect(obj.status).toBe(200);
    await obj.body?.cancel();
  });

  it('GET of a conversation whose large object is gone answers 500, not a 307 to a missing object', async () => {
    const scope = freshScope('large-lost');
    expect((await api.write(scope, 1, precious())).status).toBe(200);
    await loseObject(scope);
    const res = await fetch(api.url, { headers: { authorization: `Bearer ${await api.token(scope)}`, 'accept-encoding': 'gzip' }, redirect: 'manual' });
    await res.body?.cancel();
    expect(res.status).toBe(500);
  });

  it('the worker-client hydrating a conversation whose large object is gone fails loudly and keeps the local file', async () => {
    const scope = freshScope('large-lost-wc');
    expect((await api.write(scope, 1, precious())).status).toBe(200);
    await loseObject(scope);
    const file = join(dir, `${scope.conv}.jsonl`);
    await writeFile(file, 'local copy\n');
    const outcome = await hydrateSnapshot({
      sessionFile: file,
      gatewayUrl: svc.url,
      workerToken: await api.token(scope),
      backoffBaseMs: 5,
      backoffMaxMs: 20,
      timeoutMs: 2_000,
      deadlineMs: 8_000,
    }).then(
      (r) => r.status,
      (e: unknown) => `threw ${(e as { code?: string }).code ?? String(e)}`,
    );
    expect(outcome).toMatch(/^threw /);
    expect(await readFile(file, 'utf8')).toBe('local copy\n');
  });
});
