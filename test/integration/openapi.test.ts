import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { Logger } from '@aws-lambda-powertools/logger';
import { beforeAll, describe, expect, it } from 'vitest';
import { createRoutes } from '../../functions/lib/app.js';
import { ADMIN_PATHS, ERRORS, HEADER_BASE_RUN_ID, HEADER_GENERATION, HEALTH_PATH, OPENAPI_PATH, SNAPSHOT_PATH, UPLOADS_PATH, type ErrorSpec } from '../../functions/lib/contract.js';
import type { LambdaHttpHandler } from '../../functions/lib/http.js';
import { openApiDocument, OPENAPI_VERSION } from '../../functions/lib/openapi.js';
import { ERASURE_ANSWER_RESERVE_MS } from '../../functions/lib/routes/admin-erase.js';
import { consoleRoute } from '../../functions/lib/routes/console.js';
import { createRouteDeps } from '../../functions/lib/routes/deps.js';
import { CONSOLE_ROUTE, PUBLIC_ROUTES, ROUTES } from '../../infra/routes.js';
import { startAdapter } from '../../local/adapter.js';
import { consoleRouteTable, routeTable } from '../../local/service.js';
import { FaultPlan, withFaultyService } from '../helpers/faults.js';
import { OpenApiChecker, type Checked } from '../helpers/openapi.js';
import { freshScope, useLocalService, type Scope } from '../helpers/service.js';

/**
 * The OpenAPI document (functions/lib/openapi.ts, served at /openapi.json) against the real service: every
 * route, its successes and its errors, through the local service on the emulators (failures of storage
 * through a FaultPlan on the same routes). Each answer must be documented for its operation and match it —
 * status, media type, JSON body by its schema, documented headers present and valid — and each successful
 * request must fit the documented parameters and request body. The last test demands that every answer the
 * document lists was seen here, and nothing else: the document can neither promise nor omit an answer.
 *
 * Small limits make the rare answers cheap: inline answers up to 2 KiB (307, 406), snapshots up to 8 KiB
 * (413), multipart tickets past 1 KiB.
 */

const INLINE_MAX = 2048;
const MAX_SNAPSHOT = 8192;
const silent = () => new Logger({ serviceName: 'transcript-store', logLevel: 'SILENT' });
const local = useLocalService({
  env: { ...process.env, INLINE_RESPONSE_MAX_BYTES: String(INLINE_MAX), MAX_SNAPSHOT_BYTES: String(MAX_SNAPSHOT), MULTIPART_THRESHOLD_BYTES: '1024' },
  logger: silent(),
});
const DOC = openApiDocument();
const checker = new OpenApiChecker(DOC);
const PACKAGE = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { name: string; version: string };

const sha256 = (b: string | Buffer) => createHash('sha256').update(b).digest('hex');
/** NDJSON that gzip cannot shrink much: `n` lines of random base64. */
const incompressible = (lines: number) => Array.from({ length: lines }, () => `{"r":"${randomBytes(60).toString('base64')}"}\n`).join('');

interface Req {
  token?: string | undefined;
  query?: Record<string, string | number> | string;
  headers?: Record<string, string>;
  /** A JSON body (also checked against the documented request body when the answer is 2xx). */
  json?: unknown;
  /** A body sent as is (not checked). */
  raw?: string | Uint8Array;
  /** Another server than the local service (a faulty one). */
  base?: string;
}

/** Sends one request and checks its answer against the document (no problems allowed). */
async function call(method: string, path: string, req: Req = {}): Promise<Checked> {
  const qs = typeof req.query === 'string' ? req.query : new URLSearchParams(Object.entries(req.query ?? {}).map(([k, v]): [string, string] => [k, String(v)])).toString();
  const url = `${req.base ?? local.svc.url}${path}${qs ? `?${qs}` : ''}`;
  const hasBody = req.json !== undefined || req.raw !== undefined;
  const res = await fetch(url, {
    method,
    headers: { ...(req.token !== undefined && { authorization: `Bearer ${req.token}` }), ...(hasBody && { 'content-type': 'application/json' }), ...req.headers },
    ...(hasBody && { body: req.json !== undefined ? JSON.stringify(req.json) : req.raw }),
    redirect: 'manual',
  });
  const { problems, answer } = await checker.check(method, url, res, { query: new URLSearchParams(qs), body: req.json });
  expect(problems, `${method} ${path}${qs ? `?${qs}` : ''} → ${res.status} ${JSON.stringify(answer.body)?.slice(0, 300)}`).toEqual([]);
  return answer;
}

function expectError(a: Checked, spec: ErrorSpec): void {
  expect({ status: a.status, code: a.code }, JSON.stringify(a.body)).toEqual({ status: spec.status, code: spec.code });
}
function expectStatus(a: Checked, status: number): void {
  expect(a.status, JSON.stringify(a.body)?.slice(0, 300)).toBe(status);
}

const workerToken = (scope: Scope, runId?: number) => local.svc.mintToken({ ...scope, ...(runId !== undefined && { runId }) });
const adminToken = (org: string) => local.svc.mintAdminToken({ org, sub: 'openapi-test' });

async function writeRun(scope: Scope, runId: number, snapshotJsonl: string, terminalStatus = 'completed'): Promise<Checked> {
  const a = await call('POST', SNAPSHOT_PATH, { token: await workerToken(scope, runId), json: { terminalStatus, snapshotJsonl, runId } });
  expectStatus(a, 200);
  return a;
}

describe('the document', () => {
  it('is OpenAPI 3.1 and names the package version; /openapi.json serves exactly it, with an etag and 304', async () => {
    expect(DOC['openapi']).toBe(OPENAPI_VERSION);
    expect(OPENAPI_VERSION).toMatch(/^3\.1\./);
    expect(DOC['info']).toMatchObject({ title: PACKAGE.name, version: PACKAGE.version });
    const served = await call('GET', OPENAPI_PATH);
    expectStatus(served, 200);
    expect(served.body).toEqual(DOC);
    const again = await call('GET', OPENAPI_PATH, { headers: { 'if-none-match': served.headers.get('etag')! } });
    expectStatus(again, 304);
    expect(served.headers.get('etag')).toBe(`"${sha256(JSON.stringify(DOC))}"`);
  });

  it('has exactly the routes of infra/routes.ts and of the local route table, and unique operation ids', () => {
    const documented = checker.operationKeys().sort();
    const infra = [...ROUTES, ...PUBLIC_ROUTES, CONSOLE_ROUTE].map((r) => `${r.method} ${r.path}`).concat(`GET ${CONSOLE_ROUTE.assetPath}`).sort();
    const noop: LambdaHttpHandler = async () => ({ statusCode: 204, headers: {} });
    const localTable = Object.keys({ ...routeTable(local.svc.routes), ...consoleRouteTable(noop) }).sort();
    expect(documented).toEqual(infra);
    expect(localTable).toEqual(infra);
    const ids = Object.values(DOC['paths'] as Record<string, Record<string, { operationId: string }>>).flatMap((item) => Object.values(item).map((op) => op.operationId));
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('documents every contract error on some route, except the local server\'s own and the unused 405', () => {
    const codes = new Set([...checker.documented].map((k) => k.split(' ')[3]).filter((c) => c !== undefined));
    const localOnly = [ERRORS.badRequest, ERRORS.headersTooLarge, ERRORS.requestTimeout, ERRORS.methodNotAllowed].map((e) => e.code);
    expect([...codes].sort()).toEqual(Object.values(ERRORS).map((e) => e.code).filter((c) => !localOnly.includes(c)).sort());
    // Each error's component schema fixes the contract's pair.
    const schemas = (DOC['components'] as { schemas: Record<string, { properties: Record<string, { const: string }> }> }).schemas;
    for (const e of Object.values(ERRORS)) expect(schemas[`Error.${e.code}`]!.properties).toEqual({ error: { const: e.message }, code: { const: e.code } });
  });
});

describe('public routes', () => {
  it('GET /health answers the service name and package version, with no token and not one AWS call', async () => {
    const a = await call('GET', HEALTH_PATH);
    expectStatus(a, 200);
    expect(a.body).toEqual({ status: 'ok', service: 'transcript-store', version: PACKAGE.version });
    expect(a.headers.get('cache-control')).toBe('no-store');
    // The same routes over a store whose every AWS call fails: health and the document make none.
    const plan = new FaultPlan().failBeforeCall(1);
    await withFaultyService(local.svc, plan, async (api) => {
      expect((await call('GET', HEALTH_PATH, { base: api.baseUrl })).body).toMatchObject({ status: 'ok' });
      expectStatus(await call('GET', OPENAPI_PATH, { base: api.baseUrl }), 200);
      // A control: a storage route through the same plan does reach storage (and fails).
      expectError(await call('DELETE', SNAPSHOT_PATH, { base: api.baseUrl, token: await workerToken(freshScope('health')) }), ERRORS.internal);
    });
    expect(plan.calls).toEqual([expect.any(String)]); // only the control's one call
  });

  it('the console: page and files, 304 on a matching etag, 404 for another file, 500 when its files cannot be loaded', async () => {
    const page = await call('GET', '/console');
    expectStatus(page, 200);
    expectStatus(await call('GET', '/console', { headers: { 'if-none-match': page.headers.get('etag')! } }), 304);
    const js = await call('GET', '/console/app.js');
    expectStatus(js, 200);
    expectStatus(await call('GET', '/console/app.css'), 200);
    expectStatus(await call('GET', '/console/app.js', { headers: { 'if-none-match': js.headers.get('etag')! } }), 304);
    expectError(await call('GET', '/console/nope.js'), ERRORS.notFound);
    expectError(await call('GET', '/console/index.html'), ERRORS.notFound);
    // The real route whose built files are missing (a broken deployment).
    const broken = await startAdapter(consoleRouteTable(consoleRoute(() => Promise.reject(new Error('console/ is missing')), silent())));
    try {
      expectError(await call('GET', '/console', { base: broken.url }), ERRORS.internal);
      expectError(await call('GET', '/console/app.js', { base: broken.url }), ERRORS.internal);
    } finally {
      await broken.close();
    }
  });
});

describe('worker routes', () => {
  const scope = freshScope('oas');
  const big = freshScope('oas-big');
  const first = '{"type":"session","id":"s"}\n{"type":"message","n":1}\n';
  const appended = '{"type":"message","n":2}\n';
  let firstSha: string;

  it('POST: whole, append and both upload commits; every refusal in the check order', async () => {
    const w1 = await writeRun(scope, 1, first);
    firstSha = (w1.body as { sha256: string }).sha256;
    expect(firstSha).toBe(sha256(first));
    const whole = first + appended;
    const t2 = await workerToken(scope, 2);
    const append = { terminalStatus: 'completed', runId: 2, appendJsonl: appended, base: { runId: 1, bytes: Buffer.byteLength(first), sha256: firstSha }, sha256: sha256(whole) };
    expectStatus(await call('POST', SNAPSHOT_PATH, { token: t2, json: append }), 200);

    const t3 = await workerToken(scope, 3);
    const post = (json: unknown, extra: Req = {}) => call('POST', SNAPSHOT_PATH, { token: t3, json, ...extra });
    expectError(await call('POST', SNAPSHOT_PATH, { json: { terminalStatus: 'completed', snapshotJsonl: 'x\n', runId: 3 } }), ERRORS.invalidToken);
    expectError(await post({}, { token: await local.svc.mintToken({ ...scope, conv: '', runId: 3 }) }), ERRORS.missingScope);
    expectError(await post({}, { headers: { [HEADER_GENERATION]: '-1' } }), ERRORS.invalidGeneration);
    expectError(await call('POST', SNAPSHOT_PATH, { token: t3, raw: 'x', headers: { 'content-encoding': 'compress' } }), ERRORS.unsupportedEncoding);
    expectError(await post({ terminalStatus: 'completed', snapshotJsonl: 'x'.repeat(MAX_SNAPSHOT + 1), runId: 3 }), ERRORS.tooLarge);
    expectError(await call('POST', SNAPSHOT_PATH, { token: t3, raw: 'not json' }), ERRORS.invalidJson);
    expectError(await post({ terminalStatus: 'done', snapshotJsonl: 'x\n', runId: 3 }), ERRORS.invalidTerminalStatus);
    expectError(await post({ terminalStatus: 'completed', uploadId: '', runId: 3 }), ERRORS.invalidUploadId);
    expectError(await post({ terminalStatus: 'completed', snapshotJsonl: 'x\n', runId: 0 }), ERRORS.invalidRunId);
    expectError(await post({ terminalStatus: 'completed', uploadId: 'u', runId: 3, parts: [] }), ERRORS.invalidParts);
    expectError(await post({ terminalStatus: 'completed', appendJsonl: 'x\n', runId: 3, base: { runId: 1 }, sha256: sha256('x') }), ERRORS.invalidAppend);
    expectError(await post({ terminalStatus: 'completed', runId: 3 }), ERRORS.missingSnapshot);
    expectError(await post({ terminalStatus: 'completed', snapshotJsonl: 'x\n', runId: 4 }), ERRORS.runOutOfScope);
    expectError(await call('POST', SNAPSHOT_PATH, { token: await workerToken(scope, 1), json: { terminalStatus: 'completed', snapshotJsonl: first, runId: 1 } }), ERRORS.alreadyExists);
    expectError(await post({ terminalStatus: 'completed', snapshotJsonl: 'x\n', runId: 3 }, { headers: { [HEADER_GENERATION]: '99' } }), ERRORS.resetFenced);
    const base = { runId: 2, bytes: Buffer.byteLength(whole), sha256: sha256(whole) };
    expectError(await post({ terminalStatus: 'completed', appendJsonl: 'y\n', runId: 3, base: { ...base, sha256: '0'.repeat(64) }, sha256: sha256(`${whole}y\n`) }), ERRORS.baseMismatch);
    expectError(await post({ terminalStatus: 'completed', appendJsonl: 'y\n', runId: 3, base, sha256: '0'.repeat(64) }), ERRORS.digestMismatch);
    expectError(await post({ terminalStatus: 'completed', uploadId: 'not-one-of-ours', runId: 3 }), ERRORS.uploadNotFound);

    // Presigned uploads: single PUT, multipart (past 1 KiB here), and one whose size is not the announced one.
    const ticket = async (runId: number, bytes: number) => {
      const a = await call('POST', UPLOADS_PATH, { token: await workerToken(scope, runId), json: { runId, bytes } });
      expectStatus(a, 200);
      return a.body as { uploadId: string; url?: string; parts?: { partNumber: number; url: string }[] };
    };
    const put = async (url: string, body: string) => {
      const res = await fetch(url, { method: 'PUT', body });
      expect(res.status).toBe(200);
      return res.headers.get('etag')!;
    };
    const commit = async (runId: number, uploadId: string, parts?: { partNumber: number; etag: string }[]) =>
      call('POST', SNAPSHOT_PATH, { token: await workerToken(scope, runId), json: { terminalStatus: 'completed', runId, uploadId, ...(parts && { parts }) } });
    const small = '{"upload":"single"}\n';
    const single = await ticket(5, Buffer.byteLength(small));
    await put(single.url!, small);
    expectStatus(await commit(5, single.uploadId), 200);
    const large = incompressible(20);
    const multi = await ticket(6, Buffer.byteLength(large));
    expect(multi.parts).toHaveLength(1);
    const etag = await put(multi.parts![0]!.url, large);
    expectStatus(await commit(6, multi.uploadId, [{ partNumber: 1, etag }]), 200);
    const short = await ticket(7, 100);
    await put(short.url!, '{"short":true}\n');
    expectError(await commit(7, short.uploadId), ERRORS.uploadInvalid);
  });

  it('POST …/uploads refusals', async () => {
    const t = await workerToken(scope, 9);
    const up = (json: unknown, extra: Req = {}) => call('POST', UPLOADS_PATH, { token: t, json, ...extra });
    expectError(await call('POST', UPLOADS_PATH, { json: { runId: 9, bytes: 1 } }), ERRORS.invalidToken);
    expectError(await up({ runId: 9, bytes: 1 }, { token: await local.svc.mintToken({ ...scope, conv: '', runId: 9 }) }), ERRORS.missingScope);
    expectError(await up({ runId: 9, bytes: 1 }, { headers: { [HEADER_GENERATION]: 'x' } }), ERRORS.invalidGeneration);
    expectError(await call('POST', UPLOADS_PATH, { token: t, raw: 'x', headers: { 'content-encoding': 'compress' } }), ERRORS.unsupportedEncoding);
    expectError(await call('POST', UPLOADS_PATH, { token: t, raw: '[]' }), ERRORS.invalidJson);
    expectError(await up({ runId: 0, bytes: 1 }), ERRORS.invalidRunId);
    expectError(await up({ runId: 9, bytes: 0 }), ERRORS.invalidUploadSize);
    expectError(await up({ runId: 9, bytes: 2 ** 50 }), ERRORS.tooLarge);
    expectError(await up({ runId: 9, bytes: 10, contentEncoding: 'br' }), ERRORS.invalidContentEncoding);
    expectError(await up({ runId: 8, bytes: 10 }), ERRORS.runOutOfScope);
  });

  it('GET: 200 (identity and gzip), 304, 226 delta, 307 and 406 past the inline limit, 404, and its refusals', async () => {
    const t = await workerToken(scope);
    const plain = await call('GET', SNAPSHOT_PATH, { token: t, headers: { 'accept-encoding': 'identity' } });
    expectStatus(plain, 200);
    expect(plain.headers.get('x-snapshot-run-id')).toBe('6'); // the multipart upload is the highest run
    expectStatus(await call('GET', SNAPSHOT_PATH, { token: t, headers: { 'accept-encoding': 'gzip' } }), 200);
    expectStatus(await call('GET', SNAPSHOT_PATH, { token: t, headers: { 'if-none-match': plain.headers.get('etag')! } }), 304);
    expectError(await call('GET', SNAPSHOT_PATH, { token: t, headers: { 'a-im': 'append', [HEADER_BASE_RUN_ID]: 'x', 'if-none-match': `"${firstSha}"` } }), ERRORS.invalidBaseRunId);

    // The delta: a conversation whose latest run extends the one held.
    const d = freshScope('oas-delta');
    const d1 = await writeRun(d, 1, 'one\n');
    const d1Sha = (d1.body as { sha256: string }).sha256;
    const dAppend = { terminalStatus: 'completed', runId: 2, appendJsonl: 'two\n', base: { runId: 1, bytes: 4, sha256: d1Sha }, sha256: sha256('one\ntwo\n') };
    expectStatus(await call('POST', SNAPSHOT_PATH, { token: await workerToken(d, 2), json: dAppend }), 200);
    const delta = await call('GET', SNAPSHOT_PATH, { token: await workerToken(d), headers: { 'a-im': 'append', 'if-none-match': `"${d1Sha}"`, [HEADER_BASE_RUN_ID]: '1' } });
    expectStatus(delta, 226);
    expect(delta.body).toBe('two\n');

    const tb = await workerToken(big);
    expectError(await call('GET', SNAPSHOT_PATH, { token: tb }), ERRORS.noSnapshot);
    await writeRun(big, 1, incompressible(60)); // ~5 KiB, ~4 KiB stored: past the 2 KiB inline limit either way
    expectStatus(await call('GET', SNAPSHOT_PATH, { token: tb }), 307);
    expectError(await call('GET', SNAPSHOT_PATH, { token: tb, headers: { 'accept-encoding': 'identity' } }), ERRORS.notAcceptable);
    expectError(await call('GET', SNAPSHOT_PATH), ERRORS.invalidToken);
    expectError(await call('GET', SNAPSHOT_PATH, { token: await local.svc.mintToken({ ...scope, conv: '' }) }), ERRORS.missingScope);
  });

  it('DELETE: 200, idempotent, and its refusals', async () => {
    const c = freshScope('oas-clear');
    await writeRun(c, 1, 'x\n');
    const t = await workerToken(c);
    expect((await call('DELETE', SNAPSHOT_PATH, { token: t })).body).toEqual({ deleted: 1 });
    expect((await call('DELETE', SNAPSHOT_PATH, { token: t })).body).toEqual({ deleted: 0 });
    expectError(await call('DELETE', SNAPSHOT_PATH), ERRORS.invalidToken);
    expectError(await call('DELETE', SNAPSHOT_PATH, { token: await local.svc.mintToken({ ...c, conv: '' }) }), ERRORS.missingScope);
  });
});

describe('operator API', () => {
  const org = `oas-admin-${process.pid}-${Date.now()}`;
  const conv = { org, agent: 'agent-a', conv: 'conv-a' };
  let token: string;
  const ids = { agentId: conv.agent, conversationId: conv.conv };
  beforeAll(async () => {
    token = await adminToken(org);
    await writeRun(conv, 1, '{"line":1}\n{"line":2}\n{"line":3}\n');
    await writeRun(conv, 2, incompressible(60));
    await writeRun(conv, 3, '{"failed":true}\n', 'failed');
  });

  /** The refusals every operator route shares: token, admin scope, organization claim, query. */
  async function sharedRefusals(method: string, path: string, validQuery: Record<string, string | number>, json?: unknown): Promise<void> {
    const extra = json === undefined ? {} : { json };
    expectError(await call(method, path, { query: validQuery, ...extra }), ERRORS.invalidToken);
    expectError(await call(method, path, { query: validQuery, token: await workerToken(conv), ...extra }), ERRORS.adminScopeRequired);
    expectError(await call(method, path, { query: validQuery, token: await adminToken(''), ...extra }), ERRORS.missingScope);
    expectError(await call(method, path, { query: { ...validQuery, unknown: 1 }, token, ...extra }), ERRORS.invalidQuery);
  }

  it('GET /admin/conversations, /admin/agents, /admin/erasures: pages with cursors, and their refusals', async () => {
    const c = await call('GET', ADMIN_PATHS.conversations, { token, query: { limit: 1 } });
    expectStatus(c, 200);
    expect(c.body).toMatchObject({ conversations: [{ agentId: 'agent-a', conversationId: 'conv-a', latestRunId: 2 }] });
    const next = await call('GET', ADMIN_PATHS.conversations, { token, query: { limit: 1, cursor: (c.body as { nextCursor: string }).nextCursor } });
    expect(next.body).toEqual({ conversations: [], nextCursor: null });
    expectStatus(await call('GET', ADMIN_PATHS.conversations, { token, query: { agentId: 'agent-a', limit: 100 } }), 200);
    expectStatus(await call('GET', ADMIN_PATHS.agents, { token, query: { limit: 5 } }), 200);
    expectStatus(await call('GET', ADMIN_PATHS.erasures, { token }), 200);
    for (const path of [ADMIN_PATHS.conversations, ADMIN_PATHS.agents, ADMIN_PATHS.erasures]) {
      await sharedRefusals('GET', path, {});
      expectError(await call('GET', path, { token, query: { cursor: 'forged' } }), ERRORS.invalidCursor);
    }
  });

  it('GET /admin/runs and /admin/lines: pages, cursors, 404, and their refusals', async () => {
    const runs = await call('GET', ADMIN_PATHS.runs, { token, query: { ...ids, limit: 2 } });
    expectStatus(runs, 200);
    const { nextCursor } = runs.body as { nextCursor: string };
    expectStatus(await call('GET', ADMIN_PATHS.runs, { token, query: { ...ids, cursor: nextCursor } }), 200);
    const lines = await call('GET', ADMIN_PATHS.lines, { token, query: { ...ids, runId: 1, limit: 2 } });
    expectStatus(lines, 200);
    expectStatus(await call('GET', ADMIN_PATHS.lines, { token, query: { ...ids, runId: 1, cursor: (lines.body as { nextCursor: string }).nextCursor } }), 200);
    expectStatus(await call('GET', ADMIN_PATHS.lines, { token, query: ids }), 200);
    for (const path of [ADMIN_PATHS.runs, ADMIN_PATHS.lines]) {
      await sharedRefusals('GET', path, ids);
      expectError(await call('GET', path, { token, query: { ...ids, cursor: 'forged' } }), ERRORS.invalidCursor);
      expectError(await call('GET', path, { token, query: { ...ids, conversationId: 'never-written' } }), ERRORS.notFound);
    }
  });

  it('GET /admin/run: 200, 304, 307, 406, 404, and its refusals', async () => {
    const one = await call('GET', ADMIN_PATHS.run, { token, query: { ...ids, runId: 3 } });
    expectStatus(one, 200);
    expect(one.headers.get('x-snapshot-terminal-status')).toBe('failed');
    expectStatus(await call('GET', ADMIN_PATHS.run, { token, query: { ...ids, runId: 3 }, headers: { 'if-none-match': one.headers.get('etag')! } }), 304);
    expectStatus(await call('GET', ADMIN_PATHS.run, { token, query: { ...ids, runId: 2 } }), 307);
    expectError(await call('GET', ADMIN_PATHS.run, { token, query: { ...ids, runId: 2 }, headers: { 'accept-encoding': 'identity' } }), ERRORS.notAcceptable);
    expectError(await call('GET', ADMIN_PATHS.run, { token, query: { ...ids, runId: 99 } }), ERRORS.notFound);
    await sharedRefusals('GET', ADMIN_PATHS.run, { ...ids, runId: 1 });
  });

  it('POST /admin/erasures: 200 and 202 with receipts, GET one receipt, and their refusals', async () => {
    const victim = { org, agent: 'agent-b', conv: 'conv-b' };
    await writeRun(victim, 1, 'x\n');
    const erased = await call('POST', ADMIN_PATHS.erasures, { token, json: { agentId: victim.agent, conversationId: victim.conv } });
    expectStatus(erased, 200);
    const receiptId = (erased.body as { receiptId: string }).receiptId;
    expectStatus(await call('GET', `${ADMIN_PATHS.erasures}/${receiptId}`, { token }), 200);
    expectError(await call('GET', `${ADMIN_PATHS.erasures}/nope`, { token }), ERRORS.notFound);
    await sharedRefusals('GET', `${ADMIN_PATHS.erasures}/${receiptId}`, {});

    await sharedRefusals('POST', ADMIN_PATHS.erasures, {}, { agentId: 'x' });
    const erase = (extra: Req) => call('POST', ADMIN_PATHS.erasures, { token, ...extra });
    expectError(await erase({ raw: '{}', headers: { 'content-encoding': 'compress' } }), ERRORS.unsupportedEncoding);
    expectError(await erase({ raw: gzipSync(JSON.stringify({ agentId: 'a'.repeat(20_000) })), headers: { 'content-encoding': 'gzip' } }), ERRORS.tooLarge);
    expectError(await erase({ raw: '[]' }), ERRORS.invalidJson);
    expectError(await erase({ json: { conversationId: 'c' } }), ERRORS.invalidErasureScope);

    // 202: the same routes with a request deadline at the answer reserve do one unit of work per POST.
    const org2 = `${org}-slow`;
    for (const c of ['c1', 'c2']) await writeRun({ org: org2, agent: 'a', conv: c }, 1, '{"x":1}\n');
    const t2 = await adminToken(org2);
    const deps = createRouteDeps(local.svc.config, { s3: local.svc.s3, ddb: local.svc.ddb }, silent());
    const slow = await startAdapter(routeTable(createRoutes({ ...deps, requestDeadlineMs: ERASURE_ANSWER_RESERVE_MS })));
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 20 && statuses.at(-1) !== 200; i++) statuses.push((await call('POST', ADMIN_PATHS.erasures, { base: slow.url, token: t2, json: {} })).status);
      expect(statuses).toContain(202);
      expect(statuses.at(-1)).toBe(200);
    } finally {
      await slow.close();
    }
  });
});

describe('storage failures', () => {
  /** Every route that touches storage, with a request that reaches it (tokens are minted per call). */
  const storageCalls = async (): Promise<[string, string, Req][]> => {
    const s = freshScope('oas-fault');
    const org = `oas-fault-${process.pid}`;
    const admin = await adminToken(org);
    const ids = { agentId: 'a', conversationId: 'c' };
    return [
      ['GET', SNAPSHOT_PATH, { token: await workerToken(s) }],
      ['POST', SNAPSHOT_PATH, { token: await workerToken(s, 1), json: { terminalStatus: 'completed', snapshotJsonl: 'x\n', runId: 1 } }],
      ['DELETE', SNAPSHOT_PATH, { token: await workerToken(s) }],
      // Past the multipart threshold: the ticket starts a multipart upload (a single PUT is only signed).
      ['POST', UPLOADS_PATH, { token: await workerToken(s, 1), json: { runId: 1, bytes: 4096 } }],
      ['GET', ADMIN_PATHS.conversations, { token: admin }],
      ['GET', ADMIN_PATHS.runs, { token: admin, query: ids }],
      ['GET', ADMIN_PATHS.run, { token: admin, query: { ...ids, runId: 1 } }],
      ['GET', ADMIN_PATHS.lines, { token: admin, query: ids }],
      ['GET', ADMIN_PATHS.agents, { token: admin }],
      ['POST', ADMIN_PATHS.erasures, { token: admin, json: {} }],
      ['GET', ADMIN_PATHS.erasures, { token: admin }],
      ['GET', `${ADMIN_PATHS.erasures}/20260101T000000000Z-x`, { token: admin }],
    ];
  };

  it('answer 500 internal_error when a storage call fails unexpectedly, and 503 + retry-after when storage throttles', async () => {
    const calls = await storageCalls();
    expect(new Set(calls.map(([m, p]) => checker.find(m, p)!.key)).size).toBe(calls.length);
    const throttled = Object.assign(new Error('Rate exceeded'), { name: 'ThrottlingException' });
    for (const [failure, spec] of [
      [(plan: FaultPlan) => plan.failBeforeCall(1), ERRORS.internal],
      [(plan: FaultPlan) => plan.onCall(() => Promise.reject(throttled)), ERRORS.unavailable],
    ] as const) {
      const plan = new FaultPlan();
      failure(plan);
      await withFaultyService(local.svc, plan, async (api) => {
        for (const [method, path, req] of calls) {
          plan.calls = [];
          expectError(await call(method, path, { ...req, base: api.baseUrl }), spec);
          expect(plan.calls.length, `${method} ${path}`).toBeGreaterThan(0);
        }
      });
    }
  });
});

describe('coverage', () => {
  it('saw every answer the document lists, and none that it does not', () => {
    expect(checker.seenUndocumented()).toEqual([]);
    expect(checker.unseen()).toEqual([]);
  });
});
