/**
 * Incremental sync (issue 12), client side, against a fake service that implements the wire contract:
 * append writes (`appendJsonl` + base + whole sha256, brotli), delta hydrates (`A-IM: append` → 226 with
 * the tail, multi-member gzip), and the fallbacks (412 base_mismatch, 400 sha256_mismatch, a 226 that
 * does not verify). Assertions are on what the fake received and on file bytes and state — never timing.
 */
import { createHash } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { brotliDecompressSync, gunzipSync, gzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { hydrateSnapshot, writeSnapshot, type HydrateOptions, type WriteSnapshotOptions } from '../../worker-client/src/index.js';
import { SNAPSHOT_PATH } from '../../worker-client/src/http.js';
import { readState, scopeOf, statePath, writeState } from '../../worker-client/src/state.js';
import { collectEvents, FAST, tempDir, tempFilesIn } from './support.js';

const sha = (b: string | Uint8Array) => createHash('sha256').update(b).digest('hex');
const buf = (s: string) => Buffer.from(s, 'utf8');

/** An unsigned token with the claims scopeOf reads: the client keeps state for it (the fake never verifies). */
const claims = { organizationId: 'org', agentId: 'agent', conversationId: 'conv-append' };
const token = `e30.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.sig`;

interface Received {
  method: string;
  headers: IncomingHttpHeaders;
  /** The request body as received (still content-coded). */
  raw: Buffer;
  /** The request body's JSON after undoing Content-Encoding (POST only). */
  json?: Record<string, unknown>;
}

/** Hook for one request: return true when it answered the request itself. */
type Hook = (req: IncomingMessage, res: ServerResponse, r: Received, fake: FakeService) => boolean;

/**
 * The append contract, in memory: completed runs by id (all of generation 0), the latest is served.
 * `hooks` are consumed in order, one per request, before the default behaviour.
 */
class FakeService {
  readonly runs = new Map<number, Buffer>();
  latest: number | undefined;
  readonly generation = 0;
  readonly received: Received[] = [];
  readonly hooks: (Hook | undefined)[] = [];
  /** Applied to the next 226 before it is sent (headers and the tail, before gzip). */
  mutate226: ((h: Record<string, string>, tail: Buffer) => Buffer) | undefined;
  url = '';
  private server = createServer((req, res) => void this.handle(req, res));

  async start(): Promise<this> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    const a = this.server.address();
    if (!a || typeof a === 'string') throw new Error('no address');
    this.url = `http://127.0.0.1:${a.port}`;
    return this;
  }

  stop(): Promise<void> {
    return new Promise((r) => {
      this.server.closeAllConnections();
      this.server.close(() => r());
    });
  }

  store(runId: number, content: string | Buffer): void {
    this.runs.set(runId, Buffer.isBuffer(content) ? content : buf(content));
    this.latest = Math.max(this.latest ?? 0, runId);
  }

  get posts(): Received[] {
    return this.received.filter((r) => r.method === 'POST');
  }

  get gets(): Received[] {
    return this.received.filter((r) => r.method === 'GET');
  }

  private json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
  }

  private snapshotHeaders(runId: number, content: Buffer): Record<string, string> {
    return {
      'x-snapshot-generation': String(this.generation),
      'x-snapshot-run-id': String(runId),
      'x-snapshot-sha256': sha(content),
      etag: `"${sha(content)}"`,
    };
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const raw = Buffer.concat(chunks);
    const r: Received = { method: req.method ?? '', headers: req.headers, raw };
    if (r.method === 'POST') {
      const coding = req.headers['content-encoding'];
      const decoded = coding === 'br' ? brotliDecompressSync(raw) : coding === 'gzip' ? gunzipSync(raw) : raw;
      r.json = JSON.parse(decoded.toString('utf8')) as Record<string, unknown>;
    }
    this.received.push(r);
    const hook = this.hooks.shift();
    if (hook?.(req, res, r, this)) return;
    if (req.url !== SNAPSHOT_PATH) return this.json(res, 404, { error: 'Not found', code: 'not_found' });
    if (r.method === 'GET') return this.get(req, res);
    if (r.method === 'POST') return this.post(res, r.json!);
    this.json(res, 405, { error: 'Method not allowed', code: 'method_not_allowed' });
  }

  private get(req: IncomingMessage, res: ServerResponse): void {
    const gen = { 'x-snapshot-generation': String(this.generation) };
    if (this.latest === undefined) return this.json(res, 404, { error: 'No snapshot found', code: 'no_snapshot' }, gen);
    const content = this.runs.get(this.latest)!;
    const headers = this.snapshotHeaders(this.latest, content);
    const tags = (req.headers['if-none-match'] ?? '').split(',').map((t) => t.trim().replace(/^W\//, ''));
    if (tags.includes(`"${sha(content)}"`)) {
      res.writeHead(304, headers);
      return void res.end();
    }
    const baseRun = Number(req.headers['x-snapshot-base-run-id']);
    const base = this.runs.get(baseRun);
    if (req.headers['a-im'] === 'append' && base && tags.includes(`"${sha(base)}"`) && content.subarray(0, base.length).equals(base)) {
      const h: Record<string, string> = { ...headers, im: 'append', 'delta-base': `"${sha(base)}"`, 'x-snapshot-bytes': String(content.length) };
      let tail = content.subarray(base.length);
      if (this.mutate226) {
        tail = this.mutate226(h, Buffer.from(tail));
        this.mutate226 = undefined;
      }
      // Two gzip members back to back (what a service concatenating stored pieces would send).
      const cut = Math.floor(tail.length / 2);
      const body = Buffer.concat([gzipSync(tail.subarray(0, cut)), gzipSync(tail.subarray(cut))]);
      res.writeHead(226, { ...h, 'content-type': 'application/x-ndjson', 'content-encoding': 'gzip', 'content-length': String(body.length) });
      return void res.end(body);
    }
    const body = gzipSync(content);
    res.writeHead(200, { ...headers, 'content-type': 'application/x-ndjson', 'content-encoding': 'gzip', 'content-length': String(body.length) });
    res.end(body);
  }

  private post(res: ServerResponse, body: Record<string, unknown>): void {
    const runId = body.runId as number;
    let content: Buffer;
    if (typeof body.appendJsonl === 'string') {
      const base = body.base as { runId: number; bytes: number; sha256: string };
      const held = this.runs.get(base.runId);
      if (!held || held.length !== base.bytes || sha(held) !== base.sha256) {
        return this.json(res, 412, { error: 'Base is not a stored completed run', code: 'base_mismatch' });
      }
      content = Buffer.concat([held, buf(body.appendJsonl)]);
      if (sha(content) !== body.sha256) return this.json(res, 400, { error: 'sha256 mismatch', code: 'sha256_mismatch' });
    } else {
      content = buf(body.snapshotJsonl as string);
    }
    if (this.runs.has(runId)) return this.json(res, 409, { error: 'Snapshot already exists for run', code: 'snapshot_exists' });
    this.store(runId, content);
    this.json(res, 200, { id: this.runs.size, runId, sha256: sha(content), bytes: content.length, latest: true });
  }
}

let fake: FakeService;
let dir: string;
let cleanup: () => Promise<void>;
beforeEach(async () => {
  fake = await new FakeService().start();
  ({ dir, cleanup } = await tempDir());
});
afterEach(async () => {
  await fake.stop();
  await cleanup();
});

const hydrate = (sessionFile: string, extra: Partial<HydrateOptions> = {}) =>
  hydrateSnapshot({ sessionFile, gatewayUrl: fake.url, workerToken: token, ...FAST, ...extra });
const write = (sessionFile: string, runId: number, extra: Partial<WriteSnapshotOptions> = {}) =>
  writeSnapshot({ sessionFile, gatewayUrl: fake.url, workerToken: token, runId, terminalStatus: 'completed', ...FAST, ...extra });
const state = (sessionFile: string) => readState(sessionFile, scopeOf(`${fake.url}${SNAPSHOT_PATH}`, token));

const RUN1 = '{"type":"session","id":"s1"}\n{"type":"message","text":"héllo 🚀"}\n';
const TAIL2 = '{"type":"message","text":"second turn — ünïcode"}\n{"type":"message","n":2}\n';
const TAIL3 = '{"type":"message","text":"third turn"}\n';

/** A session file holding run 1 as stored by the fake, with the state a hydrate of it leaves. */
async function hydratedRun1(name = 'session.jsonl'): Promise<string> {
  fake.store(1, RUN1);
  const file = join(dir, name);
  expect(await hydrate(file)).toMatchObject({ status: 'hydrated', runId: 1 });
  expect(await readFile(file, 'utf8')).toBe(RUN1);
  fake.received.length = 0;
  return file;
}

describe('append write', () => {
  it('sends only the appended bytes, brotli-coded, with the base and the whole sha256, and records the whole file as the new state', async () => {
    const file = await hydratedRun1();
    await writeFile(file, RUN1 + TAIL2);
    const { events, logger } = collectEvents();
    const r = await write(file, 2, { logger });

    const whole = buf(RUN1 + TAIL2);
    expect(r).toMatchObject({ status: 'written', transport: 'append', encoding: 'br', bytes: whole.length, sha256: sha(whole), attempts: 1, afterRetry: false });
    expect(fake.posts).toHaveLength(1);
    const post = fake.posts[0]!;
    expect(post.headers['content-encoding']).toBe('br');
    expect(post.headers['content-type']).toBe('application/json');
    expect(post.headers['x-snapshot-generation']).toBe('0');
    expect(post.headers.authorization).toBe(`Bearer ${token}`);
    // Exactly the contract's fields, in its order.
    expect(brotliDecompressSync(post.raw).toString('utf8')).toBe(
      JSON.stringify({
        runId: 2,
        terminalStatus: 'completed',
        appendJsonl: TAIL2,
        base: { runId: 1, bytes: Buffer.byteLength(RUN1), sha256: sha(RUN1) },
        sha256: sha(whole),
      }),
    );
    expect(r.status === 'written' && r.wireBytes).toBe(post.raw.length);
    expect(fake.runs.get(2)?.equals(whole)).toBe(true);
    expect(await state(file)).toEqual({ scope: expect.any(String), generation: 0, runId: 2, bytes: whole.length, sha256: sha(whole) });
    expect(events.filter((e) => e.level === 'error' || e.level === 'warn')).toEqual([]);

    // The next turn appends to run 2.
    await writeFile(file, RUN1 + TAIL2 + TAIL3);
    expect(await write(file, 3)).toMatchObject({ status: 'written', transport: 'append' });
    expect(fake.posts[1]!.json).toMatchObject({ appendJsonl: TAIL3, base: { runId: 2, bytes: whole.length, sha256: sha(whole) } });
    expect(fake.runs.get(3)?.toString('utf8')).toBe(RUN1 + TAIL2 + TAIL3);
  });

  it('with compress: false sends the same JSON uncoded', async () => {
    const file = await hydratedRun1();
    await writeFile(file, RUN1 + TAIL2);
    expect(await write(file, 2, { compress: false })).toMatchObject({ status: 'written', transport: 'append', encoding: 'identity' });
    expect(fake.posts[0]!.headers['content-encoding']).toBeUndefined();
    expect(fake.posts[0]!.json).toMatchObject({ appendJsonl: TAIL2, base: { runId: 1 } });
  });

  it('a file rewritten locally (compaction: the prefix no longer matches) is written in full, not appended', async () => {
    const file = await hydratedRun1();
    const compacted = '{"type":"summary","text":"compacted"}\n' + TAIL2 + TAIL2 + TAIL2;
    await writeFile(file, compacted);
    expect(await write(file, 2)).toMatchObject({ status: 'written', transport: 'direct', encoding: 'gzip' });
    expect(fake.posts).toHaveLength(1);
    expect(fake.posts[0]!.json).toEqual({ terminalStatus: 'completed', snapshotJsonl: compacted, runId: 2 });
    expect(fake.posts[0]!.json).not.toHaveProperty('appendJsonl');
  });

  it('appended bytes that are not valid UTF-8 on their own (a character split at the base) go as a full write', async () => {
    // The file is valid UTF-8 as a whole; the state says the service holds only "…\xc3", half of an é.
    const text = '{"a":"caf' + 'é"}\n';
    const whole = buf(text);
    const cut = whole.indexOf(0xc3) + 1;
    const file = join(dir, 'split.jsonl');
    await writeFile(file, whole);
    fake.store(1, whole.subarray(0, cut));
    expect(await writeState(file, { scope: scopeOf(`${fake.url}${SNAPSHOT_PATH}`, token)!, generation: 0, runId: 1, bytes: cut, sha256: sha(whole.subarray(0, cut)) })).toBe(true);
    const { events, logger } = collectEvents();
    expect(await write(file, 2, { logger })).toMatchObject({ status: 'written', transport: 'direct', attempts: 1 });
    expect(fake.posts).toHaveLength(1);
    expect(fake.posts[0]!.json).toEqual({ terminalStatus: 'completed', snapshotJsonl: text, runId: 2 });
    expect(events.some((e) => e.event === 'append_skipped' && e.reason === 'not_utf8_on_its_own')).toBe(true);
  });

  it('appended bytes that begin with a byte-order mark keep it (the stored file is byte-exact)', async () => {
    const file = await hydratedRun1();
    const tail = '\uFEFF{"bom":true}\n';
    await writeFile(file, RUN1 + tail);
    expect(await write(file, 2)).toMatchObject({ status: 'written', transport: 'append', attempts: 1 });
    expect(fake.runs.get(2)?.equals(buf(RUN1 + tail))).toBe(true);
    expect((fake.posts[0]!.json as { appendJsonl: string }).appendJsonl.charCodeAt(0)).toBe(0xfeff);
  });

  it('a file no longer than the held snapshot is a normal full write', async () => {
    const file = await hydratedRun1();
    expect(await write(file, 2)).toMatchObject({ status: 'written', transport: 'direct' });
    expect(fake.posts[0]!.json).toEqual({ terminalStatus: 'completed', snapshotJsonl: RUN1, runId: 2 });
  });

  it.each(['failed', 'timeout', 'cancelled'] as const)('a %s run sends nothing, as today (never an append)', async (terminalStatus) => {
    const file = await hydratedRun1();
    await writeFile(file, RUN1 + TAIL2);
    expect(await write(file, 2, { terminalStatus })).toEqual({ status: 'skipped', reason: 'not_completed', attempts: 0 });
    expect(fake.received).toHaveLength(0);
    expect(await state(file)).toMatchObject({ runId: 1, bytes: Buffer.byteLength(RUN1) });
  });

  it('without a state (no hydrate, first write) the whole file goes', async () => {
    const file = join(dir, 'fresh.jsonl');
    await writeFile(file, RUN1 + TAIL2);
    expect(await write(file, 1)).toMatchObject({ status: 'written', transport: 'direct' });
    expect(fake.posts[0]!.json).not.toHaveProperty('appendJsonl');
  });

  it('412 base_mismatch: the same run is written in full in the same call, logged as info, not an error', async () => {
    const file = await hydratedRun1();
    fake.runs.delete(1); // e.g. cleared and rewritten elsewhere: the service no longer holds the base
    fake.store(5, 'other history\n');
    await writeFile(file, RUN1 + TAIL2);
    const { events, logger } = collectEvents();
    const r = await write(file, 6, { logger });
    expect(r).toMatchObject({ status: 'written', transport: 'direct', encoding: 'gzip', attempts: 2, afterRetry: false, sha256: sha(RUN1 + TAIL2) });
    expect(fake.posts.map((p) => Object.keys(p.json!).includes('appendJsonl'))).toEqual([true, false]);
    expect(fake.posts[1]!.json).toEqual({ terminalStatus: 'completed', snapshotJsonl: RUN1 + TAIL2, runId: 6 });
    expect(fake.posts[1]!.headers['x-snapshot-generation']).toBe('0');
    expect(events.find((e) => e.event === 'append_fallback')).toMatchObject({ level: 'info', reason: 'base_mismatch', status: 412, serverCode: 'base_mismatch' });
    expect(events.filter((e) => e.level === 'error' || e.level === 'warn')).toEqual([]);
    expect(await state(file)).toMatchObject({ runId: 6, bytes: Buffer.byteLength(RUN1 + TAIL2), sha256: sha(RUN1 + TAIL2) });
  });

  it('400 sha256_mismatch: written in full in the same call', async () => {
    const file = await hydratedRun1();
    await writeFile(file, RUN1 + TAIL2);
    fake.hooks.push((_q, res) => {
      res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'sha256 mismatch', code: 'sha256_mismatch' }));
      return true;
    });
    const { events, logger } = collectEvents();
    expect(await write(file, 2, { logger })).toMatchObject({ status: 'written', transport: 'direct', attempts: 2 });
    expect(fake.posts.map((p) => 'appendJsonl' in p.json!)).toEqual([true, false]);
    expect(fake.runs.get(2)?.toString('utf8')).toBe(RUN1 + TAIL2);
    expect(events.find((e) => e.event === 'append_fallback')).toMatchObject({ level: 'info', reason: 'sha256_mismatch' });
  });

  it('a service that predates appends (415 for br) gets the full write', async () => {
    const file = await hydratedRun1();
    await writeFile(file, RUN1 + TAIL2);
    fake.hooks.push((_q, res) => {
      res.writeHead(415, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'Unsupported Content-Encoding', code: 'unsupported_content_encoding' }));
      return true;
    });
    expect(await write(file, 2)).toMatchObject({ status: 'written', transport: 'direct', encoding: 'gzip', attempts: 2 });
    expect(fake.posts[1]!.headers['content-encoding']).toBe('gzip');
  });

  it('other 4xx on an append fail the write exactly as for a full write (no fallback)', async () => {
    const file = await hydratedRun1();
    await writeFile(file, RUN1 + TAIL2);
    fake.hooks.push((_q, res) => {
      res.writeHead(403, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'runId out of scope', code: 'run_out_of_scope' }));
      return true;
    });
    expect(await write(file, 2)).toMatchObject({ status: 'failed', reason: 'forbidden', httpStatus: 403, serverCode: 'run_out_of_scope', attempts: 1 });
    expect(fake.posts).toHaveLength(1);
  });

  it('409 snapshot_exists on the first attempt is a duplicate; 409 reset_fenced is skipped/reset', async () => {
    const file = await hydratedRun1();
    await writeFile(file, RUN1 + TAIL2);
    fake.store(2, 'someone else\n');
    expect(await write(file, 2)).toMatchObject({ status: 'duplicate', transport: 'append', attempts: 1 });
    fake.hooks.push((_q, res) => {
      res.writeHead(409, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'reset', code: 'reset_fenced' }));
      return true;
    });
    expect(await write(file, 3)).toEqual({ status: 'skipped', reason: 'reset', attempts: 1 });
  });

  it('an append retried after a 503 that had stored it, answered 409 snapshot_exists, is written (afterRetry)', async () => {
    const file = await hydratedRun1();
    await writeFile(file, RUN1 + TAIL2);
    fake.hooks.push((_q, res, r, f) => {
      // Commit, then lose the answer.
      const j = r.json as { runId: number; appendJsonl: string };
      f.store(j.runId, RUN1 + j.appendJsonl);
      res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '0' }).end('{"error":"x","code":"unavailable"}');
      return true;
    });
    const r = await write(file, 2);
    expect(r).toMatchObject({ status: 'written', transport: 'append', afterRetry: true, attempts: 2 });
    expect(fake.posts.map((p) => 'appendJsonl' in p.json!)).toEqual([true, true]);
  });

  it('a fallback after an append that may have landed carries the ambiguity: its 409 is this call\'s own write', async () => {
    const file = await hydratedRun1();
    await writeFile(file, RUN1 + TAIL2);
    fake.hooks.push(
      (_q, res, r, f) => {
        const j = r.json as { runId: number; appendJsonl: string };
        f.store(j.runId, RUN1 + j.appendJsonl);
        res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '0' }).end('{"error":"x","code":"unavailable"}');
        return true;
      },
      (_q, res) => {
        res.writeHead(412, { 'content-type': 'application/json' }).end('{"error":"base","code":"base_mismatch"}');
        return true;
      },
    );
    const r = await write(file, 2);
    expect(r).toMatchObject({ status: 'written', transport: 'direct', afterRetry: true, attempts: 3 });
    expect(fake.posts.map((p) => 'appendJsonl' in p.json!)).toEqual([true, true, false]);
  });

  it('a held snapshot past the directMaxBytes limit still appends a small turn inline (no presigned upload)', async () => {
    const big = Array.from({ length: 2000 }, (_, i) => JSON.stringify({ i, pad: 'x'.repeat(40) })).join('\n') + '\n';
    fake.store(1, big);
    const file = join(dir, 'big.jsonl');
    await hydrate(file);
    await writeFile(file, big + TAIL2);
    expect(await write(file, 2, { directMaxBytes: 10_000 })).toMatchObject({ status: 'written', transport: 'append' });
    expect(fake.received.filter((q) => q.method === 'POST')).toHaveLength(1);
    expect(fake.runs.get(2)?.toString('utf8')).toBe(big + TAIL2);
  });
});

describe('delta hydrate', () => {
  it('asks for the tail (A-IM: append, If-None-Match of the held snapshot, base run id) and rebuilds the file from a multi-member gzip 226', async () => {
    const file = await hydratedRun1();
    const before = await stat(file);
    fake.store(2, RUN1 + TAIL2);
    const r = await hydrate(file);

    const whole = buf(RUN1 + TAIL2);
    expect(fake.gets).toHaveLength(1);
    const q = fake.gets[0]!;
    expect(q.headers['a-im']).toBe('append');
    expect(q.headers['if-none-match']).toBe(`"${sha(RUN1)}"`);
    expect(q.headers['x-snapshot-base-run-id']).toBe('1');
    expect(r).toMatchObject({
      status: 'hydrated',
      runId: 2,
      bytes: whole.length,
      sha256: sha(whole),
      verified: true,
      generation: 0,
      delta: { baseBytes: Buffer.byteLength(RUN1), appendedBytes: Buffer.byteLength(TAIL2) },
    });
    expect((await readFile(file)).equals(whole)).toBe(true);
    expect((await stat(file)).ino).not.toBe(before.ino); // replaced by rename, not written in place
    expect(await tempFilesIn(dir)).toEqual([]);
    expect(await state(file)).toEqual({ scope: expect.any(String), generation: 0, runId: 2, bytes: whole.length, sha256: sha(whole) });

    // And again from run 2.
    fake.store(3, RUN1 + TAIL2 + TAIL3);
    expect(await hydrate(file)).toMatchObject({ status: 'hydrated', runId: 3, delta: { appendedBytes: Buffer.byteLength(TAIL3) } });
    expect(fake.gets[1]!.headers['x-snapshot-base-run-id']).toBe('2');
    expect(await readFile(file, 'utf8')).toBe(RUN1 + TAIL2 + TAIL3);
  });

  it('304 when the held snapshot is the latest: file untouched', async () => {
    const file = await hydratedRun1();
    const before = await stat(file);
    expect(await hydrate(file)).toMatchObject({ status: 'not_modified', sha256: sha(RUN1), runId: 1 });
    expect(fake.gets[0]!.headers['a-im']).toBe('append');
    expect((await stat(file)).ino).toBe(before.ino);
    expect(await readFile(file, 'utf8')).toBe(RUN1);
  });

  it('bytes the service never saw (a local run that was not written) are replaced: held prefix + tail, not file + tail', async () => {
    const file = await hydratedRun1();
    await writeFile(file, RUN1 + '{"local":"never written"}\n');
    fake.store(2, RUN1 + TAIL2);
    expect(await hydrate(file)).toMatchObject({ status: 'hydrated', runId: 2, delta: { baseBytes: Buffer.byteLength(RUN1) } });
    expect(await readFile(file, 'utf8')).toBe(RUN1 + TAIL2);
  });

  it('unsynced local bytes and a 304 for the held snapshot: the file becomes the stored snapshot', async () => {
    const file = await hydratedRun1();
    await writeFile(file, RUN1 + '{"local":"never written"}\n');
    expect(await hydrate(file)).toMatchObject({ status: 'hydrated', runId: 1, bytes: Buffer.byteLength(RUN1), sha256: sha(RUN1), delta: { appendedBytes: 0 } });
    expect(await readFile(file, 'utf8')).toBe(RUN1);
    expect(fake.gets).toHaveLength(1);
  });

  it.each<[string, (h: Record<string, string>, tail: Buffer) => Buffer]>([
    ['a corrupted tail (sha256 does not match)', (_h, t) => (t.writeUInt8(t.readUInt8(3) ^ 0x20, 3), t)],
    ['a truncated tail', (_h, t) => t.subarray(0, t.length - 1)],
    ['a Delta-Base naming another snapshot', (h, t) => ((h['delta-base'] = `"${'0'.repeat(64)}"`), t)],
    ['no IM: append', (h, t) => (delete h.im, t)],
    ['x-snapshot-bytes that does not add up', (h, t) => ((h['x-snapshot-bytes'] = String(Number(h['x-snapshot-bytes']) + 1)), t)],
  ])('%s: falls back to one plain full GET and the file is byte-exact', async (_name, mutate) => {
    const file = await hydratedRun1();
    fake.store(2, RUN1 + TAIL2);
    fake.mutate226 = mutate;
    const { events, logger } = collectEvents();
    const r = await hydrate(file, { logger });
    expect(r).toMatchObject({ status: 'hydrated', runId: 2, sha256: sha(RUN1 + TAIL2), verified: true, attempts: 1 });
    expect(r).not.toHaveProperty('delta');
    expect(fake.gets).toHaveLength(2);
    expect(fake.gets[0]!.headers['a-im']).toBe('append');
    expect(fake.gets[1]!.headers['a-im']).toBeUndefined();
    expect(fake.gets[1]!.headers['x-snapshot-base-run-id']).toBeUndefined();
    expect(fake.gets[1]!.headers['if-none-match']).toBe(`"${sha(RUN1)}"`);
    expect((await readFile(file)).equals(buf(RUN1 + TAIL2))).toBe(true);
    expect(await tempFilesIn(dir)).toEqual([]);
    expect(events.filter((e) => e.event === 'delta_rejected')).toHaveLength(1);
    expect(events.filter((e) => e.level === 'error')).toEqual([]);
    expect(await state(file)).toMatchObject({ runId: 2, bytes: Buffer.byteLength(RUN1 + TAIL2), sha256: sha(RUN1 + TAIL2) });
  });

  it('a service that answers in full (200) is used as today', async () => {
    const file = await hydratedRun1();
    fake.store(2, RUN1 + TAIL2);
    fake.hooks.push((_q, res, _r, f) => {
      const body = f.runs.get(2)!;
      res.writeHead(200, { 'x-snapshot-run-id': '2', 'x-snapshot-sha256': sha(body), 'x-snapshot-generation': '0' }).end(body);
      return true;
    });
    const r = await hydrate(file);
    expect(r).toMatchObject({ status: 'hydrated', runId: 2 });
    expect(r).not.toHaveProperty('delta');
    expect(await readFile(file, 'utf8')).toBe(RUN1 + TAIL2);
  });

  it('a file compacted locally (prefix no longer the held snapshot) gets a plain GET', async () => {
    const file = await hydratedRun1();
    await writeFile(file, 'compacted\n');
    fake.store(2, RUN1 + TAIL2);
    expect(await hydrate(file)).toMatchObject({ status: 'hydrated', runId: 2 });
    expect(fake.gets[0]!.headers['a-im']).toBeUndefined();
    expect(fake.gets[0]!.headers['if-none-match']).toBe(`"${sha('compacted\n')}"`);
    expect(await readFile(file, 'utf8')).toBe(RUN1 + TAIL2);
  });

  it('a 404 (cleared) leaves the file as it is', async () => {
    const file = await hydratedRun1();
    fake.runs.clear();
    fake.latest = undefined;
    expect(await hydrate(file)).toMatchObject({ status: 'not_found' });
    expect(await readFile(file, 'utf8')).toBe(RUN1);
  });

  it('a corrupt state file means no delta headers', async () => {
    const file = await hydratedRun1();
    await writeFile(statePath(file), 'garbage');
    fake.store(2, RUN1 + TAIL2);
    await hydrate(file);
    expect(fake.gets[0]!.headers['a-im']).toBeUndefined();
    expect(await readFile(file, 'utf8')).toBe(RUN1 + TAIL2);
  });
});

describe('a turn end to end against the fake', () => {
  it('two pods alternating: every hydrate after the first two is a 226, every write after the first an append, files byte-exact', async () => {
    const pods = [join(dir, 'a.jsonl'), join(dir, 'b.jsonl')];
    let expected = '';
    for (let turn = 1; turn <= 6; turn++) {
      const file = pods[turn % 2]!;
      const h = await hydrate(file);
      if (turn === 1) expect(h.status).toBe('not_found');
      else expect((await readFile(file)).equals(buf(expected))).toBe(true);
      if (turn >= 3) expect(h).toMatchObject({ status: 'hydrated', delta: expect.any(Object) });
      expected += `{"turn":${turn},"text":"ü ${'z'.repeat(turn)}"}\n`;
      await writeFile(file, expected);
      const w = await write(file, turn);
      expect(w).toMatchObject({ status: 'written', transport: turn === 1 ? 'direct' : 'append' });
      expect(fake.runs.get(turn)?.toString('utf8')).toBe(expected);
    }
    expect(fake.posts.filter((p) => 'appendJsonl' in p.json!)).toHaveLength(5);
    // Sanity: the fake decoded every body it got (gzip for the first, br for the rest).
    expect(fake.posts.map((p) => p.headers['content-encoding'])).toEqual(['gzip', 'br', 'br', 'br', 'br', 'br']);
    expect(gunzipSync(fake.posts[0]!.raw).toString('utf8')).toContain('"snapshotJsonl"');
  });
});
