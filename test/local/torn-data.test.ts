/**
 * Fault 5: after `kill -9` of `npm start` at any moment, `npm start` comes back on the same data.
 * The known torn state: a kill while s3rver writes an object leaves its metadata file empty; s3rver's
 * listing (and so its HeadBucket) then fails, and provisioning used to read that as "no bucket", try
 * CreateBucket and refuse to start ("bucket already exists"). Now the torn object is moved aside to
 * DATA_DIR/quarantine/ with one line on stderr, and everything else is served.
 */
import { mkdtemp, readdir, rm, stat, writeFile, mkdir, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mintDevToken, loadOrCreateDevSecret } from '../../local/dev-secret.js';
import { ensureBucket } from '../../local/provision.js';
import { startNpm } from './support.js';

const BUCKET = 'transcript-store-local';
let dataDir: string;

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'torn-data-'));
});
afterAll(async () => {
  await rm(dataDir, { recursive: true, force: true });
});

async function filesUnder(dir: string, suffix: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string) => {
    for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.name.endsWith(suffix)) out.push(p);
    }
  };
  await walk(dir);
  return out.sort();
}

const scope = (conv: string) => ({ org: 'torn', agent: 'bot', conv });

async function write(url: string, conv: string, runId: number, body: string): Promise<number> {
  const secret = await loadOrCreateDevSecret(dataDir, {});
  const token = await mintDevToken(secret, { ...scope(conv), runId });
  const res = await fetch(`${url}/worker/transcript/snapshot`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ terminalStatus: 'completed', snapshotJsonl: body, runId }),
  });
  await res.body?.cancel();
  return res.status;
}

async function read(url: string, conv: string): Promise<{ status: number; body: string }> {
  const secret = await loadOrCreateDevSecret(dataDir, {});
  const token = await mintDevToken(secret, scope(conv));
  const res = await fetch(`${url}/worker/transcript/snapshot`, { headers: { authorization: `Bearer ${token}` } });
  return { status: res.status, body: await res.text() };
}

describe('npm start after kill -9 on torn emulator files', () => {
  it('starts, quarantines the torn object with one line, and serves everything else', async () => {
    // 1. Real data: conversation "kept", then a kill -9 after conversation "torn" was written.
    const first = await startNpm(dataDir);
    expect(await write(first.url, 'kept', 1, 'kept bytes\n')).toBe(200);
    const s3Dir = join(dataDir, 's3', BUCKET);
    const before = new Set(await filesUnder(s3Dir, '._S3rver_metadata.json'));
    expect(await write(first.url, 'torn', 1, 'torn bytes\n')).toBe(200);
    expect(await first.stop('SIGKILL')).toBe('SIGKILL');

    // 2. The state a kill mid-write leaves: the newest object's metadata file empty (truncated by
    //    writeFile, never filled), plus an empty md5 sidecar on another object.
    const tornMeta = (await filesUnder(s3Dir, '._S3rver_metadata.json')).filter((f) => !before.has(f));
    expect(tornMeta).toHaveLength(1);
    await truncate(tornMeta[0]!, 0);
    const strayDir = join(s3Dir, 'stray');
    await mkdir(strayDir, { recursive: true });
    await writeFile(join(strayDir, 'x._S3rver_object'), 'stray');
    await writeFile(join(strayDir, 'x._S3rver_object.md5'), '');

    // 3. npm start comes back on the same data.
    const second = await startNpm(dataDir);
    try {
      const repairLines = second.stderr().split('\n').filter((l) => l.includes('quarantine'));
      expect(repairLines).toHaveLength(1);
      expect(repairLines[0]).toContain('torn S3 object');
      expect(await read(second.url, 'kept')).toEqual({ status: 200, body: 'kept bytes\n' });
      // The torn conversation's object was set aside: loss is loud (500, never a 404 that would let the
      // next run silently start over), and the conversation can be written again.
      const torn = await read(second.url, 'torn');
      expect(torn.status).toBe(500);
      expect(await write(second.url, 'torn', 2, 'rewritten\n')).toBe(200);
      expect(await read(second.url, 'torn')).toEqual({ status: 200, body: 'rewritten\n' });
    } finally {
      await second.stop();
    }

    // 4. The torn pair was moved aside, not deleted.
    const quarantined = await filesUnder(join(dataDir, 'quarantine'), '');
    expect(quarantined.some((f) => f.endsWith('._S3rver_metadata.json'))).toBe(true);
    expect(quarantined.some((f) => f.endsWith('._S3rver_object'))).toBe(true);
    expect((await stat(tornMeta[0]!).catch(() => undefined)) === undefined).toBe(true);
    expect(relative(dataDir, quarantined[0]!)).toMatch(/^quarantine\//);
  }, 180_000);
});

describe('ensureBucket', () => {
  function fakeS3(head: () => unknown, create: () => unknown): { client: S3Client; creates: number } {
    const state = { creates: 0 };
    const client = {
      send: async (cmd: { constructor: { name: string } }) => {
        if (cmd.constructor.name === 'HeadBucketCommand') return head();
        state.creates++;
        return create();
      },
    } as unknown as S3Client;
    return {
      client,
      get creates() {
        return state.creates;
      },
    };
  }
  const s3err = (name: string, status: number) => Object.assign(new Error(name), { name, $metadata: { httpStatusCode: status } });

  it('creates the bucket only when HeadBucket says it does not exist', async () => {
    for (const notFound of [s3err('NotFound', 404), s3err('NoSuchBucket', 404)]) {
      const s3 = fakeS3(
        () => {
          throw notFound;
        },
        () => ({}),
      );
      await ensureBucket(s3.client, BUCKET);
      expect(s3.creates).toBe(1);
    }
  });

  it('does not try to create the bucket on any other HeadBucket error, and says which', async () => {
    const s3 = fakeS3(
      () => {
        throw s3err('InternalError', 500);
      },
      () => {
        throw s3err('BucketAlreadyExists', 409);
      },
    );
    await expect(ensureBucket(s3.client, BUCKET)).rejects.toThrow(/HeadBucket.*InternalError.*500/);
    expect(s3.creates).toBe(0);
  });

  it('treats losing a creation race as success', async () => {
    const s3 = fakeS3(
      () => {
        throw s3err('NotFound', 404);
      },
      () => {
        throw s3err('BucketAlreadyOwnedByYou', 409);
      },
    );
    await ensureBucket(s3.client, BUCKET);
    expect(s3.creates).toBe(1);
  });
});
