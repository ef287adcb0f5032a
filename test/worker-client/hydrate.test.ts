import { createHash } from 'node:crypto';
import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { LocalService } from '../../local/service.js';
import { hydrateFromSnapshot, hydrateSnapshot, TranscriptStoreError, writeSnapshot } from '../../worker-client/src/index.js';
import { collectEvents, conversation, FAST, fakeGateway, tempFilesIn, useServiceAndTempDir } from './support.js';

const sha = (s: string | Buffer) => createHash('sha256').update(s).digest('hex');

let svc: LocalService;
let dir: string;
useServiceAndTempDir(
  (s) => (svc = s),
  (d) => (dir = d),
);

async function seed(c: Awaited<ReturnType<typeof conversation>>, runId: number, text: string) {
  const src = join(dir, `seed-${runId}.jsonl`);
  await writeFile(src, text);
  const r = await writeSnapshot({ sessionFile: src, gatewayUrl: svc.url, workerToken: await c.runToken(runId), terminalStatus: 'completed', runId });
  expect(r.status).toBe('written');
}

describe('hydrateFromSnapshot against the local service', () => {
  it('returns false on 404 and creates no file or directory', async () => {
    const c = await conversation(svc);
    const sessionFile = join(dir, 'nested', 'session.jsonl');
    expect(await hydrateFromSnapshot({ sessionFile, gatewayUrl: svc.url, workerToken: c.convToken })).toBe(false);
    await expect(stat(join(dir, 'nested'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('returns false on 404 and leaves an existing file byte-identical', async () => {
    const c = await conversation(svc);
    const sessionFile = join(dir, 'session.jsonl');
    await writeFile(sessionFile, 'LOCAL\n');
    expect(await hydrateFromSnapshot({ sessionFile, gatewayUrl: svc.url, workerToken: c.convToken })).toBe(false);
    expect(await readFile(sessionFile, 'utf8')).toBe('LOCAL\n');
  });

  it('writes the latest completed snapshot byte-exact, creating parent directories', async () => {
    const c = await conversation(svc);
    const text = '{"type":"session","id":"é🚀"}\n{"type":"message","n":1}\n';
    await seed(c, 3, 'older\n');
    await seed(c, 9, text);
    const sessionFile = join(dir, '.openclaw', 'session.jsonl');
    const r = await hydrateSnapshot({ sessionFile, gatewayUrl: svc.url, workerToken: c.convToken });
    expect(r).toMatchObject({ status: 'hydrated', runId: 9, bytes: Buffer.byteLength(text), sha256: sha(text), verified: true, attempts: 1 });
    expect(await readFile(sessionFile, 'utf8')).toBe(text);
    expect(await tempFilesIn(join(dir, '.openclaw'))).toEqual([]);
  });

  it('replaces an existing different file and keeps its permission bits', async () => {
    const c = await conversation(svc);
    await seed(c, 1, 'remote\n');
    const sessionFile = join(dir, 'session.jsonl');
    await writeFile(sessionFile, 'stale local content that is longer\n');
    await chmod(sessionFile, 0o640);
    expect(await hydrateFromSnapshot({ sessionFile, gatewayUrl: svc.url, workerToken: c.convToken })).toBe(true);
    expect(await readFile(sessionFile, 'utf8')).toBe('remote\n');
    expect((await stat(sessionFile)).mode & 0o777).toBe(0o640);
  });

  it('sends If-None-Match with the local sha256 and returns true without rewriting on 304', async () => {
    const c = await conversation(svc);
    await seed(c, 1, 'same\n');
    const sessionFile = join(dir, 'session.jsonl');
    await writeFile(sessionFile, 'same\n');
    const before = await stat(sessionFile);
    const { events, logger } = collectEvents();
    const r = await hydrateSnapshot({ sessionFile, gatewayUrl: svc.url, workerToken: c.convToken, logger });
    expect(r).toMatchObject({ status: 'not_modified', sha256: sha('same\n') });
    expect((await stat(sessionFile)).ino).toBe(before.ino);
    expect(events.some((e) => e.event === 'not_modified')).toBe(true);
    expect(await readFile(sessionFile, 'utf8')).toBe('same\n');
  });

  it('throws http_4xx with status 401 for an invalid token, without retrying', async () => {
    const sessionFile = join(dir, 'session.jsonl');
    await writeFile(sessionFile, 'keep\n');
    const { events, logger } = collectEvents();
    const err = await hydrateFromSnapshot({ sessionFile, gatewayUrl: svc.url, workerToken: 'not-a-jwt', logger, ...FAST }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TranscriptStoreError);
    expect(err).toMatchObject({ code: 'http_4xx', status: 401, serverCode: 'invalid_token', attempts: 1 });
    expect(events.filter((e) => e.event === 'attempt')).toHaveLength(1);
    expect(await readFile(sessionFile, 'utf8')).toBe('keep\n');
  });

  it('never puts the token in errors or log events', async () => {
    const token = 'secret-token-value-123';
    const { events, logger } = collectEvents();
    const err = await hydrateFromSnapshot({ sessionFile: join(dir, 's.jsonl'), gatewayUrl: svc.url, workerToken: token, logger }).catch((e: unknown) => e);
    const e = err as TranscriptStoreError;
    const serialized = JSON.stringify(e) + e.message + String(e.stack) + JSON.stringify(events);
    expect(events.length).toBeGreaterThan(0);
    expect(serialized).not.toContain(token);
  });

  it('is silent without a logger', async () => {
    const c = await conversation(svc);
    await seed(c, 1, 'x\n');
    const writes: unknown[] = [];
    const orig = { out: process.stdout.write, err: process.stderr.write, log: console.log, warn: console.warn, error: console.error, info: console.info, debug: console.debug };
    const spy = (...a: unknown[]) => {
      writes.push(a);
      return true;
    };
    process.stdout.write = spy as typeof process.stdout.write;
    process.stderr.write = spy as typeof process.stderr.write;
    console.log = console.warn = console.error = console.info = console.debug = spy;
    try {
      await hydrateFromSnapshot({ sessionFile: join(dir, 's.jsonl'), gatewayUrl: svc.url, workerToken: c.convToken });
      await hydrateFromSnapshot({ sessionFile: join(dir, 's.jsonl'), gatewayUrl: svc.url, workerToken: 'bad' }).catch(() => {});
    } finally {
      process.stdout.write = orig.out;
      process.stderr.write = orig.err;
      Object.assign(console, { log: orig.log, warn: orig.warn, error: orig.error, info: orig.info, debug: orig.debug });
    }
    expect(writes).toEqual([]);
  });

  it('fails with io, leaves the target intact and no temp file when the rename cannot happen', async () => {
    const c = await conversation(svc);
    await seed(c, 1, 'remote\n');
    // A non-empty directory where the session file should be: rename(2) over it fails.
    const sessionFile = join(dir, 'session.jsonl');
    await mkdir(sessionFile);
    await writeFile(join(sessionFile, 'inside'), 'x');
    const err = await hydrateFromSnapshot({ sessionFile, gatewayUrl: svc.url, workerToken: c.convToken, ...FAST }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'io' });
    expect(await readFile(join(sessionFile, 'inside'), 'utf8')).toBe('x');
    expect(await tempFilesIn(dir)).toEqual([]);
  });

  it('throws aborted and touches nothing when the caller signal is already aborted', async () => {
    const c = await conversation(svc);
    await seed(c, 1, 'remote\n');
    const sessionFile = join(dir, 'session.jsonl');
    await writeFile(sessionFile, 'keep\n');
    const ac = new AbortController();
    ac.abort();
    const err = await hydrateFromSnapshot({ sessionFile, gatewayUrl: svc.url, workerToken: c.convToken, signal: ac.signal }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'aborted', attempts: 0 });
    expect(await readFile(sessionFile, 'utf8')).toBe('keep\n');
  });
});

describe('hydrate integrity and redirects (fake gateway)', () => {
  it('still works when a server ignores If-None-Match and answers 200', async () => {
    const gw = await fakeGateway((_req, res) => {
      res.writeHead(200, { 'x-snapshot-sha256': sha('new\n') });
      res.end('new\n');
    });
    try {
      const sessionFile = join(dir, 'session.jsonl');
      await writeFile(sessionFile, 'old\n');
      expect(await hydrateFromSnapshot({ sessionFile, gatewayUrl: gw.url, workerToken: 't' })).toBe(true);
      expect(gw.requests[0]?.headers['if-none-match']).toBe(`"${sha('old\n')}"`);
      expect(await readFile(sessionFile, 'utf8')).toBe('new\n');
    } finally {
      await gw.close();
    }
  });

  it('rejects a body that does not match x-snapshot-sha256 and keeps the old file', async () => {
    const gw = await fakeGateway((_req, res) => {
      res.writeHead(200, { 'x-snapshot-sha256': sha('the real body\n') });
      res.end('a tampered body\n');
    });
    try {
      const sessionFile = join(dir, 'session.jsonl');
      await writeFile(sessionFile, 'old\n');
      const err = await hydrateFromSnapshot({ sessionFile, gatewayUrl: gw.url, workerToken: 't', ...FAST, retries: 2 }).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'integrity', attempts: 3 });
      expect(gw.requests).toHaveLength(3);
      expect(await readFile(sessionFile, 'utf8')).toBe('old\n');
      expect(await tempFilesIn(dir)).toEqual([]);
    } finally {
      await gw.close();
    }
  });

  it('checks a strong sha256 ETag but ignores an MD5-style ETag', async () => {
    let etag = '';
    const gw = await fakeGateway((_req, res) => {
      res.writeHead(200, { etag });
      res.end('body\n');
    });
    try {
      const sessionFile = join(dir, 'session.jsonl');
      etag = `"${sha('other')}"`;
      await expect(hydrateFromSnapshot({ sessionFile, gatewayUrl: gw.url, workerToken: 't', ...FAST, retries: 0 })).rejects.toMatchObject({ code: 'integrity' });
      etag = '"d41d8cd98f00b204e9800998ecf8427e"';
      const r = await hydrateSnapshot({ sessionFile, gatewayUrl: gw.url, workerToken: 't', ...FAST });
      expect(r).toMatchObject({ status: 'hydrated', verified: false });
      expect(await readFile(sessionFile, 'utf8')).toBe('body\n');
    } finally {
      await gw.close();
    }
  });

  it('follows a 307 to another origin without the token and verifies the digest announced on the redirect', async () => {
    let served = 'big snapshot\n';
    const storage = await fakeGateway((_req, res) => {
      res.writeHead(200, { etag: '"0123456789abcdef0123456789abcdef"' }); // S3-style MD5 ETag
      res.end(served);
    });
    const gw = await fakeGateway((_req, res) => {
      res.writeHead(307, { location: `${storage.url.replace('127.0.0.1', 'localhost')}/bucket/key?X-Amz-Signature=abc`, 'x-snapshot-sha256': sha('big snapshot\n'), 'x-snapshot-run-id': '12' });
      res.end();
    });
    try {
      const sessionFile = join(dir, 'session.jsonl');
      const r = await hydrateSnapshot({ sessionFile, gatewayUrl: `${gw.url}/lobu`, workerToken: 'tok', ...FAST });
      expect(r).toMatchObject({ status: 'hydrated', runId: 12, verified: true });
      expect(gw.requests[0]?.url).toBe('/lobu/worker/transcript/snapshot');
      expect(gw.requests[0]?.headers.authorization).toBe('Bearer tok');
      expect(storage.requests[0]?.headers.authorization).toBeUndefined();
      expect(await readFile(sessionFile, 'utf8')).toBe('big snapshot\n');

      served = 'big snapshoT\n'; // storage returns something else than the gateway announced
      await writeFile(sessionFile, 'old\n');
      await expect(hydrateFromSnapshot({ sessionFile, gatewayUrl: gw.url, workerToken: 'tok', ...FAST, retries: 1 })).rejects.toMatchObject({ code: 'integrity' });
      expect(await readFile(sessionFile, 'utf8')).toBe('old\n');
      expect(await tempFilesIn(dir)).toEqual([]);
    } finally {
      await gw.close();
      await storage.close();
    }
  });

  it('retries a connection cut mid-body as a network error and keeps the old file', async () => {
    const gw = await fakeGateway((req, res) => {
      res.writeHead(200, { 'content-length': '100' });
      res.write('only a bit');
      setTimeout(() => req.socket.destroy(), 5);
    });
    try {
      const sessionFile = join(dir, 'session.jsonl');
      await writeFile(sessionFile, 'old\n');
      const err = await hydrateFromSnapshot({ sessionFile, gatewayUrl: gw.url, workerToken: 't', ...FAST, retries: 1 }).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'network', attempts: 2 });
      expect(await readFile(sessionFile, 'utf8')).toBe('old\n');
      expect(await tempFilesIn(dir)).toEqual([]);
    } finally {
      await gw.close();
    }
  });
});
