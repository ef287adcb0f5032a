/**
 * Issue 5 through the worker-client: snapshots past the direct-POST limit go through a presigned
 * (single or multipart) upload streamed from a gzip temp file; large hydrates follow the 307 to
 * storage, decode gzip and verify the announced sha256. Limits are lowered so the large paths run
 * on small data; one test moves 50 MB for real.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { readdir, readFile, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { once } from 'node:events';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Logger } from '@aws-lambda-powertools/logger';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startLocalService, type LocalService } from '../../local/service.js';
import { hydrateSnapshot, TranscriptStoreError, writeSnapshot, type WriteSnapshotOptions } from '../../worker-client/src/index.js';
import { type Fault, type FaultProxy, startFaultProxy } from '../helpers/fault-proxy.js';
import { collectEvents, conversation, FAST, fakeGateway, tempDir, tempFilesIn } from './support.js';
import { sameBytes } from '../../scripts/lib/files.js';

const KiB = 1024;
const MiB = 1024 * KiB;
/**
 * A full GC before a memory baseline, so garbage left by earlier tests cannot be collected during
 * the measured call and hide what it allocates.
 */
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** Client direct limit in these tests: anything above goes presigned. */
const DIRECT = 256 * KiB;

let svc: LocalService;
let dir: string;
let cleanup: () => Promise<void>;
const fixturePath = new URL('../fixtures/pi-large-session.jsonl', import.meta.url);
let fixture: Buffer;

beforeAll(async () => {
  fixture = await readFile(fixturePath);
  svc = await startLocalService({
    port: 0,
    logger: new Logger({ serviceName: 'test', logLevel: 'SILENT' }),
    env: {
      ...process.env,
      // The service's own direct limit is lowered too, so a client with the default 4 MiB limit gets 413.
      MAX_SNAPSHOT_BYTES: String(256 * KiB),
      INLINE_RESPONSE_MAX_BYTES: String(256 * KiB),
      MULTIPART_THRESHOLD_BYTES: String(6 * MiB),
      MULTIPART_PART_BYTES: String(5 * MiB),
      MAX_UPLOAD_BYTES: String(128 * MiB),
    },
  });
});
afterAll(async () => {
  await svc?.stop();
});
beforeEach(async () => {
  ({ dir, cleanup } = await tempDir());
});
afterEach(async () => {
  await cleanup();
});

/** Writes `bytes` bytes of the real transcript (repeated, then truncated) to `name`, streaming. */
async function transcriptFile(name: string, bytes: number): Promise<string> {
  const path = join(dir, name);
  const out = createWriteStream(path);
  for (let written = 0; written < bytes; written += fixture.length) {
    if (!out.write(fixture)) await once(out, 'drain');
  }
  out.end();
  await once(out, 'finish');
  await truncate(path, bytes);
  return path;
}

async function sha256OfFile(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(path)) h.update(c as Buffer);
  return h.digest('hex');
}

/** Byte-for-byte comparison of two files, streamed in 1 MiB windows. */

/** Every `.tmp` left anywhere under the test directory (session dir and explicit temp dirs). */
async function leftovers(): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true });
  return entries.filter((f) => String(f).endsWith('.tmp'));
}

async function write(c: Awaited<ReturnType<typeof conversation>>, runId: number, sessionFile: string, extra: Partial<WriteSnapshotOptions> = {}) {
  return writeSnapshot({
    sessionFile,
    gatewayUrl: svc.url,
    workerToken: await c.runToken(runId),
    terminalStatus: 'completed',
    runId,
    directMaxBytes: DIRECT,
    ...extra,
  });
}

/**
 * A `fetch` for the client that rewrites the storage URLs in an upload ticket so the PUTs go
 * through `proxy` (which forwards to s3rver with the original Host header, so signatures hold).
 */
function ticketsVia(proxy: FaultProxy): typeof fetch {
  const storage = svc.emulators!.s3Endpoint;
  return async (input, init) => {
    const res = await fetch(input, init);
    if (!String(input).endsWith('/uploads') || res.status !== 200) return res;
    const text = (await res.text()).replaceAll(storage, proxy.url);
    return new Response(text, { status: 200, headers: { 'content-type': 'application/json' } });
  };
}

describe('writeSnapshot: presigned uploads', () => {
  it('uploads a file past directMaxBytes as gzip with one PUT, and hydrates it byte-exact through the 307', async () => {
    const c = await conversation(svc);
    const src = await transcriptFile('src.jsonl', 2 * fixture.length); // 1.9 MB → ~330 KB gzip
    const { events, logger } = collectEvents();
    const r = await write(c, 1, src, { logger });
    expect(r).toMatchObject({
      status: 'written',
      id: 1,
      bytes: 2 * fixture.length,
      sha256: await sha256OfFile(src),
      transport: 'presigned',
      encoding: 'gzip',
      parts: 1,
      attempts: 3, // create + PUT + commit
      afterRetry: false,
    });
    if (r.status !== 'written') throw new Error('unreachable');
    expect(r.wireBytes).toBeLessThan(r.bytes / 4);
    expect(events.some((e) => e.event === 'upload_prepared' && e.wireBytes === r.wireBytes)).toBe(true);
    expect(await leftovers()).toEqual([]);

    const out = join(dir, 'out', 'session.jsonl');
    const h = await hydrateSnapshot({ sessionFile: out, gatewayUrl: svc.url, workerToken: c.convToken });
    expect(h).toMatchObject({ status: 'hydrated', runId: 1, bytes: 2 * fixture.length, verified: true, redirected: true });
    if (h.status !== 'hydrated') throw new Error('unreachable');
    // Storage served the gzip object: fewer bytes on the wire than the snapshot.
    expect(h.wireBytes).toBe(r.wireBytes);
    expect(await sameBytes(src, out)).toBe(true);
    expect(await tempFilesIn(join(dir, 'out'))).toEqual([]);
  });

  it('uploads past the multipart threshold in parts, and hydrates byte-exact', async () => {
    const c = await conversation(svc);
    const size = 13 * MiB; // identity: 3 parts of 5 MiB (5 + 5 + 3)
    const src = await transcriptFile('src.jsonl', size);
    const r = await write(c, 2, src, { compress: false });
    expect(r).toMatchObject({ status: 'written', bytes: size, transport: 'presigned', encoding: 'identity', wireBytes: size, parts: 3, attempts: 5 });
    // compress: false PUTs straight from the session file: no temp copy at all.
    expect(await leftovers()).toEqual([]);
    const out = join(dir, 'out.jsonl');
    const h = await hydrateSnapshot({ sessionFile: out, gatewayUrl: svc.url, workerToken: c.convToken });
    expect(h).toMatchObject({ status: 'hydrated', runId: 2, bytes: size, verified: true, redirected: true, wireBytes: size });
    expect(await sameBytes(src, out)).toBe(true);
  });

  it('falls back to a presigned upload once when the server answers the direct POST with 413', async () => {
    const c = await conversation(svc);
    const src = await transcriptFile('src.jsonl', 600 * KiB); // under the client's default 4 MiB, over the server's 256 KiB
    const { events, logger } = collectEvents();
    const r = await writeSnapshot({ sessionFile: src, gatewayUrl: svc.url, workerToken: await c.runToken(3), terminalStatus: 'completed', runId: 3, logger });
    expect(r).toMatchObject({ status: 'written', bytes: 600 * KiB, transport: 'presigned', encoding: 'gzip', parts: 1, attempts: 4 });
    expect(events.filter((e) => e.event === 'fallback_presigned')).toHaveLength(1);
    expect(await leftovers()).toEqual([]);
    const out = join(dir, 'out.jsonl');
    expect(await hydrateSnapshot({ sessionFile: out, gatewayUrl: svc.url, workerToken: c.convToken })).toMatchObject({ status: 'hydrated', runId: 3 });
    expect(await sameBytes(src, out)).toBe(true);
  });

  it('writes and hydrates a 50 MB transcript byte-exact, memory staying far below the file size', async () => {
    const c = await conversation(svc);
    const size = 50 * MiB;
    const src = await transcriptFile('src.jsonl', size);
    // Sample this process's memory while the write runs. Until `upload_prepared` only the client works
    // (read → utf-8 check → gzip → temp file); after it the in-process service and s3rver join in.
    gc();
    const base = process.memoryUsage();
    const grown = () => {
      const m = process.memoryUsage();
      return m.heapUsed - base.heapUsed + (m.arrayBuffers - base.arrayBuffers);
    };
    let prepared = false;
    let peakClient = 0;
    let peakAll = 0;
    const sampler = setInterval(() => {
      const g = grown();
      if (!prepared) peakClient = Math.max(peakClient, g);
      peakAll = Math.max(peakAll, g);
    }, 5);
    let r;
    try {
      r = await write(c, 4, src, {
        directMaxBytes: undefined, // the default 4 MiB limit
        logger: (e) => {
          if (e.event === 'upload_prepared') {
            peakClient = Math.max(peakClient, grown());
            prepared = true;
          }
        },
      });
    } finally {
      clearInterval(sampler);
    }
    // ~8.5 MB gzip > 6 MiB threshold → two parts.
    expect(r).toMatchObject({ status: 'written', bytes: size, transport: 'presigned', encoding: 'gzip', parts: 2, attempts: 4 });
    // Reading the file whole would hold ≥ 50 MiB at once (measured: ~95 MiB with its gzip). Streaming
    // allocates 1 MiB chunks that V8 collects in batches: ~33 MiB of not-yet-collected garbage at the
    // peak, the same for any file size; ~36 MiB overall with s3rver and the service in this process.
    expect(prepared).toBe(true);
    expect(peakClient).toBeLessThan(46 * MiB);
    expect(peakAll).toBeLessThan(80 * MiB);
    expect(await leftovers()).toEqual([]);

    const out = join(dir, 'out.jsonl');
    const h = await hydrateSnapshot({ sessionFile: out, gatewayUrl: svc.url, workerToken: c.convToken });
    expect(h).toMatchObject({ status: 'hydrated', runId: 4, bytes: size, verified: true, redirected: true });
    expect(await sameBytes(src, out)).toBe(true);
  }, 60_000);

  it('refuses a large file that is not valid UTF-8 before sending anything, leaving no temp file', async () => {
    const gw = await fakeGateway((_q, res) => res.end('{}'));
    try {
      const src = join(dir, 'bad.jsonl');
      await writeFile(src, Buffer.concat([fixture, Buffer.from([0xff, 0xfe, 0x0a])]));
      const r = await writeSnapshot({ sessionFile: src, gatewayUrl: gw.url, workerToken: 't', terminalStatus: 'completed', runId: 1, directMaxBytes: DIRECT });
      expect(r).toMatchObject({ status: 'failed', reason: 'not_utf8', attempts: 0 });
      expect(gw.requests).toHaveLength(0);
      expect(await leftovers()).toEqual([]);
    } finally {
      await gw.close();
    }
  });

  it('writes the compressed copy into tempDir when given, and removes it', async () => {
    const c = await conversation(svc);
    const src = await transcriptFile('src.jsonl', 400 * KiB);
    const scratch = join(dir, 'scratch');
    await import('node:fs/promises').then((fs) => fs.mkdir(scratch));
    const seen: string[] = [];
    const r = await write(c, 1, src, {
      tempDir: scratch,
      // Look into the scratch dir while the upload is in flight (at the create call).
      fetch: async (input, init) => {
        if (String(input).endsWith('/uploads')) seen.push(...(await readdir(scratch)));
        return fetch(input, init);
      },
    });
    expect(r).toMatchObject({ status: 'written', transport: 'presigned' });
    expect(seen).toHaveLength(1);
    expect(seen[0]).toMatch(/^\.src\.jsonl\.\d+\.[0-9a-f]+\.upload\.gz\.tmp$/);
    expect(await readdir(scratch)).toEqual([]);
  });
});

describe('writeSnapshot: presigned upload faults', () => {
  let proxy: FaultProxy;
  let plan: ((req: { method: string; path: string }) => Fault | undefined) | undefined;
  beforeEach(async () => {
    plan = undefined;
  });
  afterEach(async () => {
    await proxy?.close();
  });

  it('re-PUTs a part that failed and commits with the ETags of the parts that landed', async () => {
    proxy = await startFaultProxy({ upstream: svc.emulators!.s3Endpoint, plan: (q) => plan?.(q) });
    let partTwo = 0;
    plan = (q) => (q.method === 'PUT' && q.path.includes('partNumber=2') && ++partTwo <= 2 ? { kind: 'status', status: 503, body: '<Error><Code>SlowDown</Code></Error>' } : undefined);
    const c = await conversation(svc);
    const src = await transcriptFile('src.jsonl', 11 * MiB);
    const r = await write(c, 1, src, { compress: false, fetch: ticketsVia(proxy), ...FAST, deadlineMs: 30_000, timeoutMs: 10_000 });
    expect(r).toMatchObject({ status: 'written', parts: 3, attempts: 1 + 3 + 2 + 1 });
    expect(proxy.requests.filter((q) => q.path.includes('partNumber=2')).map((q) => q.fault)).toEqual(['status', 'status', 'pass']);
    const out = join(dir, 'out.jsonl');
    expect(await hydrateSnapshot({ sessionFile: out, gatewayUrl: svc.url, workerToken: c.convToken })).toMatchObject({ status: 'hydrated', runId: 1 });
    expect(await sameBytes(src, out)).toBe(true);
  });

  it('retries a single PUT whose connection dropped, then commits', async () => {
    proxy = await startFaultProxy({ upstream: svc.emulators!.s3Endpoint });
    proxy.enqueue({ kind: 'drop' });
    const c = await conversation(svc);
    const src = await transcriptFile('src.jsonl', 700 * KiB);
    const r = await write(c, 1, src, { fetch: ticketsVia(proxy), ...FAST });
    expect(r).toMatchObject({ status: 'written', parts: 1, attempts: 4 });
    expect(proxy.requests.map((q) => q.fault)).toEqual(['drop', 'pass']);
    expect(await leftovers()).toEqual([]);
  });

  it('fails without retrying when storage refuses the PUT (403), and removes the temp file', async () => {
    proxy = await startFaultProxy({
      upstream: svc.emulators!.s3Endpoint,
      plan: () => ({ kind: 'status', status: 403, body: '<Error><Code>AccessDenied</Code></Error>' }),
    });
    const c = await conversation(svc);
    const src = await transcriptFile('src.jsonl', 700 * KiB);
    const r = await write(c, 1, src, { fetch: ticketsVia(proxy), ...FAST });
    expect(r).toMatchObject({ status: 'failed', reason: 'forbidden', httpStatus: 403, serverCode: 'AccessDenied', attempts: 2 });
    expect(proxy.requests).toHaveLength(1);
    expect(await leftovers()).toEqual([]);
    // Nothing was committed.
    expect(await hydrateSnapshot({ sessionFile: join(dir, 'out.jsonl'), gatewayUrl: svc.url, workerToken: c.convToken })).toMatchObject({ status: 'not_found' });
  });

  it('gives up on a commit that keeps failing (5xx) within its retries, and removes the temp file', async () => {
    proxy = await startFaultProxy({
      upstream: svc.url,
      plan: (q) => (q.method === 'POST' && q.path === '/worker/transcript/snapshot' ? { kind: 'status', status: 503 } : undefined),
    });
    const c = await conversation(svc);
    const src = await transcriptFile('src.jsonl', 700 * KiB);
    const r = await writeSnapshot({ sessionFile: src, gatewayUrl: proxy.url, workerToken: await c.runToken(1), terminalStatus: 'completed', runId: 1, directMaxBytes: DIRECT, ...FAST, retries: 2 });
    expect(r).toMatchObject({ status: 'failed', reason: 'http_5xx', httpStatus: 503, attempts: 1 + 1 + 3 });
    expect(proxy.requests.map((q) => q.path)).toEqual([
      '/worker/transcript/snapshot/uploads',
      '/worker/transcript/snapshot',
      '/worker/transcript/snapshot',
      '/worker/transcript/snapshot',
    ]);
    expect(await leftovers()).toEqual([]);
  });

  it('fails cleanly when the upload cannot be created (403), leaving no temp file', async () => {
    const c = await conversation(svc);
    const src = await transcriptFile('src.jsonl', 700 * KiB);
    // A conversation token has no runId claim: the service refuses to create the upload (403).
    const r = await writeSnapshot({ sessionFile: src, gatewayUrl: svc.url, workerToken: c.convToken, terminalStatus: 'completed', runId: 1, directMaxBytes: DIRECT });
    expect(r).toMatchObject({ status: 'failed', reason: 'forbidden', httpStatus: 403, serverCode: 'run_out_of_scope', attempts: 1 });
    expect(await leftovers()).toEqual([]);
  });

  it('leaves no temp file when the caller aborts during the upload', async () => {
    proxy = await startFaultProxy({ upstream: svc.emulators!.s3Endpoint, maxStallMs: 5_000 });
    proxy.enqueue({ kind: 'stall', ms: 5_000 });
    const c = await conversation(svc);
    const src = await transcriptFile('src.jsonl', 700 * KiB);
    const controller = new AbortController();
    const t = setTimeout(() => controller.abort(), 300);
    const r = await write(c, 1, src, { fetch: ticketsVia(proxy), signal: controller.signal });
    clearTimeout(t);
    expect(r).toMatchObject({ status: 'failed', reason: 'aborted' });
    expect(await leftovers()).toEqual([]);
  });

  it('counts a commit whose answer was lost as written when the retry is told 409', async () => {
    let commits = 0;
    proxy = await startFaultProxy({
      upstream: svc.url,
      plan: (q) => (q.method === 'POST' && q.path === '/worker/transcript/snapshot' && ++commits === 1 ? { kind: 'drop-after-upstream' } : undefined),
    });
    const c = await conversation(svc);
    const src = await transcriptFile('src.jsonl', 700 * KiB);
    const r = await writeSnapshot({ sessionFile: src, gatewayUrl: proxy.url, workerToken: await c.runToken(6), terminalStatus: 'completed', runId: 6, directMaxBytes: DIRECT, ...FAST });
    expect(r).toMatchObject({ status: 'written', afterRetry: true, transport: 'presigned', attempts: 4 });
    expect(proxy.requests.map((q) => [q.path, q.upstreamStatus])).toEqual([
      ['/worker/transcript/snapshot/uploads', 200],
      ['/worker/transcript/snapshot', 200],
      ['/worker/transcript/snapshot', 409],
    ]);
    const out = join(dir, 'out.jsonl');
    expect(await hydrateSnapshot({ sessionFile: out, gatewayUrl: svc.url, workerToken: c.convToken })).toMatchObject({ status: 'hydrated', runId: 6 });
    expect(await sameBytes(src, out)).toBe(true);
  });
});

describe('hydrate: large snapshots', () => {
  it('answers not_modified (304) for a large snapshot already on disk, and fetches a newer one through the 307', async () => {
    const c = await conversation(svc);
    const v1 = await transcriptFile('v1.jsonl', 3 * fixture.length);
    expect(await write(c, 1, v1)).toMatchObject({ status: 'written', transport: 'presigned' });
    const out = join(dir, 'session.jsonl');
    const first = await hydrateSnapshot({ sessionFile: out, gatewayUrl: svc.url, workerToken: c.convToken });
    expect(first).toMatchObject({ status: 'hydrated', runId: 1, redirected: true });
    const before = await stat(out);

    const { events, logger } = collectEvents();
    const again = await hydrateSnapshot({ sessionFile: out, gatewayUrl: svc.url, workerToken: c.convToken, logger });
    expect(again).toMatchObject({ status: 'not_modified', sha256: await sha256OfFile(v1), attempts: 1, runId: 1, generation: 0 });
    expect(events.some((e) => e.event === 'redirect')).toBe(false); // answered by the gateway, storage never asked
    const after = await stat(out);
    expect([after.ino, after.mtimeMs]).toEqual([before.ino, before.mtimeMs]);

    const v2 = await transcriptFile('v2.jsonl', 3 * fixture.length - 1);
    expect(await write(c, 2, v2)).toMatchObject({ status: 'written' });
    const third = await hydrateSnapshot({ sessionFile: out, gatewayUrl: svc.url, workerToken: c.convToken });
    expect(third).toMatchObject({ status: 'hydrated', runId: 2, redirected: true, sha256: await sha256OfFile(v2) });
    expect(await sameBytes(v2, out)).toBe(true);
  });

  it('checks the sha256 announced on the 307 against the gzip-decoded storage body; a mismatch leaves the file untouched', async () => {
    const c = await conversation(svc);
    const src = await transcriptFile('src.jsonl', 2 * fixture.length);
    await write(c, 1, src);
    // The real presigned URL (storage serves the gzip object), behind a gateway that lies about the digest.
    const real = await fetch(`${svc.url}/worker/transcript/snapshot`, { headers: { authorization: `Bearer ${c.convToken}` }, redirect: 'manual' });
    expect(real.status).toBe(307);
    const location = real.headers.get('location')!;
    const trueSha = real.headers.get('x-snapshot-sha256')!;
    let announce = '0'.repeat(64);
    const gw = await fakeGateway((_q, res) => {
      res.writeHead(307, { location, 'x-snapshot-sha256': announce, 'x-snapshot-run-id': '1' });
      res.end();
    });
    try {
      const out = join(dir, 'session.jsonl');
      await writeFile(out, 'LOCAL\n');
      const err = await hydrateSnapshot({ sessionFile: out, gatewayUrl: gw.url, workerToken: c.convToken, ...FAST, retries: 1 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TranscriptStoreError);
      expect(err).toMatchObject({ code: 'integrity' });
      expect(await readFile(out, 'utf8')).toBe('LOCAL\n');
      expect(await tempFilesIn(dir)).toEqual([]);

      announce = trueSha;
      const ok = await hydrateSnapshot({ sessionFile: out, gatewayUrl: gw.url, workerToken: c.convToken });
      expect(ok).toMatchObject({ status: 'hydrated', runId: 1, verified: true, redirected: true, sha256: trueSha });
      expect(await sameBytes(src, out)).toBe(true);
    } finally {
      await gw.close();
    }
  });
});

describe('service memory on the inline gzip path', () => {
  /**
   * A snapshot whose gzip fits the inline limit is served inline. Its decoded size is bounded only by
   * MAX_UPLOAD_BYTES, not by the inline limit: 100 MiB of one repeated line gzips to ~100 KB. Serving it
   * must not decode it into memory in the service (a Lambda would need the decoded size in RAM).
   */
  it('serves a highly compressible 100 MiB snapshot inline without holding it decoded', async () => {
    const c = await conversation(svc);
    const size = 100 * MiB;
    const src = join(dir, 'repetitive.jsonl');
    const line = Buffer.from('{"type":"message","text":"ok"}\n');
    const out0 = createWriteStream(src);
    const block = Buffer.concat(Array.from({ length: Math.floor(MiB / line.length) + 1 }, () => line)).subarray(0, MiB);
    for (let i = 0; i < size / MiB; i++) if (!out0.write(block)) await once(out0, 'drain');
    out0.end();
    await once(out0, 'finish');
    const w = await write(c, 1, src);
    expect(w).toMatchObject({ status: 'written', transport: 'presigned', encoding: 'gzip' });
    if (w.status !== 'written') throw new Error('unreachable');
    expect(w.wireBytes).toBeLessThan(256 * KiB); // stored gzip under INLINE_RESPONSE_MAX_BYTES → inline

    gc();
    const base = process.memoryUsage();
    let peak = 0;
    const sampler = setInterval(() => {
      const m = process.memoryUsage();
      peak = Math.max(peak, m.heapUsed - base.heapUsed + (m.arrayBuffers - base.arrayBuffers));
    }, 2);
    const out = join(dir, 'out.jsonl');
    let h;
    try {
      h = await hydrateSnapshot({ sessionFile: out, gatewayUrl: svc.url, workerToken: c.convToken });
    } finally {
      clearInterval(sampler);
    }
    expect(h).toMatchObject({ status: 'hydrated', redirected: false, bytes: size, verified: true });
    expect(await sameBytes(src, out)).toBe(true);
    // The client streams (~35 MiB of not-yet-collected decoded chunks at the peak); a service that
    // decodes the snapshot into memory holds ≥ 100 MiB at once (measured before the fix: ~190 MiB).
    expect(peak).toBeLessThan(64 * MiB);
  }, 60_000);
});
