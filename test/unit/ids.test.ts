import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  MAX_ID_BYTES,
  MAX_PLAIN_SEGMENT,
  RUN_ID_DIGITS,
  conversationKey,
  decodeId,
  encodeId,
  isValidId,
  isValidRunId,
  padRunId,
  type ConversationScope,
} from '../../functions/lib/ids.js';

const RUNS = 2_000;
const SEGMENT = /^[A-Za-z0-9_%-]+$|^~[0-9a-f]{64}$/;

/** Independent reference for the plain form: keep [A-Za-z0-9_-], percent-encode every other UTF-8 byte. */
function referencePlain(id: string): string {
  let out = '';
  for (const ch of id) {
    if (/^[A-Za-z0-9_-]$/.test(ch)) out += ch;
    else for (const b of Buffer.from(ch, 'utf8')) out += '%' + b.toString(16).toUpperCase().padStart(2, '0');
  }
  return out;
}

const sha256 = (s: string) => createHash('sha256').update(s, 'utf8').digest('hex');

/** Pieces that break naive key schemes: separators, dot segments, escapes, NUL, line separators, emoji. */
const NASTY_PIECES = [
  '/', '.', '..', '../', '%2F', '%2f', '%', '%25', '%7E', '~', '\0', '\u2028', '\u2029', '😀', '👩‍👩‍👧', '\\',
  ' ', '+', '?', '#', '&', '=', 'a', 'A', 'z', '0', '-', '_', 'é', 'e\u0301', '\uFEFF', '\r\n',
] as const;

const nastyId: fc.Arbitrary<string> = fc
  .array(fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...NASTY_PIECES) }, { weight: 1, arbitrary: fc.string({ unit: 'grapheme', maxLength: 4 }) }), {
    minLength: 1,
    maxLength: 30,
  })
  .map((parts) => parts.join(''))
  .filter(isValidId);

const longId: fc.Arbitrary<string> = fc.oneof(
  fc.string({ unit: 'grapheme-ascii', minLength: 150, maxLength: 1_024 }),
  fc.string({ unit: 'grapheme', minLength: 60, maxLength: 250 }),
  fc.tuple(fc.constantFrom(...NASTY_PIECES), fc.integer({ min: 50, max: 340 })).map(([p, n]) => p.repeat(n)),
);

/** Any id the service may see in a verified claim (well-formed, 1..MAX_ID_BYTES UTF-8 bytes). */
const anyValidId: fc.Arbitrary<string> = fc
  .oneof(
    fc.string({ unit: 'grapheme', minLength: 1, maxLength: 40 }),
    fc.string({ unit: 'binary', minLength: 1, maxLength: 40 }),
    fc.string({ unit: 'binary-ascii', minLength: 1, maxLength: 40 }),
    nastyId,
    longId,
  )
  .filter(isValidId);

/** A tiny alphabet so that distinct inputs often look alike: maximises near-collisions. */
const smallAlphabetId: fc.Arbitrary<string> = fc
  .array(fc.constantFrom('a', 'b', '/', '.', '%', '2', 'F', '~', '\0'), { minLength: 1, maxLength: 6 })
  .map((p) => p.join(''));

describe('isValidId', () => {
  it('rejects the empty string and non-strings', () => {
    expect(isValidId('')).toBe(false);
    expect(isValidId(undefined)).toBe(false);
    expect(isValidId(null)).toBe(false);
    expect(isValidId(7)).toBe(false);
    expect(isValidId(['a'])).toBe(false);
  });

  it('rejects lone surrogates and accepts paired ones', () => {
    expect(isValidId('\uD800')).toBe(false);
    expect(isValidId('a\uDC00b')).toBe(false);
    expect(isValidId('\uDE00\uD83D')).toBe(false); // reversed pair
    expect(isValidId('\uD83D\uDE00')).toBe(true);
  });

  it('counts UTF-8 bytes against MAX_ID_BYTES', () => {
    expect(MAX_ID_BYTES).toBe(1024);
    expect(isValidId('a'.repeat(MAX_ID_BYTES))).toBe(true);
    expect(isValidId('a'.repeat(MAX_ID_BYTES + 1))).toBe(false);
    // '€' is 3 bytes: 341 × 3 = 1023 fits, 342 × 3 = 1026 does not, although both are < 1024 UTF-16 units.
    expect(isValidId('€'.repeat(341))).toBe(true);
    expect(isValidId('€'.repeat(342))).toBe(false);
  });

  it('rejects every string containing a lone surrogate (property)', () => {
    const lone = fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c));
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', maxLength: 10 }), lone, fc.string({ unit: 'grapheme', maxLength: 10 }), (pre, s, post) => {
        // A high surrogate followed by a low one would form a pair; keep the surrogate lone.
        fc.pre(!(s >= '\uD800' && s <= '\uDBFF' && /^[\uDC00-\uDFFF]/.test(post)));
        fc.pre(!(s >= '\uDC00' && /[\uD800-\uDBFF]$/.test(pre)));
        expect(isValidId(pre + s + post)).toBe(false);
        expect(() => encodeId(pre + s + post)).toThrow(TypeError);
      }),
      { numRuns: RUNS },
    );
  });
});

describe('encodeId', () => {
  it('throws a TypeError for invalid ids instead of encoding them', () => {
    expect(() => encodeId('')).toThrow(TypeError);
    expect(() => encodeId('\uD800')).toThrow(TypeError);
    expect(() => encodeId('a'.repeat(MAX_ID_BYTES + 1))).toThrow(TypeError);
  });

  it('escapes separators, dots, percent signs, tildes and NUL', () => {
    expect(encodeId('/')).toBe('%2F');
    expect(encodeId('.')).toBe('%2E');
    expect(encodeId('..')).toBe('%2E%2E');
    expect(encodeId('%2F')).toBe('%252F');
    expect(encodeId('~')).toBe('%7E');
    expect(encodeId('\0')).toBe('%00');
    expect(encodeId('😀')).toBe('%F0%9F%98%80');
    expect(encodeId('Org_1-a')).toBe('Org_1-a');
  });

  it('keeps ids that look alike apart', () => {
    const ids = ['/', '%2F', '%2f', '%', '%25', '.', '..', '%2E', '~', '%7E', 'a/b', 'a%2Fb', 'a\0b', 'a\u2028b', 'e\u0301', 'é'];
    const segments = ids.map(encodeId);
    expect(new Set(segments).size).toBe(ids.length);
  });

  it('always produces one non-empty, slash-free, dot-free segment of the documented shape (property)', () => {
    fc.assert(
      fc.property(anyValidId, (id) => {
        const seg = encodeId(id);
        expect(seg.length).toBeGreaterThan(0);
        expect(seg).not.toContain('/');
        expect(seg).not.toContain('.');
        expect(seg).toMatch(SEGMENT);
        expect(seg.length).toBeLessThanOrEqual(Math.max(MAX_PLAIN_SEGMENT, 65));
      }),
      { numRuns: RUNS },
    );
  });

  it('equals the reference plain form when short and ~sha256 when long (property)', () => {
    fc.assert(
      fc.property(anyValidId, (id) => {
        const plain = referencePlain(id);
        const seg = encodeId(id);
        if (plain.length <= MAX_PLAIN_SEGMENT) expect(seg).toBe(plain);
        else expect(seg).toBe('~' + sha256(id));
      }),
      { numRuns: RUNS },
    );
  });

  it('takes the hashed form for long ids (property)', () => {
    fc.assert(
      fc.property(longId.filter(isValidId), (id) => {
        fc.pre(referencePlain(id).length > MAX_PLAIN_SEGMENT);
        expect(encodeId(id)).toMatch(/^~[0-9a-f]{64}$/);
        expect(decodeId(encodeId(id))).toBeUndefined();
      }),
      { numRuns: RUNS },
    );
  });

  it('switches to the hashed form exactly past MAX_PLAIN_SEGMENT encoded characters', () => {
    expect(encodeId('a'.repeat(MAX_PLAIN_SEGMENT))).toBe('a'.repeat(MAX_PLAIN_SEGMENT));
    expect(encodeId('a'.repeat(MAX_PLAIN_SEGMENT + 1))).toBe('~' + sha256('a'.repeat(MAX_PLAIN_SEGMENT + 1)));
    // 66 × '/' → 198 chars (plain); 67 × '/' → 201 chars (hashed).
    expect(encodeId('/'.repeat(66))).toBe('%2F'.repeat(66));
    expect(encodeId('/'.repeat(67))).toMatch(/^~[0-9a-f]{64}$/);
  });

  it('round-trips the plain form through decodeId (property)', () => {
    fc.assert(
      fc.property(anyValidId, (id) => {
        const seg = encodeId(id);
        fc.pre(!seg.startsWith('~'));
        expect(decodeId(seg)).toBe(id);
      }),
      { numRuns: RUNS },
    );
  });

  it('is injective on arbitrary pairs of ids (property)', () => {
    fc.assert(
      fc.property(anyValidId, anyValidId, (a, b) => {
        if (a !== b) expect(encodeId(a)).not.toBe(encodeId(b));
        else expect(encodeId(a)).toBe(encodeId(b));
      }),
      { numRuns: RUNS },
    );
  });

  it('is injective on batches of look-alike ids (property)', () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.oneof(smallAlphabetId, nastyId), { minLength: 2, maxLength: 40 }), (ids) => {
        expect(new Set(ids.map(encodeId)).size).toBe(ids.length);
      }),
      { numRuns: RUNS },
    );
  });
});

describe('conversationKey', () => {
  const key = (organizationId: string, agentId: string, conversationId: string) => conversationKey({ organizationId, agentId, conversationId });

  it('keeps triples apart that would alias under naive joining', () => {
    const aliases: [string, string, string][] = [
      ['a/b', 'c', 'd'],
      ['a', 'b/c', 'd'],
      ['a', 'b', 'c/d'],
      ['a%2Fb', 'c', 'd'],
      ['a', '..', 'd'],
      ['a', '.', 'd'],
    ];
    const keys = aliases.map((t) => key(...t));
    expect(new Set(keys).size).toBe(aliases.length);
    expect(key('a/b', 'c', 'd')).toBe('a%2Fb/c/d');
    expect(key('a', 'b/c', 'd')).toBe('a/b%2Fc/d');
  });

  it('has exactly three segments, none a dot segment (property)', () => {
    fc.assert(
      fc.property(anyValidId, anyValidId, anyValidId, (o, a, c) => {
        const parts = key(o, a, c).split('/');
        expect(parts).toHaveLength(3);
        expect(parts).toEqual([encodeId(o), encodeId(a), encodeId(c)]);
        for (const p of parts) expect(p).toMatch(SEGMENT);
      }),
      { numRuns: RUNS },
    );
  });

  it('maps distinct (org, agent, conv) triples to distinct keys (property)', () => {
    const id = fc.oneof(smallAlphabetId, anyValidId);
    const triple = fc.tuple(id, id, id);
    fc.assert(
      fc.property(triple, triple, ([o1, a1, c1], [o2, a2, c2]) => {
        const same = o1 === o2 && a1 === a2 && c1 === c2;
        expect(key(o1, a1, c1) === key(o2, a2, c2)).toBe(same);
      }),
      { numRuns: RUNS },
    );
  });

  it('maps distinct triples built from the same characters to distinct keys (property)', () => {
    // Split one string into three non-empty parts at two cut points: different cuts are the naive-join aliases.
    const split = fc
      .tuple(fc.array(fc.constantFrom('a', 'b', '/', '%', '2', 'F', '.'), { minLength: 3, maxLength: 12 }).map((p) => p.join('')), fc.nat(), fc.nat())
      .map(([s, x, y]): ConversationScope => {
        const i = 1 + (x % (s.length - 2));
        const j = i + 1 + (y % (s.length - i - 1));
        return { organizationId: s.slice(0, i), agentId: s.slice(i, j), conversationId: s.slice(j) };
      });
    fc.assert(
      fc.property(split, split, (p, q) => {
        const same = p.organizationId === q.organizationId && p.agentId === q.agentId && p.conversationId === q.conversationId;
        expect(conversationKey(p) === conversationKey(q)).toBe(same);
      }),
      { numRuns: RUNS },
    );
  });
});

describe('run ids', () => {
  it('accepts only positive safe integers', () => {
    expect(isValidRunId(1)).toBe(true);
    expect(isValidRunId(Number.MAX_SAFE_INTEGER)).toBe(true);
    for (const bad of [0, -1, 1.5, NaN, Infinity, Number.MAX_SAFE_INTEGER + 1, '7', 7n, null, undefined]) {
      expect(isValidRunId(bad)).toBe(false);
    }
  });

  it('pads to RUN_ID_DIGITS so that the largest run id fits', () => {
    expect(padRunId(1)).toBe('0000000000000001');
    expect(padRunId(Number.MAX_SAFE_INTEGER)).toBe('9007199254740991');
    expect(padRunId(Number.MAX_SAFE_INTEGER)).toHaveLength(RUN_ID_DIGITS);
  });

  it('keeps numeric order in lexicographic order (property)', () => {
    const runId = fc.oneof(fc.integer({ min: 1, max: 10_000 }), fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }));
    fc.assert(
      fc.property(runId, runId, (a, b) => {
        const pa = padRunId(a);
        const pb = padRunId(b);
        expect(pa).toHaveLength(RUN_ID_DIGITS);
        expect(Math.sign(a - b)).toBe(pa < pb ? -1 : pa > pb ? 1 : 0);
      }),
      { numRuns: RUNS },
    );
  });
});
