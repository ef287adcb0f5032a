import { SignJWT, type JWTPayload } from 'jose';
import { describe, expect, it } from 'vitest';
import { freshScope, useLocalService } from '../helpers/service.js';
import { uploadSnapshot } from '../helpers/uploads.js';

/**
 * Adversarial: validly signed tokens with hostile claims, on every route: never a 5xx, never a write
 * for a token whose claims are out of bounds (401/400/403 only), and the service keeps answering.
 */
const SECRET = 'adversarial-claims-secret-0123456789abcdef';
const ctx = useLocalService({ env: { ...process.env, JWT_SECRET: SECRET } });
const now = () => Math.floor(Date.now() / 1000);

describe('hostile numeric and typed claims', () => {
  const cases: [string, JWTPayload][] = [
    ['runId 1e20', { runId: 1e20 }],
    ['runId -1', { runId: -1 }],
    ['runId 0', { runId: 0 }],
    ['runId 1.5', { runId: 1.5 }],
    ['runId "1"', { runId: '1' }],
    ['runId 2^53', { runId: 2 ** 53 }],
    ['runId null', { runId: null }],
    ['iat string', { iat: String(now()) as unknown as number }],
    ['iat NaN-like huge', { iat: 1e308 }],
    ['iat in the future by an hour', { iat: now() + 3600 }],
    ['exp in the past', { exp: now() - 3600 }],
    ['exp string', { exp: 'never' as unknown as number }],
    ['nbf in the future', { nbf: now() + 3600 }],
    ['conversationId array', { conversationId: ['a'] }],
    ['conversationId empty', { conversationId: '' }],
    ['conversationId huge', { conversationId: 'x'.repeat(5000) }],
    ['organizationId object', { organizationId: { a: 1 } }],
  ];
  for (const [name, claims] of cases) {
    it(`${name}: POST, GET, DELETE and POST uploads never 5xx and store nothing`, async () => {
      const { api } = ctx;
      const scope = freshScope('claims');
      const token = await new SignJWT({ organizationId: scope.org, agentId: scope.agent, conversationId: scope.conv, runId: 1, iat: now(), exp: now() + 600, ...claims })
        .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
        .sign(new TextEncoder().encode(SECRET));
      const post = await api.post(token, { terminalStatus: 'completed', snapshotJsonl: 'x\n', runId: 1 });
      const get = await api.get(token);
      const up = await fetch(`${api.baseUrl}/worker/transcript/snapshot/uploads`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ runId: 1, bytes: 10 }),
      });
      const del = await api.del(token);
      const statuses = [post.status, get.status, up.status, del.status];
      await Promise.all([post, get, up, del].map((r) => r.body?.cancel()));
      for (const s of statuses) expect(s, `${name}: ${statuses.join(',')}`).toBeLessThan(500);
      expect(post.status, `${name}: POST`).not.toBe(200);
      expect(await api.hydrate(scope)).toBeUndefined();
    });
  }
});

describe('odd but valid ids through the whole protocol (presigned upload + copy + hydrate)', () => {
  const convs = ['a/b', 'a%2Fb', '..', 'x'.repeat(300), 'é 💥 %2F', 'with space', 'a+b=c&d?e#f'];
  for (const conv of convs) {
    it(`conversation ${JSON.stringify(conv.length > 40 ? `${conv.slice(0, 10)}…(${conv.length})` : conv)}: upload commits, hydrates, clears`, async () => {
      const { api } = ctx;
      const scope = { ...freshScope('ids'), conv: `${conv}-${Math.random()}` };
      const data = Buffer.from(`bytes for ${conv}\n`);
      const res = await uploadSnapshot(api, scope, 1, data, 'identity');
      expect(res.status, await res.clone().text()).toBe(200);
      expect((await api.hydrate(scope))?.body.equals(data)).toBe(true);
      expect(await api.clear(scope)).toBe(1);
      expect(await api.hydrate(scope)).toBeUndefined();
    });
  }

  it('ids that differ only by escaping never share a conversation', async () => {
    const { api } = ctx;
    const base = freshScope('alias');
    const a = { ...base, conv: `${base.conv}/x` };
    const b = { ...base, conv: `${base.conv}%2Fx` };
    expect((await api.write(a, 1, 'a\n')).status).toBe(200);
    expect(await api.hydrate(b)).toBeUndefined();
  });
});
