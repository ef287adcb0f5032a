import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ERRORS, TERMINAL_STATUSES, type ErrorSpec } from '../../functions/lib/contract.js';
import { HttpError } from '../../functions/lib/errors.js';
import { bodyText, parseSnapshotPost, type SnapshotPost } from '../../functions/lib/validation.js';

const MAX = 1_000;

/** Runs the parser and returns the HttpError it threw (fails the test if it did not throw one). */
function rejection(text: string | undefined, max = MAX): HttpError {
  try {
    parseSnapshotPost(text, max);
  } catch (err) {
    if (err instanceof HttpError) return err;
    throw err;
  }
  throw new Error(`expected parseSnapshotPost to reject ${JSON.stringify(text)}`);
}

function expectSpec(text: string | undefined, spec: ErrorSpec, max = MAX): void {
  const err = rejection(text, max);
  expect(err.spec).toBe(spec);
  expect(err.statusCode).toBe(spec.status);
  expect(err.code).toBe(spec.code);
  expect(err.message).toBe(spec.message);
}

const body = (fields: Record<string, unknown>) => JSON.stringify(fields);
const valid = { terminalStatus: 'completed', snapshotJsonl: '{"type":"user"}\n', runId: 7 };

describe('parseSnapshotPost: accepted bodies', () => {
  it('returns the status, the UTF-8 bytes of snapshotJsonl and the runId', () => {
    const snapshot = '{"m":"héllo 😀"}\n{"m":"\\u2028"}\n';
    const post = parseSnapshotPost(body({ ...valid, snapshotJsonl: snapshot }), MAX);
    expect(post.terminalStatus).toBe('completed');
    expect(Buffer.isBuffer(post.snapshot)).toBe(true);
    expect(post.snapshot.equals(Buffer.from(snapshot, 'utf8'))).toBe(true);
    expect(post.runId).toBe(7);
  });

  it.each(TERMINAL_STATUSES)('accepts terminalStatus %s', (status) => {
    expect(parseSnapshotPost(body({ ...valid, terminalStatus: status }), MAX).terminalStatus).toBe(status);
  });

  it('accepts Number.MAX_SAFE_INTEGER as runId and ignores extra fields', () => {
    const post = parseSnapshotPost(body({ ...valid, runId: Number.MAX_SAFE_INTEGER, extra: { nested: true } }), MAX);
    expect(post.runId).toBe(Number.MAX_SAFE_INTEGER);
  });

  it('accepts a JSON number written as 7.0 or 7e0 as runId 7', () => {
    expect(parseSnapshotPost('{"terminalStatus":"failed","snapshotJsonl":"x","runId":7.0}', MAX).runId).toBe(7);
    expect(parseSnapshotPost('{"terminalStatus":"failed","snapshotJsonl":"x","runId":7e0}', MAX).runId).toBe(7);
  });
});

describe('parseSnapshotPost: invalid JSON', () => {
  it.each([
    ['no body', undefined],
    ['empty body', ''],
    ['truncated JSON', '{"terminalStatus":"completed"'],
    ['an array', JSON.stringify([valid])],
    ['null', 'null'],
    ['a number', '42'],
    ['a string', JSON.stringify(JSON.stringify(valid))],
    ['true', 'true'],
    ['form encoding', 'terminalStatus=completed&snapshotJsonl=x&runId=1'],
  ])('rejects %s with invalidJson', (_name, text) => {
    expectSpec(text, ERRORS.invalidJson);
  });
});

describe('parseSnapshotPost: check order (JSON → terminalStatus → snapshotJsonl → size → runId)', () => {
  const huge = 'x'.repeat(MAX + 1);

  it('reports terminalStatus before snapshotJsonl, size and runId', () => {
    expectSpec(body({ terminalStatus: 'running', snapshotJsonl: huge, runId: -1 }), ERRORS.invalidTerminalStatus);
    expectSpec(body({ runId: 'x' }), ERRORS.invalidTerminalStatus);
    expectSpec('{}', ERRORS.invalidTerminalStatus);
  });

  it('reports snapshotJsonl before size and runId', () => {
    expectSpec(body({ terminalStatus: 'completed', snapshotJsonl: '', runId: -1 }), ERRORS.missingSnapshot);
    expectSpec(body({ terminalStatus: 'completed', runId: 'x' }), ERRORS.missingSnapshot);
  });

  it('reports size before runId', () => {
    expectSpec(body({ terminalStatus: 'completed', snapshotJsonl: huge, runId: -1 }), ERRORS.tooLarge);
    expectSpec(body({ terminalStatus: 'completed', snapshotJsonl: huge }), ERRORS.tooLarge);
  });

  it('reports runId last', () => {
    expectSpec(body({ terminalStatus: 'completed', snapshotJsonl: 'x', runId: -1 }), ERRORS.invalidRunId);
  });

  it('reports the first failing check for every combination of broken fields (property)', () => {
    const field = <T, U>(good: T, bad: U) => fc.record({ broken: fc.boolean(), good: fc.constant(good), bad: fc.constant(bad) });
    fc.assert(
      fc.property(
        field('completed', 'done'),
        field('line\n', ''),
        fc.boolean(),
        field(3, 0),
        (status, snap, tooBig, run) => {
          const snapshotJsonl = snap.broken ? snap.bad : tooBig ? huge : snap.good;
          const text = body({
            terminalStatus: status.broken ? status.bad : status.good,
            snapshotJsonl,
            runId: run.broken ? run.bad : run.good,
          });
          const expected = status.broken
            ? ERRORS.invalidTerminalStatus
            : snap.broken
              ? ERRORS.missingSnapshot
              : tooBig
                ? ERRORS.tooLarge
                : run.broken
                  ? ERRORS.invalidRunId
                  : undefined;
          if (expected === undefined) expect(parseSnapshotPost(text, MAX).runId).toBe(3);
          else expectSpec(text, expected);
        },
      ),
      { numRuns: 200 },
    );
  });
});

describe('parseSnapshotPost: terminalStatus', () => {
  it.each([
    ['unknown value', 'running'],
    ['wrong case', 'Completed'],
    ['padded', ' completed'],
    ['inherited name constructor', 'constructor'],
    ['inherited name toString', 'toString'],
    ['__proto__', '__proto__'],
    ['hasOwnProperty', 'hasOwnProperty'],
    ['a number', 1],
    ['null', null],
    ['an array', ['completed']],
    ['an object', { completed: true }],
  ])('rejects %s with invalidTerminalStatus', (_name, terminalStatus) => {
    expectSpec(body({ ...valid, terminalStatus }), ERRORS.invalidTerminalStatus);
  });

  it('does not accept fields hidden behind a __proto__ key', () => {
    // JSON.parse makes "__proto__" an own data property; its contents must not count as the body's fields.
    expectSpec(`{"__proto__":${body(valid)}}`, ERRORS.invalidTerminalStatus);
    expectSpec(`{"terminalStatus":"completed","__proto__":{"snapshotJsonl":"x","runId":1}}`, ERRORS.missingSnapshot);
    expectSpec(`{"terminalStatus":"completed","snapshotJsonl":"x","__proto__":{"runId":1}}`, ERRORS.invalidRunId);
  });

  it('does not let inherited properties satisfy a check', () => {
    const proto = Object.prototype as Record<string, unknown>;
    proto['terminalStatus'] = 'completed';
    proto['snapshotJsonl'] = 'x';
    proto['runId'] = 1;
    try {
      expectSpec('{}', ERRORS.invalidTerminalStatus);
      expectSpec('{"terminalStatus":"completed"}', ERRORS.missingSnapshot);
      expectSpec('{"terminalStatus":"completed","snapshotJsonl":"x"}', ERRORS.invalidRunId);
    } finally {
      delete proto['terminalStatus'];
      delete proto['snapshotJsonl'];
      delete proto['runId'];
    }
  });
});

describe('parseSnapshotPost: snapshotJsonl', () => {
  it.each([
    ['missing', undefined],
    ['empty', ''],
    ['a number', 1],
    ['null', null],
    ['an array of lines', ['{}']],
    ['an object', { line: 1 }],
    ['true', true],
  ])('rejects %s with missingSnapshot', (_name, snapshotJsonl) => {
    expectSpec(body({ ...valid, snapshotJsonl }), ERRORS.missingSnapshot);
  });

  it('rejects a lone surrogate escaped in the JSON text', () => {
    expectSpec('{"terminalStatus":"completed","snapshotJsonl":"a\\ud800b","runId":1}', ERRORS.missingSnapshot);
    expectSpec('{"terminalStatus":"completed","snapshotJsonl":"\\udfff","runId":1}', ERRORS.missingSnapshot);
  });

  it('accepts a surrogate pair escaped in the JSON text', () => {
    const post = parseSnapshotPost('{"terminalStatus":"completed","snapshotJsonl":"\\ud83d\\ude00","runId":1}', MAX);
    expect(post.snapshot.equals(Buffer.from('😀', 'utf8'))).toBe(true);
  });
});

describe('parseSnapshotPost: size limit', () => {
  it('passes a snapshot of exactly the limit and rejects one byte more', () => {
    expect(parseSnapshotPost(body({ ...valid, snapshotJsonl: 'a'.repeat(MAX) }), MAX).snapshot).toHaveLength(MAX);
    expectSpec(body({ ...valid, snapshotJsonl: 'a'.repeat(MAX + 1) }), ERRORS.tooLarge);
  });

  it('counts UTF-8 bytes, not UTF-16 code units', () => {
    // '€' is 1 UTF-16 unit but 3 UTF-8 bytes; '😀' is 2 units and 4 bytes.
    expect(parseSnapshotPost(body({ ...valid, snapshotJsonl: '€'.repeat(MAX / 4) + 'a'.repeat(MAX / 4) }), MAX).snapshot).toHaveLength(MAX);
    expectSpec(body({ ...valid, snapshotJsonl: '€'.repeat(MAX / 2) }), ERRORS.tooLarge); // 500 units, 1,500 bytes
    expect(parseSnapshotPost(body({ ...valid, snapshotJsonl: '😀'.repeat(MAX / 4) }), MAX).snapshot).toHaveLength(MAX);
    expectSpec(body({ ...valid, snapshotJsonl: '😀'.repeat(MAX / 4) + 'a' }), ERRORS.tooLarge);
  });

  it('counts the decoded string, not its JSON escapes', () => {
    // "\n" is two characters in the JSON text but one byte stored.
    const text = `{"terminalStatus":"completed","snapshotJsonl":"${'\\n'.repeat(MAX)}","runId":1}`;
    expect(parseSnapshotPost(text, MAX).snapshot).toHaveLength(MAX);
  });
});

describe('parseSnapshotPost: runId', () => {
  it.each([
    ['zero', '0'],
    ['negative', '-1'],
    ['fractional', '1.5'],
    ['2^53 (not a safe integer)', String(2 ** 53)],
    ['overflowing to Infinity', '1e400'],
    ['negative zero', '-0'],
    ['a numeric string', '"7"'],
    ['the string NaN', '"NaN"'],
    ['the string Infinity', '"Infinity"'],
    ['null', 'null'],
    ['true', 'true'],
    ['an array', '[7]'],
    ['an object', '{"value":7}'],
  ])('rejects %s with invalidRunId', (_name, raw) => {
    expectSpec(`{"terminalStatus":"completed","snapshotJsonl":"x","runId":${raw}}`, ERRORS.invalidRunId);
  });

  it('rejects a missing runId with invalidRunId', () => {
    expectSpec(body({ terminalStatus: 'completed', snapshotJsonl: 'x' }), ERRORS.invalidRunId);
  });
});

describe('bodyText', () => {
  it('returns undefined for a missing body', () => {
    expect(bodyText(undefined, false)).toBeUndefined();
    expect(bodyText(undefined, true)).toBeUndefined();
  });

  it('returns a plain body unchanged', () => {
    expect(bodyText('{"a":"é"}', false)).toBe('{"a":"é"}');
  });

  it('decodes a base64 body that is valid UTF-8', () => {
    const text = body({ ...valid, snapshotJsonl: 'héllo 😀' });
    expect(bodyText(Buffer.from(text, 'utf8').toString('base64'), true)).toBe(text);
  });

  it('returns undefined for a base64 body that is not valid UTF-8', () => {
    expect(bodyText(Buffer.from([0xff, 0xfe, 0x7b]).toString('base64'), true)).toBeUndefined();
    expect(bodyText(Buffer.from([0x7b, 0xc3]).toString('base64'), true)).toBeUndefined(); // truncated sequence
    expect(bodyText(Buffer.from([0xed, 0xa0, 0x80]).toString('base64'), true)).toBeUndefined(); // encoded surrogate
  });

  it('makes a non-UTF-8 body an invalidJson rejection', () => {
    expectSpec(bodyText(Buffer.from([0xff]).toString('base64'), true), ERRORS.invalidJson);
  });
});

describe('parseSnapshotPost: fuzz', () => {
  const seen = new Map<string, number>();
  function expectValidOrContractError(text: string, max: number): void {
    let post: SnapshotPost;
    try {
      post = parseSnapshotPost(text, max);
    } catch (err) {
      expect(err).toBeInstanceOf(HttpError);
      const e = err as HttpError;
      expect([400, 413]).toContain(e.statusCode);
      expect(Object.values(ERRORS)).toContain(e.spec);
      seen.set(e.code, (seen.get(e.code) ?? 0) + 1);
      return;
    }
    seen.set('accepted', (seen.get('accepted') ?? 0) + 1);
    expect(TERMINAL_STATUSES).toContain(post.terminalStatus);
    expect(Number.isSafeInteger(post.runId) && post.runId > 0).toBe(true);
    expect(post.snapshot.length).toBeGreaterThan(0);
    expect(post.snapshot.length).toBeLessThanOrEqual(max);
  }

  const snapshotValue = fc.oneof(
    fc.string({ unit: 'grapheme', maxLength: 30 }),
    fc.string({ unit: 'binary', maxLength: 30 }),
    fc.string({ maxLength: 30, unit: fc.integer({ min: 0xd7f0, max: 0xe010 }).map((c) => String.fromCharCode(c)) }),
    fc.jsonValue({ maxDepth: 2 }),
  );
  const runValue = fc.oneof(
    fc.integer({ min: -5, max: 2 ** 53 + 2 }),
    fc.double(),
    fc.constantFrom(0, -0, 1, 2 ** 53, Number.MAX_SAFE_INTEGER),
    fc.jsonValue({ maxDepth: 1 }),
  );
  const statusValue = fc.oneof(fc.constantFrom(...TERMINAL_STATUSES, 'constructor', '__proto__', ''), fc.jsonValue({ maxDepth: 1 }));
  /** Objects shaped like the contract, with each field sometimes missing or replaced by anything. */
  const contractish = fc
    .record(
      { terminalStatus: statusValue, snapshotJsonl: snapshotValue, runId: runValue, extra: fc.jsonValue({ maxDepth: 2 }) },
      { requiredKeys: [] },
    )
    .map((o) => JSON.stringify(o));
  const anyJson = fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.stringify(v) ?? 'null');
  const anyObject = fc
    .dictionary(fc.oneof(fc.string({ maxLength: 12 }), fc.constantFrom('terminalStatus', 'snapshotJsonl', 'runId', '__proto__', 'constructor')), fc.jsonValue({ maxDepth: 2 }), {
      maxKeys: 6,
    })
    .map((o) => JSON.stringify(o));
  const protoKeyed = fc.tuple(fc.jsonValue({ maxDepth: 2 }), contractish).map(([v, c]) => `{"__proto__":${JSON.stringify(v)},${c.slice(1)}`.replace(',}', '}'));
  const garbage = fc.oneof(fc.string({ unit: 'binary', maxLength: 80 }), fc.string({ unit: 'grapheme-ascii', maxLength: 80 }));
  /** Mutates valid JSON by cutting it or splicing characters in, to reach the parser's edge cases. */
  const mangled = fc
    .tuple(contractish, fc.nat(), fc.constantFrom('', '"', '{', '}', ',', ':', '\\', '\\u', 'nul', '[', ']'))
    .map(([s, at, ins]) => s.slice(0, at % (s.length + 1)) + ins + s.slice(at % (s.length + 1)));

  it('returns a valid SnapshotPost or throws a 400/413 HttpError for arbitrary input (10,000 cases)', () => {
    fc.assert(
      fc.property(fc.oneof(contractish, anyJson, anyObject, protoKeyed, garbage, mangled), fc.integer({ min: 1, max: 64 }), (text, max) => {
        expectValidOrContractError(text, max);
      }),
      { numRuns: 10_000 },
    );
    // The generators must reach every outcome, or the property proves less than it claims.
    const outcomes = ['accepted', ...[ERRORS.invalidJson, ERRORS.invalidTerminalStatus, ERRORS.missingSnapshot, ERRORS.tooLarge, ERRORS.invalidRunId].map((e) => e.code)];
    for (const outcome of outcomes) expect(seen.get(outcome) ?? 0, outcome).toBeGreaterThan(20);
  });

  it('never throws anything but a contract error for deeply nested JSON', () => {
    const deep = '['.repeat(100_000) + ']'.repeat(100_000);
    expectSpec(deep, ERRORS.invalidJson);
    expectSpec(`{"terminalStatus":${deep}}`, ERRORS.invalidTerminalStatus);
  });
});
