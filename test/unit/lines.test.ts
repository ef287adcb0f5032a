/**
 * `GET /admin/lines` underneath (functions/lib/store/lines.ts): the line splitter's rules, and what each storage
 * form reads — over an in-memory S3/DynamoDB stand-in that records every GetObject range and counts the bytes
 * a source produced, so "stops after the page" and "starts at a run boundary" are counted, not timed.
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { createGzip, constants as zlib } from 'node:zlib';
import { DynamoDBClient, GetItemCommand, QueryCommand, type AttributeValue } from '@aws-sdk/client-dynamodb';
import { GetObjectCommand, NoSuchKey } from '@aws-sdk/client-s3';
import { marshall } from '@aws-sdk/util-dynamodb';
import { describe, expect, it } from 'vitest';
import { fragmentOf } from '../../functions/lib/store/chain.js';
import { createStoreContext, type StoreContext } from '../../functions/lib/store/context.js';
import { LineCollector, readLines, START, type LinesPage } from '../../functions/lib/store/lines.js';
import { chainItem, type RunRecord } from '../../functions/lib/store/schema.js';

const MiB = 1024 * 1024;

function collect(chunks: string[], opts: { limit?: number; max?: number; line?: number; offset?: number } = {}) {
  const c = new LineCollector({ line: opts.line ?? 1, offset: opts.offset ?? 0 }, opts.limit ?? 100, opts.max ?? MiB);
  let total = 0;
  let done = false;
  for (const s of chunks) {
    const b = Buffer.from(s);
    total += b.length;
    if (c.push(b)) {
      done = true;
      break;
    }
  }
  if (!done) c.end();
  return c.result((opts.offset ?? 0) + total);
}

describe('LineCollector', () => {
  it('splits lines across chunk boundaries, numbers them and gives their byte offsets', () => {
    const page = collect(['{"a":', '1}\n{"é":2}', '\n', '\n{"c":3}']);
    expect(page.lines.map((l) => [l.line, l.offset, l.bytes, l.text])).toEqual([
      [1, 0, 7, '{"a":1}'],
      [2, 8, 8, '{"é":2}'],
      [3, 17, 0, ''],
      [4, 18, 7, '{"c":3}'],
    ]);
    expect(page.next).toBeUndefined();
  });

  it('stops at the line limit and says where the next page starts', () => {
    const page = collect(['a\nbb\nccc\ndddd\n'], { limit: 2, line: 10, offset: 100 });
    expect(page.lines.map((l) => l.text)).toEqual(['a', 'bb']);
    expect(page.next).toEqual({ line: 12, offset: 105 });
  });

  it('keeps a page within its text budget, and cuts a single longer line at a character boundary', () => {
    const page = collect(['aaaa\nbbbb\ncccc\n'], { max: 9 });
    expect(page.lines.map((l) => l.text)).toEqual(['aaaa', 'bbbb']);
    expect(page.next).toEqual({ line: 3, offset: 10 });
    const cut = collect([`${'é'.repeat(10)}\nx\n`], { max: 8 });
    expect(cut.lines).toEqual([{ line: 1, offset: 0, bytes: 20, text: 'éééé', truncated: true }]);
    expect(cut.next).toEqual({ line: 2, offset: 21 });
    // The budget counts JSON escapes: 5 quotes are 10 encoded bytes.
    const quoted = collect(['"""""\n'], { max: 9 });
    expect(quoted.lines[0]).toMatchObject({ text: '""""', truncated: true, bytes: 5 });
    expect(collect(['😀😀\n'], { max: 6 }).lines[0]).toMatchObject({ text: '😀', truncated: true });
  });

  it('treats a last line without a newline as a line, and an empty input as none', () => {
    expect(collect(['x']).lines.map((l) => l.text)).toEqual(['x']);
    expect(collect([]).lines).toEqual([]);
    expect(collect(['\n']).lines.map((l) => l.text)).toEqual(['']);
  });
});

/** An in-memory S3 (objects by key, ranged GetObject) and DynamoDB (GetItem of a chain, Query of runs) that record what was asked. */
function fakeStore(objects: Map<string, Buffer | (() => Readable)>, items: { chain?: Record<string, AttributeValue>; runs?: Record<string, unknown>[] } = {}) {
  const ranges: { key: string; range: string | undefined }[] = [];
  const s3 = {
    async send(cmd: unknown) {
      if (!(cmd instanceof GetObjectCommand)) throw new Error(`unexpected S3 call ${String(cmd)}`);
      const { Key, Range } = cmd.input;
      ranges.push({ key: Key!, range: Range });
      const obj = objects.get(Key!);
      if (!obj) throw new NoSuchKey({ message: 'The specified key does not exist.', $metadata: {} });
      if (typeof obj === 'function') return { Body: obj() };
      const m = Range ? /^bytes=(\d+)-(\d*)$/.exec(Range) : null;
      const body = m ? obj.subarray(Number(m[1]), m[2] ? Number(m[2]) + 1 : undefined) : obj;
      return { Body: Readable.from([body]) };
    },
  };
  // A real client (the SDK paginator insists on one) whose send never leaves the process.
  const ddb = new DynamoDBClient({ region: 'us-east-1' });
  ddb.send = (async (cmd: unknown) => {
    if (cmd instanceof GetItemCommand) return { Item: items.chain };
    if (cmd instanceof QueryCommand) return { Items: (items.runs ?? []).map((r) => marshall(r)) };
    throw new Error('unexpected DynamoDB call');
  }) as never;
  const ctx = createStoreContext({ s3: s3 as never, ddb: ddb as never, bucket: 'b', table: 't' }) as StoreContext;
  return { ctx, ranges };
}

function record(over: Partial<RunRecord>): RunRecord {
  return {
    runId: 1,
    status: 'completed',
    s3Key: 'k',
    sha256: '0'.repeat(64),
    bytes: 0,
    encoding: 'identity',
    storedBytes: 0,
    iat: 1,
    createdAtMs: 1,
    generation: 0,
    storedSha256: undefined,
    ...over,
  };
}

const opts = { limit: 200, maxTextBytes: MiB };
const lineOf = (i: number) => `{"type":"message","n":${i},"pad":"${'x'.repeat(100)}"}\n`;

describe('readLines', () => {
  it('reads only the start of a 200 MB gzip object for the first page, and one pass to the offset for a later page', async () => {
    const LINE = Buffer.byteLength(lineOf(0)); // every line below has this length
    const BATCH = 1000;
    const block = Buffer.from(Array.from({ length: BATCH }, (_, i) => lineOf(i % 10)).join(''));
    const count = Math.ceil((200 * MiB) / block.length) * BATCH;
    let produced = 0;
    const source = () => {
      produced = 0;
      const blocks = (function* () {
        for (let i = 0; i < count / BATCH; i++) {
          produced += block.length;
          yield block;
        }
      })();
      return Readable.from(blocks).pipe(createGzip({ level: zlib.Z_BEST_SPEED }));
    };
    const run = record({ encoding: 'gzip', bytes: count * LINE, storedBytes: 1 });
    const { ctx } = fakeStore(new Map([['k', source]]));

    const first = (await readLines(ctx, 'pk', run, { line: 1, offset: 0 }, START, opts)) as LinesPage;
    expect(first.lines).toHaveLength(200);
    expect(first.next).toEqual({ line: 201, offset: 200 * LINE, resume: START });
    expect(produced).toBeLessThan(4 * MiB); // of 200 MiB: the read stopped after the page

    const at = 100_003; // ≈ 12 MB in: gzip has no entry points, so this page inflates from the start
    const later = (await readLines(ctx, 'pk', run, { line: at + 1, offset: at * LINE }, START, { ...opts, limit: 3 })) as LinesPage;
    expect(later.lines.map((l) => [l.line, l.offset, l.text])).toEqual([0, 1, 2].map((i) => [at + 1 + i, (at + i) * LINE, lineOf((at + i) % 10).trimEnd()]));
    expect(produced).toBeGreaterThanOrEqual(at * LINE);
    expect(produced).toBeLessThan(at * LINE + 4 * MiB);
  });

  it('reads an identity object from the page’s first byte with one ranged GetObject', async () => {
    const text = Array.from({ length: 50 }, (_, i) => lineOf(i)).join('');
    const { ctx, ranges } = fakeStore(new Map([['k', Buffer.from(text)]]));
    const run = record({ bytes: Buffer.byteLength(text), storedBytes: Buffer.byteLength(text) });
    const offset = Buffer.byteLength(Array.from({ length: 40 }, (_, i) => lineOf(i)).join(''));
    const page = (await readLines(ctx, 'pk', run, { line: 41, offset }, START, opts)) as LinesPage;
    expect(page.lines.map((l) => l.line)).toEqual(Array.from({ length: 10 }, (_, i) => 41 + i));
    expect(page.next).toBeUndefined();
    expect(ranges).toEqual([{ key: 'k', range: `bytes=${offset}-` }]);
  });

  it('decodes a chain run from the cursor’s run boundary, reading only the objects (and ranges) after it', async () => {
    // Three appends → three fragments; objects: [f1 f2] and [f3]. Runs 1..3 end at each fragment.
    const parts = [0, 1, 2].map((r) => Array.from({ length: 100 }, (_, i) => lineOf(r * 100 + i)).join(''));
    const frags = await Promise.all(parts.map((p) => fragmentOf(Buffer.from(p))));
    const objA = Buffer.concat([frags[0]!, frags[1]!]);
    const objB = frags[2]!;
    const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
    const chainId = '00000000-0000-4000-8000-000000000000';
    const chain = chainItem('pk', {
      chainId,
      generation: 0,
      extents: [
        { key: 'A', length: objA.length, sha256: sha(objA) },
        { key: 'B', length: objB.length, sha256: sha(objB) },
      ],
      end: objA.length + objB.length,
      version: 2,
    });
    const bytesAfter = (n: number) => parts.slice(0, n).reduce((s, p) => s + Buffer.byteLength(p), 0);
    const storedAfter = (n: number) => frags.slice(0, n).reduce((s, f) => s + f.length, 0);
    const runs = [1, 2, 3].map((n) => ({ storedBytes: storedAfter(n), bytes: bytesAfter(n) }));
    const { ctx, ranges } = fakeStore(new Map([['A', objA], ['B', objB]]), { chain, runs });
    const whole = parts.join('');
    const run = record({ runId: 3, chainId, bytes: Buffer.byteLength(whole), storedBytes: storedAfter(3), sha256: sha(Buffer.from(whole)) });

    // Page 1 from the start: the next page starts in run 3's lines, so its resume point is the end of run 2.
    const first = (await readLines(ctx, 'pk', run, { line: 1, offset: 0 }, START, { ...opts, limit: 250 })) as LinesPage;
    const firstFifty = Array.from({ length: 50 }, (_, i) => lineOf(200 + i)).join('');
    expect(first.next).toEqual({ line: 251, offset: bytesAfter(2) + Buffer.byteLength(firstFifty), resume: { stored: storedAfter(2), decoded: bytesAfter(2) } });

    ranges.length = 0;
    const second = (await readLines(ctx, 'pk', run, first.next!, first.next!.resume, opts)) as LinesPage;
    expect(second.lines.map((l) => l.line)).toEqual(Array.from({ length: 50 }, (_, i) => 251 + i));
    expect(second.lines.map((l) => `${l.text}\n`).join('')).toBe(parts[2]!.slice(firstFifty.length));
    expect(second.next).toBeUndefined();
    // Only object B, from its first byte: object A (runs 1 and 2) was not read at all.
    expect(ranges).toEqual([{ key: 'B', range: `bytes=0-${objB.length - 1}` }]);

    // From the start, decoding the whole run verifies its sha256: a wrong record is loud.
    await expect(readLines(ctx, 'pk', { ...run, sha256: '1'.repeat(64) }, { line: 1, offset: 0 }, START, { ...opts, limit: 1000 })).rejects.toMatchObject({ code: 'INTEGRITY' });
    // A missing object is 'gone' (the caller reads the record again).
    const { ctx: lost } = fakeStore(new Map([['B', objB]]), { chain, runs });
    expect(await readLines(lost, 'pk', run, { line: 1, offset: 0 }, START, opts)).toBe('gone');
  });
});
