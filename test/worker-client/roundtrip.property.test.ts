import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalService } from '../../local/service.js';
import { hydrateSnapshot, writeSnapshot } from '../../worker-client/src/index.js';
import { parseRetryAfter } from '../../worker-client/src/http.js';
import { conversation, startService, tempDir } from './support.js';

let svc: LocalService;
let dir: string;
let cleanup: () => Promise<void>;

beforeAll(async () => {
  svc = await startService();
  ({ dir, cleanup } = await tempDir());
});
afterAll(async () => {
  await cleanup();
  await svc.stop();
});

/** session.jsonl-like text: JSON lines with arbitrary unicode, or raw lines, LF or CRLF, optional trailing EOL. */
const transcriptArb = fc
  .record({
    lines: fc.array(
      fc.oneof(
        fc.jsonValue().map((v) => JSON.stringify(v)),
        fc.string({ unit: 'binary', maxLength: 200 }),
        fc.string({ unit: 'grapheme', maxLength: 50 }),
      ),
      { minLength: 1, maxLength: 30 },
    ),
    eol: fc.constantFrom('\n', '\r\n'),
    trailing: fc.boolean(),
    bom: fc.boolean(),
  })
  .map(({ lines, eol, trailing, bom }) => (bom ? '\uFEFF' : '') + lines.join(eol) + (trailing ? eol : ''))
  .filter((s) => s.length > 0);

describe('write → hydrate', () => {
  it('is the identity on the file bytes for random transcripts', async () => {
    const c = await conversation(svc);
    let runId = 0;
    await fc.assert(
      fc.asyncProperty(transcriptArb, async (text) => {
        runId += 1;
        const src = join(dir, 'src.jsonl');
        const dst = join(dir, 'dst.jsonl');
        const bytes = Buffer.from(text, 'utf8');
        await writeFile(src, bytes);
        const w = await writeSnapshot({ sessionFile: src, gatewayUrl: svc.url, workerToken: await c.runToken(runId), terminalStatus: 'completed', runId });
        expect(w).toMatchObject({ status: 'written', bytes: bytes.length });
        const h = await hydrateSnapshot({ sessionFile: dst, gatewayUrl: svc.url, workerToken: c.convToken });
        expect(h).toMatchObject({ status: 'hydrated', runId, verified: true });
        const back = await readFile(dst);
        expect(back.equals(bytes)).toBe(true);
        expect(h.status === 'hydrated' && h.sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
      }),
      { numRuns: 40 },
    );
  });
});

describe('parseRetryAfter', () => {
  it('reads delta-seconds exactly and never returns a negative or NaN wait', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 10_000_000 }), (n) => {
        expect(parseRetryAfter(String(n))).toBe(n * 1000);
      }),
    );
    fc.assert(
      fc.property(fc.string(), (s) => {
        const v = parseRetryAfter(s);
        expect(v === undefined || (Number.isFinite(v) && v >= 0)).toBe(true);
      }),
    );
  });

  it('reads an HTTP-date relative to now', () => {
    const now = Date.parse('2026-01-01T00:00:00Z');
    expect(parseRetryAfter('Thu, 01 Jan 2026 00:00:05 GMT', now)).toBe(5000);
    expect(parseRetryAfter('Wed, 31 Dec 2025 23:00:00 GMT', now)).toBe(0);
    expect(parseRetryAfter(null)).toBeUndefined();
  });
});
