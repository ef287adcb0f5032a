/**
 * ≥ 10,000 fast-check cases through the real POST route handler (synthetic API Gateway v2 events,
 * real verifier, real store on the emulators): arbitrary bodies, encodings and headers. Never a 5xx;
 * every 4xx is exactly one of the contract's errors; a 200 only for a body an independent oracle deems
 * valid; and the fuzzed conversation holds nothing but what such a 200 stored.
 */
import { gzipSync } from 'node:zlib';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ERRORS, SNAPSHOT_PATH, TERMINAL_STATUSES } from '../../functions/lib/contract.js';
import { apiEvent } from '../helpers/events.js';
import { freshScope, useLocalService } from '../helpers/service.js';
import { storeFingerprint } from './support.js';

const RUN = 7;
const KNOWN = new Set(Object.values(ERRORS).map((e) => JSON.stringify({ status: e.status, body: { error: e.message, code: e.code } })));

/** Independent oracle for an inline POST body (docs/DESIGN.md § HTTP contract), given the text that reached the handler. */
function acceptable(text: string | undefined): { snapshot: string } | undefined {
  if (text === undefined) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
  const o = v as Record<string, unknown>;
  const own = (k: string) => (Object.hasOwn(o, k) ? o[k] : undefined);
  const status = own('terminalStatus');
  const snap = own('snapshotJsonl');
  if (typeof status !== 'string' || !(TERMINAL_STATUSES as readonly string[]).includes(status)) return undefined;
  if (typeof snap !== 'string' || snap.length === 0 || !snap.isWellFormed() || Buffer.byteLength(snap) > 4 * 1024 * 1024) return undefined;
  if (own('runId') !== RUN) return undefined;
  return status === 'completed' ? { snapshot: snap } : { snapshot: '' };
}

const anyValue = fc.oneof(
  fc.constantFrom(...TERMINAL_STATUSES, 'COMPLETED', '', null, true, 0, -1, RUN, 1e300, '7', [], {}),
  fc.string(),
  fc.integer(),
  fc.double(),
  fc.jsonValue({ maxDepth: 2 }),
);
/** Objects close to valid ones, so the deeper checks (size, runId, scope) are reached too. */
const nearValid = fc
  .record(
    {
      terminalStatus: fc.oneof(fc.constantFrom(...TERMINAL_STATUSES), anyValue),
      snapshotJsonl: fc.oneof(fc.string({ minLength: 1, unit: 'binary' }), anyValue),
      runId: fc.oneof(fc.constant(RUN), fc.integer({ min: -3, max: 20 }), anyValue),
      __proto__: anyValue,
      uploadId: anyValue,
      extra: anyValue,
    },
    { requiredKeys: [] },
  )
  .map((o) => JSON.stringify(o).replace('"__proto__"', Math.random() < 0.5 ? '"__proto__"' : '"constructor"'));
const text = fc.oneof(nearValid, fc.json(), fc.string({ unit: 'binary' }), fc.constantFrom('', '{', 'null', '[]', '{"__proto__":{}}'));
const bytes = fc.oneof(text.map((t) => Buffer.from(t, 'utf8')), fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)));

interface Case {
  raw: Buffer;
  wire: 'text' | 'base64' | 'gzip';
  contentEncoding: string | undefined;
  auth: 'valid' | 'garbage' | 'none';
  garbage: string;
}
const cases = fc.record<Case>({
  raw: bytes,
  wire: fc.constantFrom('text', 'text', 'base64', 'gzip'),
  contentEncoding: fc.oneof(
    { arbitrary: fc.constant(undefined), weight: 6 },
    { arbitrary: fc.constantFrom('identity', 'GZIP', 'x-gzip', 'br', ' gzip ', 'deflate'), weight: 1 },
    { arbitrary: fc.string({ maxLength: 10 }), weight: 1 },
  ),
  auth: fc.constantFrom('valid', 'valid', 'valid', 'valid', 'garbage', 'none'),
  garbage: fc.string({ maxLength: 40 }),
});

describe('fuzzing POST request parsing through the route handler', () => {
  const ctx = useLocalService();

  it('never answers 5xx, answers only documented errors, and stores only what a valid body carried (10,000 cases)', async () => {
    const scope = freshScope('fuzz');
    const token = await ctx.api.token(scope, { runId: RUN });
    const before = await storeFingerprint(ctx.svc);
    let accepted: string | undefined;
    const seen: Record<number, number> = {};

    await fc.assert(
      fc.asyncProperty(cases, async (c) => {
        const headers: Record<string, string> = { 'content-type': 'application/json' };
        if (c.auth === 'valid') headers['authorization'] = `Bearer ${token}`;
        if (c.auth === 'garbage') headers['authorization'] = `Bearer ${c.garbage}`;
        let body: string;
        let isBase64Encoded = false;
        let encoding = c.contentEncoding;
        if (c.wire === 'gzip') {
          body = gzipSync(c.raw).toString('base64');
          isBase64Encoded = true;
          encoding = 'gzip';
        } else if (c.wire === 'base64') {
          body = c.raw.toString('base64');
          isBase64Encoded = true;
        } else {
          body = c.raw.toString('utf8');
        }
        if (encoding !== undefined) headers['content-encoding'] = encoding;
        const res = await ctx.svc.routes.postSnapshot(apiEvent('POST', SNAPSHOT_PATH, { headers, body, isBase64Encoded }));
        seen[res.statusCode] = (seen[res.statusCode] ?? 0) + 1;

        expect(res.statusCode).toBeLessThan(500);
        if (res.statusCode >= 400) {
          expect(KNOWN.has(JSON.stringify({ status: res.statusCode, body: JSON.parse(res.body as string) }))).toBe(true);
        }
        // What the handler actually received as text (what API Gateway would hand it).
        const coding = (encoding ?? 'identity').trim().toLowerCase();
        const plain = coding === 'gzip' || coding === 'x-gzip' ? (c.wire === 'gzip' ? c.raw : undefined) : coding === 'identity' || coding === '' ? (isBase64Encoded ? c.raw : Buffer.from(body, 'utf8')) : undefined;
        let decoded: string | undefined;
        try {
          decoded = plain === undefined ? undefined : new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(plain);
        } catch {
          decoded = undefined;
        }
        const valid = c.auth === 'valid' ? acceptable(decoded) : undefined;
        if (res.statusCode === 200) {
          expect(valid).toBeDefined();
          expect(accepted).toBeUndefined(); // one run, one 200 (I5)
          accepted = valid!.snapshot;
        } else if (valid !== undefined) {
          // A valid body is refused only because run 7 already has its snapshot.
          expect(accepted).toBeDefined();
          expect(res.statusCode).toBe(ERRORS.alreadyExists.status);
        }
      }),
      { numRuns: 10_000, seed: 20261125 },
    );

    console.log('fuzz status counts', seen);
    expect(Object.keys(seen).length).toBeGreaterThanOrEqual(5); // reached 400s, 401, 413/415, 200/409
    // Outside the fuzzed conversation nothing changed; inside it, only what the accepted body stored.
    expect(await storeFingerprint(ctx.svc, scope.conv)).toBe(before);
    const hydrated = await ctx.api.hydrate(scope);
    if (accepted === undefined || accepted === '') expect(hydrated).toBeUndefined();
    else expect(hydrated?.body.toString('utf8')).toBe(accepted);
  }, 120_000);
});
