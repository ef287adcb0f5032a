/**
 * Fault 7: numeric claims outside sane bounds. A validly signed token whose iat/exp/nbf is huge,
 * negative, fractional-and-huge or absurdly old must be `401 Invalid token` — never reach the store,
 * where e.g. `iat: -1e200` used to fail the DynamoDB write (500) after the S3 object was written.
 */
import { SignJWT, type JWTPayload } from 'jose';
import { describe, expect, it } from 'vitest';
import { createVerifier, MIN_ISSUED_AT_SECONDS, scopeFrom } from '../../functions/lib/auth.js';
import { loadConfig } from '../../functions/lib/config.js';
import { ERRORS } from '../../functions/lib/contract.js';
import { HttpError } from '../../functions/lib/errors.js';

const SECRET = 'unit-test-secret-0123456789abcdef';
const SCOPE = { organizationId: 'org-1', agentId: 'agent-1', conversationId: 'conv-1' };
const now = () => Math.floor(Date.now() / 1000);
const verify = createVerifier(loadConfig({ AWS_REGION: 'us-east-1', BUCKET_NAME: 'b', TABLE_NAME: 't', JWT_SECRET: SECRET }));

/** Signs the payload exactly as given (jose's setters would validate; raw claims test the verifier). */
function sign(payload: JWTPayload): Promise<string> {
  return new SignJWT(payload).setProtectedHeader({ alg: 'HS256', typ: 'JWT' }).sign(new TextEncoder().encode(SECRET));
}

async function outcome(payload: JWTPayload): Promise<string> {
  try {
    await verify(`Bearer ${await sign(payload)}`);
    return 'accepted';
  } catch (err) {
    if (err instanceof HttpError) return `${err.statusCode} ${err.spec.code}`;
    return `threw ${String(err)}`;
  }
}

const INVALID = `401 ${ERRORS.invalidToken.code}`;

describe('numeric claims out of bounds → 401 Invalid token', () => {
  const base = () => ({ ...SCOPE, runId: 3, iat: now() - 10, exp: now() + 3600 });
  const cases: [string, () => JWTPayload][] = [
    ['iat -1e200', () => ({ ...base(), iat: -1e200 })],
    ['iat -1', () => ({ ...base(), iat: -1 })],
    ['iat 0 (1970)', () => ({ ...base(), iat: 0 })],
    ['iat one second before the floor', () => ({ ...base(), iat: MIN_ISSUED_AT_SECONDS - 1 })],
    ['iat -0.5', () => ({ ...base(), iat: -0.5 })],
    ['iat 2^53 (beyond safe integers)', () => ({ ...base(), iat: 2 ** 53, exp: 2 ** 53 + 10 })],
    ['iat huge and fractional', () => ({ ...base(), iat: -1.5e300 })],
    ['exp 1e300', () => ({ ...base(), exp: 1e300 })],
    ['exp 2^53', () => ({ ...base(), exp: 2 ** 53 })],
    ['exp -1e200', () => ({ ...base(), exp: -1e200 })],
    ['nbf -1e300', () => ({ ...base(), nbf: -1e300 })],
    ['nbf -1', () => ({ ...base(), nbf: -1 })],
    ['nbf 1e300', () => ({ ...base(), nbf: 1e300 })],
    ['nbf as a string', () => ({ ...base(), nbf: String(now()) })],
  ];
  for (const [name, payload] of cases) {
    it(`${name}`, async () => {
      expect(await outcome(payload())).toBe(INVALID);
    });
  }
});

describe('numeric claims within bounds are still accepted', () => {
  it('a normal token, with nbf', async () => {
    expect(await outcome({ ...SCOPE, runId: 3, iat: now() - 10, nbf: now() - 10, exp: now() + 3600 })).toBe('accepted');
  });
  it('an iat at the floor and a fractional iat (RFC 7519 NumericDate; floored)', async () => {
    expect(await outcome({ ...SCOPE, iat: MIN_ISSUED_AT_SECONDS, exp: now() + 60 })).toBe('accepted');
    const iat = now() - 5;
    const scope = await verify(`Bearer ${await sign({ ...SCOPE, iat: iat + 0.25, exp: now() + 60 })}`);
    expect(scope.issuedAt).toBe(iat);
  });
  it('an exp far in the future but within safe integers', async () => {
    expect(await outcome({ ...SCOPE, iat: now(), exp: Number.MAX_SAFE_INTEGER })).toBe('accepted');
  });
});

describe('scopeFrom enforces the same bounds (it is also called on its own)', () => {
  for (const iat of [-1e200, -1, 0, 2 ** 53, 1e300]) {
    it(`iat ${iat}`, () => {
      expect(() => scopeFrom({ ...SCOPE, iat })).toThrow(HttpError);
      try {
        scopeFrom({ ...SCOPE, iat });
      } catch (err) {
        expect((err as HttpError).spec).toBe(ERRORS.invalidToken);
      }
    });
  }
  it('exp and nbf', () => {
    for (const extra of [{ exp: 1e300 }, { exp: -5 }, { nbf: -1e300 }, { nbf: 2 ** 53 }, { exp: '1' }]) {
      try {
        scopeFrom({ ...SCOPE, iat: 1_700_000_000, ...extra } as JWTPayload);
        expect.unreachable(`accepted ${JSON.stringify(extra)}`);
      } catch (err) {
        expect((err as HttpError).spec).toBe(ERRORS.invalidToken);
      }
    }
  });
});
