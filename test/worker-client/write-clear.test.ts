import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { gunzipSync } from 'node:zlib';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { LocalService } from '../../local/service.js';
import { clearSnapshots, hydrateFromSnapshot, hydrateSnapshot, writeSnapshot } from '../../worker-client/src/index.js';
import { collectEvents, conversation, FAST, fakeGateway, tempFilesIn, useServiceAndTempDir } from './support.js';

let svc: LocalService;
let dir: string;
useServiceAndTempDir(
  (s) => (svc = s),
  (d) => (dir = d),
);

async function file(name: string, content: string | Buffer): Promise<string> {
  const p = join(dir, name);
  await writeFile(p, content);
  return p;
}

describe('writeSnapshot against the local service', () => {
  it('returns written with the server id and the byte count', async () => {
    const c = await conversation(svc);
    const text = '{"a":1}\n{"b":"ü"}\n';
    const r = await writeSnapshot({ sessionFile: await file('s.jsonl', text), gatewayUrl: svc.url, workerToken: await c.runToken(5), terminalStatus: 'completed', runId: 5 });
    expect(r).toEqual({
      status: 'written',
      id: expect.any(Number),
      bytes: Buffer.byteLength(text),
      attempts: 1,
      afterRetry: false,
      sha256: createHash('sha256').update(text).digest('hex'),
      transport: 'direct',
      encoding: 'gzip',
      wireBytes: expect.any(Number),
      parts: 0,
    });
  });

  it('returns duplicate when the run already has a snapshot (409 on the first attempt)', async () => {
    const c = await conversation(svc);
    const opts = { sessionFile: await file('s.jsonl', 'x\n'), gatewayUrl: svc.url, workerToken: await c.runToken(5), terminalStatus: 'completed' as const, runId: 5 };
    expect((await writeSnapshot(opts)).status).toBe('written');
    expect(await writeSnapshot(opts)).toMatchObject({ status: 'duplicate', attempts: 1 });
  });

  it.each(['failed', 'timeout', 'cancelled'] as const)('skips a %s run without sending a request', async (terminalStatus) => {
    const gw = await fakeGateway((_q, res) => res.end('{}'));
    try {
      const r = await writeSnapshot({ sessionFile: await file('s.jsonl', 'x\n'), gatewayUrl: gw.url, workerToken: 't', terminalStatus, runId: 1 });
      expect(r).toEqual({ status: 'skipped', reason: 'not_completed', attempts: 0 });
      expect(gw.requests).toHaveLength(0);
    } finally {
      await gw.close();
    }
  });

  it('skips a missing file and an empty file without a request', async () => {
    const gw = await fakeGateway((_q, res) => res.end('{}'));
    try {
      const base = { gatewayUrl: gw.url, workerToken: 't', terminalStatus: 'completed' as const, runId: 1 };
      expect(await writeSnapshot({ ...base, sessionFile: join(dir, 'nope.jsonl') })).toMatchObject({ status: 'skipped', reason: 'missing_file' });
      expect(await writeSnapshot({ ...base, sessionFile: await file('empty.jsonl', '') })).toMatchObject({ status: 'skipped', reason: 'empty_file' });
      expect(gw.requests).toHaveLength(0);
    } finally {
      await gw.close();
    }
  });

  it('refuses a file that is not valid UTF-8 instead of uploading a lossy copy', async () => {
    const gw = await fakeGateway((_q, res) => res.end('{}'));
    try {
      const r = await writeSnapshot({ sessionFile: await file('bad.jsonl', Buffer.from([0x7b, 0xff, 0xfe, 0x7d, 0x0a])), gatewayUrl: gw.url, workerToken: 't', terminalStatus: 'completed', runId: 1 });
      expect(r).toMatchObject({ status: 'failed', reason: 'not_utf8', attempts: 0 });
      expect(gw.requests).toHaveLength(0);
    } finally {
      await gw.close();
    }
  });

  it('keeps a leading byte-order mark and CRLF line endings byte-exact through write and hydrate', async () => {
    const c = await conversation(svc);
    const bytes = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('{"a":1}\r\n{"b":2}\r\n')]);
    const w = await writeSnapshot({ sessionFile: await file('bom.jsonl', bytes), gatewayUrl: svc.url, workerToken: await c.runToken(1), terminalStatus: 'completed', runId: 1 });
    expect(w).toMatchObject({ status: 'written', bytes: bytes.length });
    const target = join(dir, 'out.jsonl');
    const h = await hydrateSnapshot({ sessionFile: target, gatewayUrl: svc.url, workerToken: c.convToken });
    expect(h).toMatchObject({ status: 'hydrated', sha256: createHash('sha256').update(bytes).digest('hex') });
  });

  it('reports skipped/reset when the conversation was cleared after the run token was issued', async () => {
    const c = await conversation(svc);
    const oldRunToken = await c.runToken(8, Math.floor(Date.now() / 1000) - 60);
    expect(await clearSnapshots({ gatewayUrl: svc.url, workerToken: c.convToken })).toMatchObject({ status: 'cleared' });
    const r = await writeSnapshot({ sessionFile: await file('s.jsonl', 'old history\n'), gatewayUrl: svc.url, workerToken: oldRunToken, terminalStatus: 'completed', runId: 8 });
    expect(r).toEqual({ status: 'skipped', reason: 'reset', attempts: 1 });
    expect(await hydrateFromSnapshot({ sessionFile: join(dir, 'h.jsonl'), gatewayUrl: svc.url, workerToken: c.convToken })).toBe(false);
  });

  it.each([
    ['an invalid token', 'unauthorized', 401, async () => 'garbage'],
    ['a token for another run', 'forbidden', 403, null],
  ] as const)('fails without retry on %s', async (_label, reason, httpStatus, tokenFn) => {
    const c = await conversation(svc);
    const token = tokenFn ? await tokenFn() : await c.runToken(99);
    const { events, logger } = collectEvents();
    const r = await writeSnapshot({ sessionFile: await file('s.jsonl', 'x\n'), gatewayUrl: svc.url, workerToken: token, terminalStatus: 'completed', runId: 5, logger, ...FAST });
    expect(r).toMatchObject({ status: 'failed', reason, httpStatus, attempts: 1 });
    expect(events.filter((e) => e.event === 'attempt')).toHaveLength(1);
  });

  it('on 413 tries a presigned upload once (no retries), then fails with too_large if that is refused too', async () => {
    const gw = await fakeGateway((_q, res) => {
      res.writeHead(413, { 'content-type': 'application/json' });
      res.end('{"error":"Snapshot too large","code":"snapshot_too_large"}');
    });
    try {
      const r = await writeSnapshot({ sessionFile: await file('s.jsonl', 'x\n'), gatewayUrl: gw.url, workerToken: 't', terminalStatus: 'completed', runId: 1, ...FAST });
      expect(r).toMatchObject({ status: 'failed', reason: 'too_large', httpStatus: 413, serverCode: 'snapshot_too_large', attempts: 2 });
      expect(gw.requests.map((q) => q.url)).toEqual(['/worker/transcript/snapshot', '/worker/transcript/snapshot/uploads']);
      expect(JSON.parse(gw.requests[1]!.body)).toEqual({ runId: 1, bytes: expect.any(Number), contentEncoding: 'gzip' });
      expect(await tempFilesIn(dir)).toEqual([]);
    } finally {
      await gw.close();
    }
  });

  it('never throws: a refused connection becomes failed/network after its retries', async () => {
    const gw = await fakeGateway(() => {});
    const url = gw.url;
    await gw.close();
    const r = await writeSnapshot({ sessionFile: await file('s.jsonl', 'x\n'), gatewayUrl: url, workerToken: 't', terminalStatus: 'completed', runId: 1, ...FAST, retries: 2 });
    expect(r).toMatchObject({ status: 'failed', reason: 'network', attempts: 3 });
  });

  it('never throws on invalid arguments', async () => {
    const r = await writeSnapshot({ sessionFile: await file('s.jsonl', 'x\n'), gatewayUrl: 'not a url', workerToken: 't', terminalStatus: 'completed', runId: 1 });
    expect(r).toMatchObject({ status: 'failed', reason: 'invalid_argument' });
  });

  it('with compress: false sends exactly the body shape existing workers send', async () => {
    const gw = await fakeGateway((_q, res) => res.end('{"id":4}'));
    try {
      const text = 'line "one"\n\\u0000 two\n';
      const r = await writeSnapshot({ sessionFile: await file('s.jsonl', text), gatewayUrl: `${gw.url}/lobu`, workerToken: 'run-token', terminalStatus: 'completed', runId: 42, compress: false });
      expect(r).toMatchObject({ status: 'written', transport: 'direct', encoding: 'identity' });
      const req = gw.requests[0]!;
      expect(req.url).toBe('/lobu/worker/transcript/snapshot');
      expect(req.method).toBe('POST');
      expect(req.headers.authorization).toBe('Bearer run-token');
      expect(req.headers['content-type']).toBe('application/json');
      expect(req.headers['content-encoding']).toBeUndefined();
      expect(JSON.parse(req.body)).toEqual({ terminalStatus: 'completed', snapshotJsonl: text, runId: 42 });
    } finally {
      await gw.close();
    }
  });

  it('by default gzips the same JSON body and says so with Content-Encoding: gzip', async () => {
    const raw: Buffer[] = [];
    const gw = await fakeGateway((_q, res) => res.end('{"id":4}'));
    // fakeGateway keeps bodies as utf-8 text, which would mangle gzip: capture the raw bytes in `fetch`.
    try {
      const text = '{"type":"message","text":"ü"}\n'.repeat(200);
      const r = await writeSnapshot({
        sessionFile: await file('s.jsonl', text),
        gatewayUrl: gw.url,
        workerToken: 'run-token',
        terminalStatus: 'completed',
        runId: 42,
        fetch: async (input, init) => {
          if (init?.body instanceof Uint8Array) raw.push(Buffer.from(init.body));
          return fetch(input, init);
        },
      });
      const req = gw.requests[0]!;
      expect(req.headers['content-encoding']).toBe('gzip');
      expect(req.headers['content-type']).toBe('application/json');
      expect(raw).toHaveLength(1);
      expect(JSON.parse(gunzipSync(raw[0]!).toString('utf8'))).toEqual({ terminalStatus: 'completed', snapshotJsonl: text, runId: 42 });
      expect(r).toMatchObject({ status: 'written', transport: 'direct', encoding: 'gzip', wireBytes: raw[0]!.length });
      expect(raw[0]!.length).toBeLessThan(Buffer.byteLength(text) / 10);
    } finally {
      await gw.close();
    }
  });

  it('sends the body uncompressed once more when the server cannot decode gzip (415)', async () => {
    const gw = await fakeGateway((q, res) => {
      if (q.headers['content-encoding']) {
        res.writeHead(415, { 'content-type': 'application/json' });
        res.end('{"error":"Unsupported Content-Encoding","code":"unsupported_content_encoding"}');
      } else res.end('{"id":7}');
    });
    try {
      const r = await writeSnapshot({ sessionFile: await file('s.jsonl', 'x\n'), gatewayUrl: gw.url, workerToken: 't', terminalStatus: 'completed', runId: 7, ...FAST });
      expect(r).toMatchObject({ status: 'written', id: 7, attempts: 2, transport: 'direct', encoding: 'identity' });
      expect(gw.requests.map((q) => q.headers['content-encoding'])).toEqual(['gzip', undefined]);
      expect(JSON.parse(gw.requests[1]!.body)).toEqual({ terminalStatus: 'completed', snapshotJsonl: 'x\n', runId: 7 });
    } finally {
      await gw.close();
    }
  });
});

describe('clearSnapshots against the local service', () => {
  it('returns cleared with the number deleted, then 0 the second time', async () => {
    const c = await conversation(svc);
    await writeSnapshot({ sessionFile: await file('s.jsonl', 'x\n'), gatewayUrl: svc.url, workerToken: await c.runToken(1), terminalStatus: 'completed', runId: 1 });
    const first = await clearSnapshots({ gatewayUrl: svc.url, workerToken: c.convToken });
    expect(first).toMatchObject({ status: 'cleared', attempts: 1 });
    expect(first.status === 'cleared' && first.deleted).toBeGreaterThanOrEqual(1);
    expect(await clearSnapshots({ gatewayUrl: svc.url, workerToken: c.convToken })).toEqual({ status: 'cleared', deleted: 0, attempts: 1 });
    expect(await hydrateFromSnapshot({ sessionFile: join(dir, 'h.jsonl'), gatewayUrl: svc.url, workerToken: c.convToken })).toBe(false);
  });

  it('never throws: an invalid token becomes failed/unauthorized', async () => {
    expect(await clearSnapshots({ gatewayUrl: svc.url, workerToken: 'nope', ...FAST })).toMatchObject({ status: 'failed', reason: 'unauthorized', httpStatus: 401, attempts: 1 });
  });

  it('retries 503 honouring Retry-After, then succeeds', async () => {
    let n = 0;
    const gw = await fakeGateway((_q, res) => {
      if (++n === 1) {
        res.writeHead(503, { 'retry-after': '1', 'content-type': 'application/json' });
        res.end('{"error":"Service temporarily unavailable","code":"unavailable"}');
      } else res.end('{"deleted":2}');
    });
    try {
      const t0 = Date.now();
      const r = await clearSnapshots({ gatewayUrl: gw.url, workerToken: 't', ...FAST });
      const elapsed = Date.now() - t0;
      expect(r).toEqual({ status: 'cleared', deleted: 2, attempts: 2 });
      expect(elapsed).toBeGreaterThanOrEqual(990);
    } finally {
      await gw.close();
    }
  });
});
