/**
 * The presigned-upload path checks UTF-8 on the stream, chunk by chunk, without decoding: it must
 * agree with a fatal TextDecoder on the whole buffer however the bytes are split into chunks.
 */
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Inspect, NotUtf8 } from '../../worker-client/src/upload.js';

const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function valid(b: Buffer): boolean {
  try {
    decoder.decode(b);
    return true;
  } catch {
    return false;
  }
}

async function inspect(chunks: Buffer[]): Promise<{ ok: boolean; bytes: number }> {
  const ins = new Inspect();
  try {
    await pipeline(Readable.from(chunks), ins, new Writable({ write: (_c, _e, cb) => cb() }));
    return { ok: true, bytes: ins.bytes };
  } catch (e) {
    if (e instanceof NotUtf8) return { ok: false, bytes: ins.bytes };
    throw e;
  }
}

/** Text pieces plus the classic invalid sequences: stray continuation, truncated, overlong, surrogate, > U+10FFFF. */
const piece = fc.oneof(
  { weight: 8, arbitrary: fc.string({ unit: 'binary', maxLength: 4 }).map((s) => Buffer.from(s.replace(/[\ud800-\udfff]/g, 'x'), 'utf8')) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      [0x80],
      [0xff],
      [0xe2, 0x82],
      [0xf0, 0x9f, 0x9a],
      [0xc0, 0x80],
      [0xed, 0xa0, 0x80],
      [0xf4, 0x90, 0x80, 0x80],
    ).map((a) => Buffer.from(a)),
  },
);

function split(all: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (all.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const p of [...points, all.length]) {
    if (p > prev) out.push(all.subarray(prev, p));
    prev = Math.max(prev, p);
  }
  return out;
}

describe('streaming UTF-8 check of the upload path', () => {
  it('agrees with a fatal TextDecoder on the whole input, for any chunking', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(piece, { maxLength: 20 }), fc.array(fc.nat(), { maxLength: 12 }), async (pieces, cuts) => {
        const all = Buffer.concat(pieces);
        const r = await inspect(split(all, cuts));
        expect(r.ok).toBe(valid(all));
        if (r.ok) expect(r.bytes).toBe(all.length);
      }),
      { numRuns: 500 },
    );
  });

  it('accepts a multi-byte character split across every possible boundary', async () => {
    const all = Buffer.from('a🚀b€c');
    for (let i = 0; i <= all.length; i++) {
      for (let j = i; j <= all.length; j++) {
        expect((await inspect(split(all, [i, j]))).ok).toBe(true);
      }
    }
  });
});
