/**
 * Token attacks end to end through the HTTP stack (docs/DESIGN.md § Tokens; I6 in § Invariants). Each attack gets the documented
 * 4xx — never a 500 — and the store is unchanged afterwards (the victim's snapshot still hydrates
 * byte-exact, and no S3 object or DynamoDB item was added, changed or removed).
 */
import { createHmac } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SignJWT, exportJWK, exportSPKI, generateKeyPair, type CryptoKey, type JWTPayload } from 'jose';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ERRORS, SNAPSHOT_PATH, type ErrorSpec } from '../../functions/lib/contract.js';
import { Api, freshScope, useLocalService, type Scope } from '../helpers/service.js';
import { startLocalService, type LocalService } from '../../local/service.js';
import { b64url, expectError, storeFingerprint } from './support.js';

const SECRET = 'security-suite-secret-0123456789abcdef';
const ISS = 'https://gateway.example';
const AUD = 'transcript-store';
const VICTIM_BYTES = '{"type":"message","role":"user","content":"victim secret"}\n';

const now = () => Math.floor(Date.now() / 1000);
const claimsOf = (s: Scope, extra: JWTPayload = {}): JWTPayload => ({
  organizationId: s.org,
  agentId: s.agent,
  conversationId: s.conv,
  iss: ISS,
  aud: AUD,
  iat: now(),
  exp: now() + 600,
  ...extra,
});

function hs256(payload: JWTPayload, secret = SECRET, header: Record<string, unknown> = { alg: 'HS256', typ: 'JWT' }): string {
  const input = `${b64url(header)}.${b64url(payload)}`;
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
}

const url = (svc: LocalService) => `${svc.url}${SNAPSHOT_PATH}`;
const call = (svc: LocalService, method: string, token: string, body?: unknown) =>
  fetch(url(svc), {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    ...(body !== undefined && { body: JSON.stringify(body) }),
  });

/** Runs `attack` against all three routes and checks answer + unchanged store. */
async function expectRejectedEverywhere(svc: LocalService, api: Api, victim: Scope, token: string, spec: ErrorSpec): Promise<void> {
  const before = await storeFingerprint(svc);
  await expectError(await call(svc, 'GET', token), spec);
  await expectError(await call(svc, 'POST', token, { terminalStatus: 'completed', snapshotJsonl: 'evil\n', runId: 99 }), spec);
  await expectError(await call(svc, 'DELETE', token), spec);
  expect(await storeFingerprint(svc)).toBe(before);
  expect((await api.hydrate(victim))?.body.toString()).toBe(VICTIM_BYTES);
}

describe('HS256 tokens (shared secret, iss/aud configured)', () => {
  const local = useLocalService({ env: { ...process.env, JWT_SECRET: SECRET, JWT_ISSUER: ISS, JWT_AUDIENCE: AUD } });
  const ctx = {} as { svc: LocalService; api: Api };
  let victim: Scope;
  const write = (s: Scope, runId: number, body: string) =>
    call(ctx.svc, 'POST', hs256(claimsOf(s, { runId })), { terminalStatus: 'completed', snapshotJsonl: body, runId });

  beforeAll(async () => {
    ctx.svc = local.svc;
    ctx.api = new Api(ctx.svc.url, async (c) => hs256(claimsOf(c, c.runId !== undefined ? { runId: c.runId } : {})));
    victim = freshScope('victim');
    expect((await write(victim, 1, VICTIM_BYTES)).status).toBe(200);
  });

  const attacks: [string, () => string][] = [
    ['a forged signature (payload re-signed with another secret)', () => hs256(claimsOf(victim), 'not-the-secret')],
    ['a payload altered after signing', () => {
      const [h, , s] = hs256(claimsOf(freshScope())).split('.');
      return `${h}.${b64url(claimsOf(victim))}.${s}`;
    }],
    ['alg: none with an empty signature', () => `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url(claimsOf(victim))}.`],
    ['alg: none with the signature of a valid token', () => `${b64url({ alg: 'none' })}.${b64url(claimsOf(victim))}.${hs256(claimsOf(victim)).split('.')[2]}`],
    ['an HS512 token (algorithm not allowed)', () => {
      const input = `${b64url({ alg: 'HS512' })}.${b64url(claimsOf(victim))}`;
      return `${input}.${createHmac('sha512', SECRET).update(input).digest('base64url')}`;
    }],
    ['an expired token', () => hs256(claimsOf(victim, { iat: now() - 7200, exp: now() - 3600 }))],
    ['a not-yet-valid token (nbf in an hour)', () => hs256(claimsOf(victim, { nbf: now() + 3600 }))],
    ['a token issued an hour in the future', () => hs256(claimsOf(victim, { iat: now() + 3600, exp: now() + 7200 }))],
    ['a token without exp', () => hs256(claimsOf(victim, { exp: undefined }))],
    ['a token without iat', () => hs256(claimsOf(victim, { iat: undefined }))],
    ['a token with a string exp', () => hs256(claimsOf(victim, { exp: String(now() + 600) as unknown as number }))],
    ['a wrong issuer', () => hs256(claimsOf(victim, { iss: 'https://evil.example' }))],
    ['a wrong audience', () => hs256(claimsOf(victim, { aud: 'someone-else' }))],
    ['no issuer', () => hs256(claimsOf(victim, { iss: undefined }))],
    ['a token that is not a JWT', () => 'definitely-not-a-jwt'],
    ['a JWT with a JSON-array payload', () => hs256([1, 2] as unknown as JWTPayload)],
  ];
  for (const [name, make] of attacks) {
    it(`rejects ${name} with 401 Invalid token on every route, store unchanged`, async () => {
      await expectRejectedEverywhere(ctx.svc, ctx.api, victim, make(), ERRORS.invalidToken);
    });
  }

  it('rejects a missing Authorization header and a non-Bearer scheme with 401', async () => {
    const before = await storeFingerprint(ctx.svc);
    await expectError(await fetch(url(ctx.svc)), ERRORS.invalidToken);
    await expectError(await fetch(url(ctx.svc), { headers: { authorization: `Basic ${hs256(claimsOf(victim))}` } }), ERRORS.invalidToken);
    expect(await storeFingerprint(ctx.svc)).toBe(before);
  });

  it('rejects a validly signed token without conversation scope with 400 Token missing required scope', async () => {
    const { conversationId: _c, ...noConv } = claimsOf(victim);
    await expectRejectedEverywhere(ctx.svc, ctx.api, victim, hs256(noConv), ERRORS.missingScope);
    await expectRejectedEverywhere(ctx.svc, ctx.api, victim, hs256(claimsOf(victim, { organizationId: '' })), ERRORS.missingScope);
    await expectRejectedEverywhere(ctx.svc, ctx.api, victim, hs256(claimsOf(victim, { agentId: 42 as unknown as string })), ERRORS.missingScope);
  });

  it("another conversation's token can neither read, overwrite nor clear the victim", async () => {
    const other = freshScope('attacker');
    const before = await storeFingerprint(ctx.svc, other.conv);
    await expectError(await call(ctx.svc, 'GET', hs256(claimsOf(other))), ERRORS.noSnapshot);
    expect((await call(ctx.svc, 'DELETE', hs256(claimsOf(other)))).status).toBe(200);
    // The clear wrote only the attacker's own fence: everything outside its conversation is unchanged.
    expect(await storeFingerprint(ctx.svc, other.conv)).toBe(before);
    expect((await write(other, 1, 'attacker\n')).status).toBe(200);
    expect((await ctx.api.hydrate(victim))?.body.toString()).toBe(VICTIM_BYTES);
    expect((await ctx.api.hydrate(other))?.body.toString()).toBe('attacker\n');
  });

  it('answers 403 runId out of scope when the body runId differs from the token runId, and a conversation token cannot write', async () => {
    const before = await storeFingerprint(ctx.svc);
    await expectError(await call(ctx.svc, 'POST', hs256(claimsOf(victim, { runId: 5 })), { terminalStatus: 'completed', snapshotJsonl: 'x\n', runId: 6 }), ERRORS.runOutOfScope);
    await expectError(await call(ctx.svc, 'POST', hs256(claimsOf(victim)), { terminalStatus: 'completed', snapshotJsonl: 'x\n', runId: 6 }), ERRORS.runOutOfScope);
    await expectRejectedEverywhere(ctx.svc, ctx.api, victim, hs256(claimsOf(victim, { runId: '5' as unknown as number })), ERRORS.missingScope);
    expect(await storeFingerprint(ctx.svc)).toBe(before);
  });

  it('ids with path tricks reach only their own conversation (I6)', async () => {
    const tricky = ['../' + victim.conv, `${victim.conv}/..`, `${victim.conv}%2F`, `${victim.conv}\u0000`, `./${victim.conv}`, encodeURIComponent(`/${victim.conv}`), `${victim.conv}/`, '..', '.', '%00'];
    for (const conv of tricky) {
      const s = { ...victim, conv };
      const res = await call(ctx.svc, 'GET', hs256(claimsOf(s)));
      expect(res.status, JSON.stringify(conv)).toBe(404);
      await expectError(res, ERRORS.noSnapshot);
    }
    for (const org of [`${victim.org}/${victim.agent}`, '..']) {
      const s = { org, agent: victim.agent, conv: victim.conv };
      await expectError(await call(ctx.svc, 'GET', hs256(claimsOf(s))), ERRORS.noSnapshot);
    }
    // Writing through a tricky id lands in its own conversation only.
    const s = { ...victim, conv: `../${victim.conv}` };
    expect((await write(s, 1, 'tricky\n')).status).toBe(200);
    expect((await ctx.api.hydrate(victim))?.body.toString()).toBe(VICTIM_BYTES);
    expect((await ctx.api.hydrate(s))?.body.toString()).toBe('tricky\n');
  });
});

describe('JWKS key source (RS256/ES256)', () => {
  let jwksServer: Server;
  let jwksRequests = 0;
  let svc: LocalService;
  let api: Api;
  let rsa: { privateKey: CryptoKey; publicKey: CryptoKey };
  let ec: { privateKey: CryptoKey; publicKey: CryptoKey };
  let impostor: { privateKey: CryptoKey; publicKey: CryptoKey };
  let rsaPem: string;
  let victim: Scope;

  const sign = (payload: JWTPayload, key: CryptoKey, header: { alg: string; kid?: string }) =>
    new SignJWT(payload).setProtectedHeader({ typ: 'JWT', ...header }).sign(key);
  const rs = (s: Scope, extra: JWTPayload = {}) => sign(claimsOf(s, extra), rsa.privateKey, { alg: 'RS256', kid: 'rsa-1' });

  beforeAll(async () => {
    rsa = await generateKeyPair('RS256', { extractable: true });
    ec = await generateKeyPair('ES256', { extractable: true });
    impostor = await generateKeyPair('RS256', { extractable: true });
    rsaPem = await exportSPKI(rsa.publicKey);
    const keys = [
      { ...(await exportJWK(rsa.publicKey)), kid: 'rsa-1', alg: 'RS256', use: 'sig' },
      { ...(await exportJWK(ec.publicKey)), kid: 'ec-1', alg: 'ES256', use: 'sig' },
    ];
    jwksServer = createServer((_req, res) => {
      jwksRequests += 1;
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys }));
    });
    await new Promise<void>((resolve) => jwksServer.listen(0, '127.0.0.1', resolve));
    const jwksUrl = `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/.well-known/jwks.json`;
    svc = await startLocalService({ env: { ...process.env, JWKS_URL: jwksUrl, JWT_ISSUER: ISS, JWT_AUDIENCE: AUD } });
    api = new Api(svc.url, (c) => rs(c, c.runId !== undefined ? { runId: c.runId } : {}));
    victim = freshScope('jwks-victim');
    const res = await call(svc, 'POST', await rs(victim, { runId: 1 }), { terminalStatus: 'completed', snapshotJsonl: VICTIM_BYTES, runId: 1 });
    expect(res.status).toBe(200);
  });
  afterAll(async () => {
    await svc?.stop();
    await new Promise((resolve) => jwksServer.close(resolve));
  });
  beforeEach(() => {
    jwksRequests = 0;
  });

  it('accepts RS256 and ES256 tokens signed with published keys', async () => {
    expect((await api.hydrate(victim))?.body.toString()).toBe(VICTIM_BYTES);
    const es = await sign(claimsOf(victim), ec.privateKey, { alg: 'ES256', kid: 'ec-1' });
    expect((await call(svc, 'GET', es)).status).toBe(200);
  });

  it('rejects a token signed by an unpublished key under a published kid', async () => {
    await expectRejectedEverywhere(svc, api, victim, await sign(claimsOf(victim), impostor.privateKey, { alg: 'RS256', kid: 'rsa-1' }), ERRORS.invalidToken);
  });

  it('rejects HS256 signed with the RSA public key (HS/RS confusion) and alg: none', async () => {
    await expectRejectedEverywhere(svc, api, victim, hs256(claimsOf(victim), rsaPem, { alg: 'HS256', kid: 'rsa-1' }), ERRORS.invalidToken);
    await expectRejectedEverywhere(svc, api, victim, `${b64url({ alg: 'none', kid: 'rsa-1' })}.${b64url(claimsOf(victim))}.`, ERRORS.invalidToken);
  });

  it('rejects expired, not-yet-valid, exp-less, iat-less and wrong iss/aud RS256 tokens', async () => {
    for (const extra of [
      { iat: now() - 7200, exp: now() - 3600 },
      { nbf: now() + 3600 },
      { exp: undefined },
      { iat: undefined },
      { iss: 'https://evil.example' },
      { aud: 'someone-else' },
    ] as JWTPayload[]) {
      await expectRejectedEverywhere(svc, api, victim, await rs(victim, extra), ERRORS.invalidToken);
    }
  });

  it('answers 40 tokens with unknown kids with 401 and refetches the JWKS at most once (no refetch storm)', async () => {
    const before = await storeFingerprint(svc);
    const tokens = await Promise.all(
      Array.from({ length: 40 }, (_, i) => sign(claimsOf(victim), impostor.privateKey, { alg: 'RS256', kid: `forged-${i}` })),
    );
    const answers = await Promise.all(tokens.map((t) => call(svc, 'GET', t)));
    for (const a of answers) await expectError(a, ERRORS.invalidToken);
    expect(jwksRequests).toBeLessThanOrEqual(1);
    expect(await storeFingerprint(svc)).toBe(before);
  });
});
