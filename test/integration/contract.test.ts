import { SignJWT } from 'jose';
import { describe, expect, it } from 'vitest';
import { ERRORS, HEADER_RUN_ID, NDJSON_CONTENT_TYPE, errorBody, type ErrorSpec } from '../../functions/lib/contract.js';
import { freshScope, useLocalService } from '../helpers/service.js';

/** Every row and error of the HTTP contract (docs/DESIGN.md § HTTP contract), through the real handlers and emulators. */
const ctx = useLocalService();

async function expectError(res: Response, spec: ErrorSpec): Promise<void> {
  expect(res.status).toBe(spec.status);
  expect(res.headers.get('content-type')).toMatch(/^application\/json/);
  expect(await res.json()).toEqual(errorBody(spec));
}

describe('GET /worker/transcript/snapshot', () => {
  it('returns 404 No snapshot found for a conversation with no snapshot', async () => {
    const { api } = ctx;
    const res = await api.get(await api.token(freshScope()));
    await expectError(res, ERRORS.noSnapshot);
  });

  it('returns 200 with the stored bytes, ndjson content type and x-snapshot-run-id', async () => {
    const { api } = ctx;
    const scope = freshScope();
    expect((await api.write(scope, 12, '{"type":"session"}\n')).status).toBe(200);
    const res = await api.get(await api.token(scope));
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe(NDJSON_CONTENT_TYPE);
    expect(res.headers.get(HEADER_RUN_ID)).toBe('12');
    expect(await res.text()).toBe('{"type":"session"}\n');
  });

  it('accepts a per-run token as well as a conversation token', async () => {
    const { api } = ctx;
    const scope = freshScope();
    await api.write(scope, 3, 'x\n');
    const res = await api.get(await api.token(scope, { runId: 99 }));
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('x\n');
  });
});

describe('POST /worker/transcript/snapshot', () => {
  it('returns 200 {id} for a new completed run', async () => {
    const { api } = ctx;
    const res = await api.write(freshScope(), 5, 'line\n');
    expect(res.status).toBe(200);
    const body = (await res.json()) as { id: unknown };
    expect(typeof body.id).toBe('number');
    expect(body.id).toBe(5);
  });

  it('returns 409 when the run already has a snapshot', async () => {
    const { api } = ctx;
    const scope = freshScope();
    expect((await api.write(scope, 5, 'first\n')).status).toBe(200);
    await expectError(await api.write(scope, 5, 'second\n'), ERRORS.alreadyExists);
    expect((await api.hydrate(scope))?.body.toString()).toBe('first\n');
  });

  it('checks the body in the contract order: JSON, terminalStatus, snapshotJsonl, size, runId', async () => {
    const { api } = ctx;
    const scope = freshScope();
    const token = await api.token(scope, { runId: 7 });
    await expectError(await api.post(token, '{not json'), ERRORS.invalidJson);
    await expectError(await api.post(token, ''), ERRORS.invalidJson);
    await expectError(await api.post(token, '[1,2]'), ERRORS.invalidJson);
    await expectError(await api.post(token, { terminalStatus: 'done', snapshotJsonl: '', runId: 'x' }), ERRORS.invalidTerminalStatus);
    await expectError(await api.post(token, { snapshotJsonl: 'a', runId: 7 }), ERRORS.invalidTerminalStatus);
    await expectError(await api.post(token, { terminalStatus: 'completed', snapshotJsonl: '', runId: 'x' }), ERRORS.missingSnapshot);
    await expectError(await api.post(token, { terminalStatus: 'completed', snapshotJsonl: 42, runId: 7 }), ERRORS.missingSnapshot);
    await expectError(await api.post(token, { terminalStatus: 'completed', snapshotJsonl: 'ok', runId: 0 }), ERRORS.invalidRunId);
    await expectError(await api.post(token, { terminalStatus: 'completed', snapshotJsonl: 'ok', runId: 1.5 }), ERRORS.invalidRunId);
    await expectError(await api.post(token, { terminalStatus: 'completed', snapshotJsonl: 'ok' }), ERRORS.invalidRunId);
    await expectError(await api.post(token, { terminalStatus: 'completed', snapshotJsonl: 'ok', runId: 8 }), ERRORS.runOutOfScope);
    // None of the rejected requests changed the store.
    expect(await api.hydrate(scope)).toBeUndefined();
  });

  it('returns 413 Snapshot too large above MAX_SNAPSHOT_BYTES, before looking at runId', async () => {
    const { api, svc } = ctx;
    const scope = freshScope();
    const token = await api.token(scope, { runId: 1 });
    const big = 'x'.repeat(svc.config.maxSnapshotBytes + 1);
    await expectError(await api.post(token, { terminalStatus: 'completed', snapshotJsonl: big, runId: 'not-a-number' }), ERRORS.tooLarge);
    expect(await api.hydrate(scope)).toBeUndefined();
  });

  it('returns 403 runId out of scope when the token carries no runId', async () => {
    const { api } = ctx;
    const scope = freshScope();
    const res = await api.post(await api.token(scope), { terminalStatus: 'completed', snapshotJsonl: 'a', runId: 1 });
    await expectError(res, ERRORS.runOutOfScope);
  });

  it('stores non-completed runs but never serves them, and still answers 409 for their duplicates', async () => {
    const { api } = ctx;
    const scope = freshScope();
    for (const [runId, status] of [[1, 'failed'], [2, 'timeout'], [3, 'cancelled']] as const) {
      const res = await api.write(scope, runId, `${status}\n`, status);
      expect(res.status).toBe(200);
      await expectError(await api.write(scope, runId, `${status}\n`, status), ERRORS.alreadyExists);
    }
    expect(await api.hydrate(scope)).toBeUndefined();
  });
});

describe('DELETE /worker/transcript/snapshot', () => {
  it('answers {"deleted": n} and is idempotent', async () => {
    const { api } = ctx;
    const scope = freshScope();
    await api.write(scope, 1, 'a\n');
    await api.write(scope, 2, 'b\n');
    await api.write(scope, 3, 'c\n', 'failed');
    const res = await api.del(await api.token(scope));
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ deleted: 3 });
    const again = await api.del(await api.token(scope));
    expect(again.status).toBe(200);
    expect(await again.json()).toEqual({ deleted: 0 });
    expect(await api.hydrate(scope)).toBeUndefined();
  });
});

describe('authentication on every route', () => {
  const calls = [
    ['GET', undefined],
    ['POST', JSON.stringify({ terminalStatus: 'completed', snapshotJsonl: 'a', runId: 1 })],
    ['DELETE', undefined],
  ] as const;

  for (const [method, body] of calls) {
    it(`${method} returns 401 Invalid token with WWW-Authenticate for missing, malformed, forged and expired tokens`, async () => {
      const { api, svc } = ctx;
      const scope = freshScope();
      const forged = await new SignJWT({ organizationId: scope.org, agentId: scope.agent, conversationId: scope.conv, runId: 1 })
        .setProtectedHeader({ alg: 'HS256' })
        .setIssuedAt()
        .setExpirationTime('1h')
        .sign(new TextEncoder().encode('not-the-service-secret-not-the-service-secret'));
      const expired = await svc.mintToken({ ...scope, runId: 1, issuedAt: Math.floor(Date.now() / 1000) - 7200, ttlSeconds: 60 });
      for (const authorization of [undefined, 'Basic abc', 'Bearer', 'Bearer not.a.jwt', `Bearer ${forged}`, `Bearer ${expired}`]) {
        const res = await fetch(api.url, {
          method,
          headers: { ...(authorization && { authorization }), 'content-type': 'application/json' },
          ...(body !== undefined && { body }),
        });
        await expectError(res, ERRORS.invalidToken);
        expect(res.headers.get('www-authenticate')).toBe('Bearer');
      }
    });

    it(`${method} returns 400 Token missing required scope for a token without org/agent/conversation`, async () => {
      const { api, svc } = ctx;
      for (const claims of [{ agentId: 'a', conversationId: 'c' }, { organizationId: 'o', conversationId: 'c' }, { organizationId: 'o', agentId: 'a', conversationId: '' }]) {
        const token = await new SignJWT({ ...claims, runId: 1 })
          .setProtectedHeader({ alg: 'HS256' })
          .setIssuedAt()
          .setExpirationTime('1h')
          .sign(new TextEncoder().encode(svc.config.keySource.kind === 'secret' ? svc.config.keySource.secret : ''));
        const res = await fetch(api.url, {
          method,
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
          ...(body !== undefined && { body }),
        });
        await expectError(res, ERRORS.missingScope);
      }
    });
  }

  it('answers unknown paths with a JSON 404', async () => {
    const res = await fetch(`${ctx.api.baseUrl}/worker/transcript/other`);
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual(errorBody(ERRORS.notFound));
  });
});
