import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import { SignJWT, exportJWK, exportSPKI, generateKeyPair, type CryptoKey, type JWK, type JWTPayload } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createVerifier, scopeFrom, type SecretLoader } from '../../functions/lib/auth.js';
import { loadConfig } from '../../functions/lib/config.js';
import { ERRORS, type ErrorSpec } from '../../functions/lib/contract.js';
import { HttpError } from '../../functions/lib/errors.js';

const SECRET = 'unit-test-secret-0123456789abcdef';
const BASE_ENV = { AWS_REGION: 'us-east-1', BUCKET_NAME: 'bucket', TABLE_NAME: 'table' };
const SCOPE = { organizationId: 'org-1', agentId: 'agent/1', conversationId: 'conv 😀' };
const now = () => Math.floor(Date.now() / 1000);

const secretConfig = (extra: Record<string, string> = {}) => loadConfig({ ...BASE_ENV, JWT_SECRET: SECRET, ...extra });

interface SignOptions {
  alg?: string;
  kid?: string;
  iat?: number | null;
  exp?: number | null;
  nbf?: number;
  iss?: string;
  aud?: string;
}

async function sign(claims: JWTPayload, key: Uint8Array | CryptoKey | string = SECRET, o: SignOptions = {}): Promise<string> {
  const iat = o.iat === undefined ? now() : o.iat;
  const exp = o.exp === undefined ? now() + 3600 : o.exp;
  let jwt = new SignJWT(claims).setProtectedHeader({ alg: o.alg ?? 'HS256', typ: 'JWT', ...(o.kid !== undefined && { kid: o.kid }) });
  if (iat !== null) jwt = jwt.setIssuedAt(iat);
  if (exp !== null) jwt = jwt.setExpirationTime(exp);
  if (o.nbf !== undefined) jwt = jwt.setNotBefore(o.nbf);
  if (o.iss !== undefined) jwt = jwt.setIssuer(o.iss);
  if (o.aud !== undefined) jwt = jwt.setAudience(o.aud);
  return jwt.sign(typeof key === 'string' ? new TextEncoder().encode(key) : key);
}

const b64url = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');

/** The HttpError a promise rejected with (fails the test if it resolved or threw something else). */
async function rejection(p: Promise<unknown>): Promise<HttpError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof HttpError) return err;
    throw err;
  }
  throw new Error('expected an HttpError rejection, but the promise resolved');
}

async function expectSpec(p: Promise<unknown>, spec: ErrorSpec): Promise<HttpError> {
  const err = await rejection(p);
  expect(err.spec).toBe(spec);
  expect(err.statusCode).toBe(spec.status);
  expect(err.message).toBe(spec.message);
  return err;
}

async function expectInvalidToken(p: Promise<unknown>): Promise<void> {
  const err = await expectSpec(p, ERRORS.invalidToken);
  expect(err.headers).toEqual({ 'www-authenticate': 'Bearer' });
}

describe('createVerifier with a shared secret', () => {
  const verify = createVerifier(secretConfig());

  it('accepts a conversation token and returns its scope without a runId', async () => {
    const iat = now() - 10;
    const scope = await verify(`Bearer ${await sign(SCOPE, SECRET, { iat })}`);
    expect(scope).toEqual({ ...SCOPE, runId: undefined, issuedAt: iat });
  });

  it('accepts a per-run token and returns its runId', async () => {
    const scope = await verify(`Bearer ${await sign({ ...SCOPE, runId: 42 })}`);
    expect(scope.runId).toBe(42);
    expect(scope.organizationId).toBe(SCOPE.organizationId);
  });

  it('accepts a lower-case scheme and surrounding blanks', async () => {
    const token = await sign(SCOPE);
    await expect(verify(`bearer  ${token} `)).resolves.toMatchObject(SCOPE);
  });

  it.each([
    ['a missing header', undefined],
    ['an empty header', ''],
    ['a Basic scheme', `Basic ${Buffer.from('a:b').toString('base64')}`],
    ['a bare token without scheme', 'eyJhbGciOiJIUzI1NiJ9.e30.sig'],
    ['Bearer without a token', 'Bearer '],
    ['garbage after Bearer', 'Bearer not-a-jwt'],
    ['three garbage segments', 'Bearer abc.def.ghi'],
    ['two tokens', 'Bearer a.b.c d.e.f'],
  ])('returns 401 with WWW-Authenticate for %s', async (_name, header) => {
    await expectInvalidToken(verify(header));
  });

  it('returns 401 for an expired token', async () => {
    await expectInvalidToken(verify(`Bearer ${await sign(SCOPE, SECRET, { iat: now() - 3600, exp: now() - 60 })}`));
  });

  it('accepts a token that expired within the clock tolerance', async () => {
    await expect(verify(`Bearer ${await sign(SCOPE, SECRET, { iat: now() - 3600, exp: now() - 2 })}`)).resolves.toMatchObject(SCOPE);
  });

  it('returns 401 for a token that is not yet valid (nbf in the future)', async () => {
    await expectInvalidToken(verify(`Bearer ${await sign(SCOPE, SECRET, { nbf: now() + 120 })}`));
  });

  it('returns 401 for a token issued in the future beyond the clock tolerance', async () => {
    await expectInvalidToken(verify(`Bearer ${await sign(SCOPE, SECRET, { iat: now() + 120, exp: now() + 3600 })}`));
  });

  it('accepts a token issued in the future within the clock tolerance', async () => {
    const iat = now() + 2;
    await expect(verify(`Bearer ${await sign(SCOPE, SECRET, { iat })}`)).resolves.toMatchObject({ issuedAt: iat });
  });

  it('returns 401 for a token signed with another key', async () => {
    await expectInvalidToken(verify(`Bearer ${await sign(SCOPE, 'another-secret-0123456789abcdef')}`));
  });

  it('returns 401 for a token whose payload was altered after signing', async () => {
    const [h, , s] = (await sign(SCOPE)).split('.');
    const forged = `${h}.${b64url({ ...SCOPE, organizationId: 'victim', iat: now(), exp: now() + 60 })}.${s}`;
    await expectInvalidToken(verify(`Bearer ${forged}`));
  });

  it('returns 401 for an unsigned alg:none token', async () => {
    const unsigned = `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url({ ...SCOPE, iat: now(), exp: now() + 60 })}.`;
    await expectInvalidToken(verify(`Bearer ${unsigned}`));
  });

  it('returns 401 for an HS256 token when only HS512 is allowed', async () => {
    const verify512 = createVerifier(secretConfig({ JWT_ALGORITHMS: 'HS512' }));
    await expectInvalidToken(verify512(`Bearer ${await sign(SCOPE, SECRET, { alg: 'HS256' })}`));
    await expect(verify512(`Bearer ${await sign(SCOPE, SECRET, { alg: 'HS512' })}`)).resolves.toMatchObject(SCOPE);
  });

  it('returns 401 for a token without exp', async () => {
    await expectInvalidToken(verify(`Bearer ${await sign(SCOPE, SECRET, { exp: null })}`));
  });

  it('returns 401 for a token without iat', async () => {
    await expectInvalidToken(verify(`Bearer ${await sign(SCOPE, SECRET, { iat: null })}`));
  });

  it('returns 401 for a non-numeric iat or exp', async () => {
    const header = b64url({ alg: 'HS256', typ: 'JWT' });
    const { createHmac } = await import('node:crypto');
    const hs = (payload: object) => {
      const input = `${header}.${b64url(payload)}`;
      return `${input}.${createHmac('sha256', SECRET).update(input).digest('base64url')}`;
    };
    // Sanity check of the hand-made signer: a well-formed payload passes.
    await expect(verify(`Bearer ${hs({ ...SCOPE, iat: now(), exp: now() + 60 })}`)).resolves.toMatchObject(SCOPE);
    await expectInvalidToken(verify(`Bearer ${hs({ ...SCOPE, iat: String(now()), exp: now() + 60 })}`));
    await expectInvalidToken(verify(`Bearer ${hs({ ...SCOPE, iat: now(), exp: String(now() + 60) })}`));
  });

  describe('with issuer and audience configured', () => {
    const strict = createVerifier(secretConfig({ JWT_ISSUER: 'https://gateway.example', JWT_AUDIENCE: 'transcript-store' }));
    const good = { iss: 'https://gateway.example', aud: 'transcript-store' };

    it('accepts a token with the configured iss and aud', async () => {
      await expect(strict(`Bearer ${await sign(SCOPE, SECRET, good)}`)).resolves.toMatchObject(SCOPE);
    });

    it('returns 401 for a wrong issuer', async () => {
      await expectInvalidToken(strict(`Bearer ${await sign(SCOPE, SECRET, { ...good, iss: 'https://evil.example' })}`));
    });

    it('returns 401 for a wrong audience', async () => {
      await expectInvalidToken(strict(`Bearer ${await sign(SCOPE, SECRET, { ...good, aud: 'other-service' })}`));
    });

    it('returns 401 when iss or aud is missing', async () => {
      await expectInvalidToken(strict(`Bearer ${await sign(SCOPE, SECRET, { aud: good.aud })}`));
      await expectInvalidToken(strict(`Bearer ${await sign(SCOPE, SECRET, { iss: good.iss })}`));
    });
  });

  describe('scope claims', () => {
    const cases: [string, JWTPayload][] = [];
    for (const claim of ['organizationId', 'agentId', 'conversationId'] as const) {
      const { [claim]: _omitted, ...rest } = SCOPE;
      cases.push([`missing ${claim}`, rest]);
      cases.push([`empty ${claim}`, { ...SCOPE, [claim]: '' }]);
      cases.push([`numeric ${claim}`, { ...SCOPE, [claim]: 7 }]);
      cases.push([`null ${claim}`, { ...SCOPE, [claim]: null }]);
      cases.push([`array ${claim}`, { ...SCOPE, [claim]: ['x'] }]);
      cases.push([`lone-surrogate ${claim}`, { ...SCOPE, [claim]: 'a\uD800' }]);
      cases.push([`over-long ${claim}`, { ...SCOPE, [claim]: 'x'.repeat(1025) }]);
    }
    it.each(cases)('returns 400 missingScope for %s', async (_name, claims) => {
      await expectSpec(verify(`Bearer ${await sign(claims)}`), ERRORS.missingScope);
    });

    it.each([
      ['the string "7"', '7'],
      ['zero', 0],
      ['a negative number', -3],
      ['a fraction', 1.5],
      ['2^53', 2 ** 53],
      ['null', null],
      ['a boolean', true],
    ])('returns 400 missingScope for a runId claim that is %s', async (_name, runId) => {
      await expectSpec(verify(`Bearer ${await sign({ ...SCOPE, runId })}`), ERRORS.missingScope);
    });
  });
});

describe('scopeFrom', () => {
  const iat = 1_700_000_000;

  it('maps verified claims to a scope and floors iat', () => {
    expect(scopeFrom({ ...SCOPE, runId: 9, iat: iat + 0.75, exp: iat + 60 })).toEqual({ ...SCOPE, runId: 9, issuedAt: iat });
  });

  it('leaves runId undefined for a conversation token and ignores unknown claims', () => {
    expect(scopeFrom({ ...SCOPE, iat, extra: 'x', sub: 'user' })).toEqual({ ...SCOPE, runId: undefined, issuedAt: iat });
  });

  it('throws 401 when iat is missing or not a finite number', () => {
    for (const bad of [undefined, Number.NaN, Infinity]) {
      let err: unknown;
      try {
        scopeFrom({ ...SCOPE, iat: bad });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(HttpError);
      expect((err as HttpError).spec).toBe(ERRORS.invalidToken);
    }
  });

  it('throws 400 missingScope for a missing scope claim or a malformed runId', () => {
    try {
      scopeFrom({ organizationId: 'o', agentId: 'a', iat });
      expect.unreachable('a payload without conversationId was accepted');
    } catch (err) {
      expect((err as HttpError).spec).toBe(ERRORS.missingScope);
    }
    for (const runId of ['7', 0, 1.5, -1]) {
      try {
        scopeFrom({ ...SCOPE, runId, iat });
        expect.unreachable(`runId ${String(runId)} accepted`);
      } catch (err) {
        expect((err as HttpError).spec).toBe(ERRORS.missingScope);
      }
    }
  });
});

describe('createVerifier with a secret from Secrets Manager', () => {
  const ARN = 'arn:aws:secretsmanager:us-east-1:123456789012:secret:jwt-abc123';
  const arnConfig = () => loadConfig({ ...BASE_ENV, JWT_SECRET_ARN: ARN });

  it('refuses to build a verifier without a loader', () => {
    expect(() => createVerifier(arnConfig())).toThrow(/loader/);
  });

  it('loads the secret once for ten concurrent first verifications', async () => {
    const calls: string[] = [];
    const loader: SecretLoader = async (arn) => {
      calls.push(arn);
      await new Promise((r) => setTimeout(r, 20));
      return SECRET;
    };
    const verify = createVerifier(arnConfig(), loader);
    const tokens = await Promise.all(Array.from({ length: 10 }, (_, i) => sign({ ...SCOPE, runId: i + 1 })));
    const scopes = await Promise.all(tokens.map((t) => verify(`Bearer ${t}`)));
    expect(scopes.map((s) => s.runId)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(calls).toEqual([ARN]);
    await verify(`Bearer ${tokens[0]}`);
    expect(calls).toHaveLength(1);
  });

  it('does not cache a failed load: the next verification retries', async () => {
    let calls = 0;
    const loader: SecretLoader = async () => {
      calls += 1;
      if (calls === 1) throw new Error('secrets manager unavailable');
      return SECRET;
    };
    const verify = createVerifier(arnConfig(), loader);
    const token = await sign(SCOPE);
    await expect(verify(`Bearer ${token}`)).rejects.toThrow('secrets manager unavailable');
    await expect(verify(`Bearer ${token}`)).resolves.toMatchObject(SCOPE);
    await expect(verify(`Bearer ${token}`)).resolves.toMatchObject(SCOPE);
    expect(calls).toBe(2);
  });

  it('returns 401 for a token signed with a different secret than the loaded one', async () => {
    const verify = createVerifier(arnConfig(), async () => SECRET);
    await expectInvalidToken(verify(`Bearer ${await sign(SCOPE, 'not-the-loaded-secret-0123456789')}`));
  });
});

describe('createVerifier with a JWKS URL', () => {
  let server: Server;
  let url: string;
  let requests = 0;
  let rsa: { privateKey: CryptoKey; publicKey: CryptoKey };
  let ec: { privateKey: CryptoKey; publicKey: CryptoKey };
  let rsaJwk: JWK;
  let rsaPem: string;
  /** What the server answers; tests may swap it (a broken JWKS). */
  let respond: (res: import('node:http').ServerResponse) => void;

  beforeAll(async () => {
    rsa = await generateKeyPair('RS256', { extractable: true });
    ec = await generateKeyPair('ES256', { extractable: true });
    rsaJwk = { ...(await exportJWK(rsa.publicKey)), kid: 'rsa-1', alg: 'RS256', use: 'sig' };
    rsaPem = await exportSPKI(rsa.publicKey);
    const ecJwk = { ...(await exportJWK(ec.publicKey)), kid: 'ec-1', alg: 'ES256', use: 'sig' };
    const body = JSON.stringify({ keys: [rsaJwk, ecJwk] });
    respond = (res) => {
      res.writeHead(200, { 'content-type': 'application/json' }).end(body);
    };
    server = createServer((req, res) => {
      requests += 1;
      respond(res);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/jwks.json`;
  });

  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
  });

  const jwksVerifier = () => createVerifier(loadConfig({ ...BASE_ENV, JWKS_URL: url }));

  it('accepts an RS256 token signed with a published key', async () => {
    const verify = jwksVerifier();
    const token = await sign({ ...SCOPE, runId: 3 }, rsa.privateKey, { alg: 'RS256', kid: 'rsa-1' });
    await expect(verify(`Bearer ${token}`)).resolves.toMatchObject({ ...SCOPE, runId: 3 });
  });

  it('accepts an ES256 token signed with a published key', async () => {
    const verify = jwksVerifier();
    const token = await sign(SCOPE, ec.privateKey, { alg: 'ES256', kid: 'ec-1' });
    await expect(verify(`Bearer ${token}`)).resolves.toMatchObject(SCOPE);
  });

  it('fetches the key set once and reuses it', async () => {
    const verify = jwksVerifier();
    const before = requests;
    for (let i = 0; i < 5; i++) await verify(`Bearer ${await sign(SCOPE, rsa.privateKey, { alg: 'RS256', kid: 'rsa-1' })}`);
    expect(requests - before).toBe(1);
  });

  it('returns 401 for unknown kids and refetches at most once within the cooldown', async () => {
    const verify = jwksVerifier();
    const before = requests;
    const tokens = await Promise.all(
      Array.from({ length: 20 }, () => sign(SCOPE, rsa.privateKey, { alg: 'RS256', kid: randomUUID() })),
    );
    const results = await Promise.allSettled(tokens.map((t) => verify(`Bearer ${t}`)));
    for (const r of results) {
      expect(r.status).toBe('rejected');
      const err = (r as PromiseRejectedResult).reason as HttpError;
      expect(err).toBeInstanceOf(HttpError);
      expect(err.spec).toBe(ERRORS.invalidToken);
    }
    // Sequentially too: each unknown kid within the cooldown must not trigger a fetch.
    for (const t of tokens.slice(0, 5)) await expectInvalidToken(verify(`Bearer ${t}`));
    const fetches = requests - before;
    expect(fetches).toBeGreaterThanOrEqual(1);
    expect(fetches).toBeLessThanOrEqual(2);
  });

  it('returns 401 for a token signed with an unpublished key under a known kid', async () => {
    const other = await generateKeyPair('RS256');
    await expectInvalidToken(jwksVerifier()(`Bearer ${await sign(SCOPE, other.privateKey, { alg: 'RS256', kid: 'rsa-1' })}`));
  });

  it('returns 401 for an HS256 token whose secret is the RSA public key (HS/RS confusion)', async () => {
    const verify = jwksVerifier();
    await expectInvalidToken(verify(`Bearer ${await sign(SCOPE, rsaPem, { alg: 'HS256', kid: 'rsa-1' })}`));
    await expectInvalidToken(verify(`Bearer ${await sign(SCOPE, JSON.stringify(rsaJwk), { alg: 'HS256', kid: 'rsa-1' })}`));
    await expectInvalidToken(verify(`Bearer ${await sign(SCOPE, rsaJwk.n!, { alg: 'HS256' })}`));
  });

  it('returns 401 for an alg:none token carrying a published kid', async () => {
    const unsigned = `${b64url({ alg: 'none', kid: 'rsa-1' })}.${b64url({ ...SCOPE, iat: now(), exp: now() + 60 })}.`;
    await expectInvalidToken(jwksVerifier()(`Bearer ${unsigned}`));
  });

  it('returns 503 (not 401) when the JWKS endpoint answers an error status', async () => {
    const saved = respond;
    respond = (res) => res.writeHead(500).end('oops');
    try {
      const err = await expectSpec(
        jwksVerifier()(`Bearer ${await sign(SCOPE, rsa.privateKey, { alg: 'RS256', kid: 'rsa-1' })}`),
        ERRORS.unavailable,
      );
      expect(err.headers['retry-after']).toBe('1');
    } finally {
      respond = saved;
    }
  });

  it('returns 503 (not 401) when the JWKS endpoint is down', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const verify = createVerifier(loadConfig({ ...BASE_ENV, JWKS_URL: `http://127.0.0.1:${port}/jwks.json` }));
    const err = await expectSpec(verify(`Bearer ${await sign(SCOPE, rsa.privateKey, { alg: 'RS256', kid: 'rsa-1' })}`), ERRORS.unavailable);
    expect(err.headers['retry-after']).toBe('1');
  });

  it('still returns 401 for a malformed token while the JWKS endpoint is down', async () => {
    const verify = createVerifier(loadConfig({ ...BASE_ENV, JWKS_URL: 'http://127.0.0.1:1/jwks.json' }));
    await expectInvalidToken(verify('Bearer not-a-token'));
    await expectInvalidToken(verify(`Bearer ${await sign(SCOPE, SECRET, { alg: 'HS256' })}`));
  });
});
