import { describe, expect, it } from 'vitest';
import { ADMIN_PATHS, ERRORS, errorBody, HEALTH_PATH, JSON_CONTENT_TYPE, SNAPSHOT_PATH } from '../../functions/lib/contract.js';
import { openApiDocument } from '../../functions/lib/openapi.js';
import { OpenApiChecker } from '../helpers/openapi.js';

/**
 * The checker test/integration/openapi.test.ts relies on (test/helpers/openapi.ts) refuses what it must: each
 * answer here is wrong in one way and must be reported, next to a right one that must not be.
 */

const BASE = 'http://localhost';
const jsonRes = (status: number, body: unknown, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body), { status, headers: { 'content-type': JSON_CONTENT_TYPE, 'cache-control': 'no-store', ...headers } });
const health = { status: 'ok', service: 'transcript-store', version: '1.2.3' };

async function problems(method: string, path: string, res: Response, sent = {}): Promise<string[]> {
  return (await new OpenApiChecker(openApiDocument()).check(method, `${BASE}${path}`, res, sent)).problems;
}

describe('OpenApiChecker', () => {
  it('accepts a documented answer', async () => {
    expect(await problems('GET', HEALTH_PATH, jsonRes(200, health))).toEqual([]);
    expect(await problems('GET', SNAPSHOT_PATH, jsonRes(401, errorBody(ERRORS.invalidToken), { 'www-authenticate': 'Bearer' }))).toEqual([]);
  });

  it('reports an undocumented path, method or status', async () => {
    expect(await problems('GET', '/nope', jsonRes(200, health))).toEqual(['GET /nope is not documented']);
    expect(await problems('DELETE', HEALTH_PATH, jsonRes(200, health))).toEqual(['DELETE /health is not documented']);
    expect(await problems('GET', HEALTH_PATH, jsonRes(418, health))).toEqual(['GET /health: status 418 is not documented']);
  });

  it('reports a body its schema refuses: an extra or missing field, a wrong error message or code for the status', async () => {
    expect(await problems('GET', HEALTH_PATH, jsonRes(200, { ...health, extra: 1 }))).toHaveLength(1);
    expect(await problems('GET', HEALTH_PATH, jsonRes(200, { status: 'ok', service: 'transcript-store' }))).toHaveLength(1);
    expect(await problems('GET', SNAPSHOT_PATH, jsonRes(401, { ...errorBody(ERRORS.invalidToken), error: 'Bad token' }, { 'www-authenticate': 'Bearer' }))).toHaveLength(1);
    // A code the operation does not answer with that status.
    expect(await problems('DELETE', SNAPSHOT_PATH, jsonRes(400, errorBody(ERRORS.invalidJson)))).not.toEqual([]);
  });

  it('reports a wrong media type, a body where none is documented, and missing or invalid documented headers', async () => {
    expect(await problems('GET', HEALTH_PATH, new Response(JSON.stringify(health), { status: 200, headers: { 'content-type': 'text/plain', 'cache-control': 'no-store' } }))).toEqual([
      '200: content-type text/plain is not one of application/json',
    ]);
    const sha = '0'.repeat(64);
    const redirect = { 'x-snapshot-generation': '0', 'x-snapshot-run-id': '1', 'x-snapshot-sha256': sha, etag: `"${sha}"`, vary: 'accept-encoding', 'cache-control': 'private, no-cache', location: 'http://s3.local/b/k' };
    expect(await problems('GET', SNAPSHOT_PATH, new Response(null, { status: 307, headers: redirect }))).toEqual([]);
    expect(await problems('GET', SNAPSHOT_PATH, new Response('x', { status: 307, headers: redirect }))).toEqual(['307: a body where none is documented']);
    expect(await problems('GET', SNAPSHOT_PATH, new Response(null, { status: 307, headers: { ...redirect, 'x-snapshot-run-id': '0' } }))).toHaveLength(1);
    expect(await problems('GET', SNAPSHOT_PATH, jsonRes(401, errorBody(ERRORS.invalidToken)))).toEqual(['401: header www-authenticate missing']);
    expect(await problems('GET', HEALTH_PATH, jsonRes(200, health, { 'cache-control': 'max-age=60' }))).toHaveLength(1);
  });

  it('reports, for a 2xx, query parameters and a request body the operation does not document', async () => {
    const page = jsonRes(200, { agents: [], nextCursor: null });
    expect(await problems('GET', ADMIN_PATHS.agents, page.clone(), { query: new URLSearchParams('limit=5') })).toEqual([]);
    expect(await problems('GET', ADMIN_PATHS.agents, page.clone(), { query: new URLSearchParams('limit=500') })).toHaveLength(1);
    expect(await problems('GET', ADMIN_PATHS.agents, page.clone(), { query: new URLSearchParams('foo=1') })).toEqual(['request: query parameter foo is not documented']);
    expect(await problems('GET', ADMIN_PATHS.runs, jsonRes(200, { runs: [], nextCursor: null }), { query: new URLSearchParams('agentId=a') })).toEqual([
      'request: required query parameter conversationId missing',
    ]);
    const stored = jsonRes(200, { id: 1, runId: 1, sha256: '0'.repeat(64), bytes: 2, latest: true });
    expect(await problems('POST', SNAPSHOT_PATH, stored.clone(), { body: { terminalStatus: 'completed', snapshotJsonl: 'x\n', runId: 1 } })).toEqual([]);
    expect(await problems('POST', SNAPSHOT_PATH, stored.clone(), { body: { terminalStatus: 'done', snapshotJsonl: 'x\n', runId: 1 } })).not.toEqual([]);
  });

  it('lists the documented answers it has not seen, per status and per error code', async () => {
    const checker = new OpenApiChecker(openApiDocument());
    expect(checker.unseen()).toContain(`GET ${HEALTH_PATH} 200`);
    expect(checker.unseen()).toContain(`POST ${SNAPSHOT_PATH} 409 reset_fenced`);
    await checker.check('GET', `${BASE}${HEALTH_PATH}`, jsonRes(200, health));
    expect(checker.unseen()).not.toContain(`GET ${HEALTH_PATH} 200`);
    await checker.check('GET', `${BASE}${HEALTH_PATH}`, jsonRes(404, errorBody(ERRORS.notFound)));
    expect(checker.seenUndocumented()).toEqual([`GET ${HEALTH_PATH} 404 not_found`]);
  });
});
