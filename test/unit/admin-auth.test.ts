/**
 * Admin tokens (docs/DESIGN.md § Operator API): the worker verify path (same keys, algorithms and time rules),
 * then the admin claims: `transcripts:admin` among the space-delimited `scope` values (RFC 8693 §4.2), a valid
 * `organizationId`, an optional `sub` that becomes the actor.
 */
import { SignJWT, type JWTPayload } from 'jose';
import { describe, expect, it } from 'vitest';
import { ADMIN_SCOPE, adminScopeFrom, createAdminVerifier, createJwtVerifier, createVerifier, hasAdminScope } from '../../functions/lib/auth.js';
import { loadConfig } from '../../functions/lib/config.js';
import { ERRORS } from '../../functions/lib/contract.js';
import { HttpError } from '../../functions/lib/errors.js';

const SECRET = 'unit-test-secret-0123456789abcdef';
const config = loadConfig({ AWS_REGION: 'us-east-1', BUCKET_NAME: 'b', TABLE_NAME: 't', JWT_SECRET: SECRET });
const verifyAdmin = createAdminVerifier(config);
const now = () => Math.floor(Date.now() / 1000);

function sign(payload: JWTPayload, alg = 'HS256', secret = SECRET): Promise<string> {
  return new SignJWT(payload).setProtectedHeader({ alg, typ: 'JWT' }).sign(new TextEncoder().encode(secret));
}

async function outcome(payload: JWTPayload, opts: { alg?: string; secret?: string } = {}): Promise<string> {
  try {
    const admin = await verifyAdmin(`Bearer ${await sign(payload, opts.alg, opts.secret)}`);
    return `ok ${admin.organizationId} ${admin.actor ?? '-'} ${admin.issuedAt}`;
  } catch (err) {
    if (err instanceof HttpError) return `${err.statusCode} ${err.spec.code}`;
    return `threw ${String(err)}`;
  }
}

const base = () => ({ organizationId: 'org-1', scope: ADMIN_SCOPE, iat: now() - 10, exp: now() + 600 });

describe('admin token claims', () => {
  it('resolves to the organization, the actor (sub) and the floored issue time', async () => {
    const iat = now() - 10;
    expect(await outcome({ ...base(), iat: iat + 0.7, sub: 'ops@example.com' })).toBe(`ok org-1 ops@example.com ${iat}`);
    expect(await outcome({ ...base(), iat })).toBe(`ok org-1 - ${iat}`);
  });

  it('finds transcripts:admin among space-delimited scope values, and nowhere else', () => {
    expect(hasAdminScope('transcripts:admin')).toBe(true);
    expect(hasAdminScope('openid transcripts:admin profile')).toBe(true);
    for (const s of ['', 'transcripts:read', 'transcripts:admin2', 'Transcripts:Admin', 'transcripts:admin,openid', ['transcripts:admin'], 42, null, undefined]) {
      expect(hasAdminScope(s), JSON.stringify(s)).toBe(false);
    }
  });

  it('answers 403 admin_scope_required without the scope (a worker token), before looking at anything else', async () => {
    const forbidden = `403 ${ERRORS.adminScopeRequired.code}`;
    expect(await outcome({ ...base(), scope: undefined })).toBe(forbidden);
    expect(await outcome({ ...base(), scope: ['transcripts:admin'] })).toBe(forbidden);
    expect(await outcome({ ...base(), scope: 'transcripts:read' })).toBe(forbidden);
    expect(await outcome({ organizationId: 'o', agentId: 'a', conversationId: 'c', runId: 1, iat: now(), exp: now() + 60 })).toBe(forbidden);
    expect(await outcome({ ...base(), scope: 'openid', organizationId: 42, sub: 7 as unknown as string })).toBe(forbidden);
  });

  it('answers 400 missing_scope for a missing or invalid organizationId, and 401 for a malformed sub', async () => {
    const missing = `400 ${ERRORS.missingScope.code}`;
    expect(await outcome({ ...base(), organizationId: undefined })).toBe(missing);
    expect(await outcome({ ...base(), organizationId: '' })).toBe(missing);
    expect(await outcome({ ...base(), organizationId: 'x'.repeat(1025) })).toBe(missing);
    expect(await outcome({ ...base(), organizationId: '\ud800' })).toBe(missing);
    const invalid = `401 ${ERRORS.invalidToken.code}`;
    expect(await outcome({ ...base(), sub: 42 as unknown as string })).toBe(invalid);
    expect(await outcome({ ...base(), sub: '' })).toBe(invalid);
  });

  it('applies the worker verify path: signature, algorithm allowlist, exp, iat sanity and iat in the future', async () => {
    const invalid = `401 ${ERRORS.invalidToken.code}`;
    expect(await outcome(base(), { secret: 'another-secret-0123456789abcdef!!' })).toBe(invalid);
    expect(await outcome(base(), { alg: 'HS512' })).toBe(invalid);
    expect(await outcome({ ...base(), exp: now() - 60 })).toBe(invalid);
    expect(await outcome({ ...base(), iat: undefined })).toBe(invalid);
    expect(await outcome({ ...base(), iat: now() + 3600 })).toBe(invalid);
    expect(await outcome({ ...base(), iat: -1e200 })).toBe(invalid);
    await expect(verifyAdmin(undefined)).rejects.toMatchObject({ statusCode: 401 });
    await expect(verifyAdmin('Basic abc')).rejects.toMatchObject({ statusCode: 401 });
  });

  it('shares one verify path between worker and admin verifiers, and ignores worker claims on admin tokens', async () => {
    let calls = 0;
    const inner = createJwtVerifier(config);
    const counting = async (h: string | undefined) => {
      calls += 1;
      return inner(h);
    };
    const worker = createVerifier(config, undefined, counting);
    const adminV = createAdminVerifier(config, undefined, counting);
    const both = await sign({ ...base(), agentId: 'a', conversationId: 'c', runId: 3 });
    expect(await adminV(`Bearer ${both}`)).toEqual({ organizationId: 'org-1', actor: undefined, issuedAt: expect.any(Number) });
    expect(await worker(`Bearer ${both}`)).toMatchObject({ organizationId: 'org-1', agentId: 'a', conversationId: 'c', runId: 3 });
    expect(calls).toBe(2);
    expect(() => adminScopeFrom({ organizationId: 'o', scope: ADMIN_SCOPE, iat: 1, exp: 2 })).toThrow(HttpError); // iat before 2000
  });
});
