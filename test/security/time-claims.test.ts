/**
 * Fault 7 end to end: validly signed tokens with insane numeric claims (iat -1e200, exp 1e300, nbf
 * -1e300, a fractional huge iat) get `401 Invalid token` on every route — not a 500 — and leave the
 * store exactly as it was (no S3 object that no clear would ever sweep).
 */
import { SignJWT, type JWTPayload } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import { ERRORS } from '../../functions/lib/contract.js';
import { freshScope, useLocalService, type Scope } from '../helpers/service.js';
import { expectError, storeFingerprint } from './support.js';

const SECRET = 'time-claims-secret-0123456789abcdef';
const now = () => Math.floor(Date.now() / 1000);

describe('insane time claims through the local service', () => {
  const ctx = useLocalService({ env: { ...process.env, JWT_SECRET: SECRET } });
  let scope: Scope;
  beforeAll(async () => {
    scope = freshScope('time-claims');
    expect((await ctx.api.write(scope, 1, 'kept\n')).status).toBe(200);
  });

  const sign = (extra: JWTPayload) =>
    new SignJWT({ organizationId: scope.org, agentId: scope.agent, conversationId: scope.conv, iat: now(), exp: now() + 600, ...extra })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .sign(new TextEncoder().encode(SECRET));

  const cases: [string, JWTPayload][] = [
    ['iat -1e200', { iat: -1e200 }],
    ['iat -1.5e300 (huge, fractional)', { iat: -1.5e300 }],
    ['iat 0', { iat: 0 }],
    ['exp 1e300', { exp: 1e300 }],
    ['nbf -1e300', { nbf: -1e300 }],
  ];

  for (const [name, claims] of cases) {
    it(`${name}: POST, GET and DELETE answer 401 and nothing is stored or deleted`, async () => {
      const before = await storeFingerprint(ctx.svc);
      const runToken = await sign({ ...claims, runId: 2 });
      await expectError(await ctx.api.post(runToken, { terminalStatus: 'completed', snapshotJsonl: 'x\n', runId: 2 }), ERRORS.invalidToken);
      const token = await sign(claims);
      await expectError(await ctx.api.get(token), ERRORS.invalidToken);
      await expectError(await ctx.api.del(token), ERRORS.invalidToken);
      await expectError(
        await fetch(`${ctx.api.url}/uploads`, {
          method: 'POST',
          headers: { authorization: `Bearer ${runToken}`, 'content-type': 'application/json' },
          body: JSON.stringify({ runId: 2, bytes: 10 }),
        }),
        ERRORS.invalidToken,
      );
      expect(await storeFingerprint(ctx.svc)).toBe(before);
      expect((await ctx.api.hydrate(scope))?.body.toString()).toBe('kept\n');
    });
  }
});
