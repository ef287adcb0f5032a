/**
 * The local adapter's route matching (local/adapter.ts `matchRoute`): exact routes, and API Gateway path
 * parameters (`{receiptId}`: one non-empty segment, percent-decoded, passed as `pathParameters`), end to end
 * through a real adapter.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HttpEvent, LambdaHttpHandler } from '../../functions/lib/http.js';
import { matchRoute, startAdapter } from '../../local/adapter.js';

const echo = (name: string): LambdaHttpHandler => async (event: HttpEvent) => ({
  statusCode: 200,
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ name, routeKey: event.routeKey, pathParameters: event.pathParameters ?? null, query: event.queryStringParameters ?? null, raw: event.rawQueryString }),
});

const routes = {
  'GET /admin/erasures': echo('list'),
  'POST /admin/erasures': echo('erase'),
  'GET /admin/erasures/{receiptId}': echo('receipt'),
  'GET /admin/erasures/special': echo('exact'),
};

describe('matchRoute', () => {
  it('prefers an exact route, then a template with one segment per parameter, for the same method only', () => {
    expect(matchRoute(routes, 'GET', '/admin/erasures')?.routeKey).toBe('GET /admin/erasures');
    expect(matchRoute(routes, 'GET', '/admin/erasures/special')?.pathParameters).toBeUndefined();
    expect(matchRoute(routes, 'GET', '/admin/erasures/r-1')).toMatchObject({ routeKey: 'GET /admin/erasures/{receiptId}', pathParameters: { receiptId: 'r-1' } });
    expect(matchRoute(routes, 'GET', '/admin/erasures/a%2Fb')?.pathParameters).toEqual({ receiptId: 'a/b' });
    expect(matchRoute(routes, 'GET', '/admin/erasures/')).toBeUndefined();
    expect(matchRoute(routes, 'GET', '/admin/erasures/a/b')).toBeUndefined();
    expect(matchRoute(routes, 'DELETE', '/admin/erasures/r-1')).toBeUndefined();
  });
});

describe('adapter events', () => {
  let http: Awaited<ReturnType<typeof startAdapter>>;
  beforeAll(async () => {
    http = await startAdapter(routes);
  });
  afterAll(async () => {
    await http.close();
  });

  it('passes path parameters and the raw query; repeated query names are joined with commas as API Gateway does', async () => {
    const res = await fetch(`${http.url}/admin/erasures/20260101T000000000Z-x?a=1&a=2&b=%2F`);
    expect(await res.json()).toEqual({
      name: 'receipt',
      routeKey: 'GET /admin/erasures/{receiptId}',
      pathParameters: { receiptId: '20260101T000000000Z-x' },
      query: { a: '1,2', b: '/' },
      raw: 'a=1&a=2&b=%2F',
    });
    const unknown = await fetch(`${http.url}/admin/erasures/x/y`);
    expect(unknown.status).toBe(404);
  });
});
