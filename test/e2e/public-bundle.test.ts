import { spawn } from 'node:child_process';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { build } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { esbuildOptions } from '../../infra/bundling.js';
import { PUBLIC_ROUTES } from '../../infra/routes.js';
import { openApiDocument } from '../../functions/lib/openapi.js';

/**
 * `GET /health` and `GET /openapi.json` as the stack deploys them: each entry bundled like every handler
 * (infra/bundling.ts), then loaded in a fresh Node process with no configuration at all (no bucket, table or
 * key: they need none) and invoked with API Gateway v2 events. Their bundles hold no AWS SDK.
 */
const root = new URL('../../', import.meta.url).pathname.replace(/\/$/, '');
const PACKAGE_VERSION = (await import('../../package.json', { with: { type: 'json' } })).default.version;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'public-bundle-'));
  await Promise.all(PUBLIC_ROUTES.map((r) => build(esbuildOptions(join(root, r.entry), join(dir, r.id, 'index.mjs')))));
}, 120_000);
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const event = (path: string, headers: Record<string, string> = {}) => ({
  version: '2.0',
  routeKey: `GET ${path}`,
  rawPath: path,
  rawQueryString: '',
  headers,
  requestContext: { http: { method: 'GET', path }, requestId: 'r' },
  isBase64Encoded: false,
});

describe('bundled public functions', () => {
  it('answer /health and /openapi.json from a fresh process with no configuration, from small bundles without the AWS SDK', async () => {
    const [health, openApi] = PUBLIC_ROUTES.map((r) => join(dir, r.id, 'index.mjs')) as [string, string];
    for (const file of [health, openApi]) expect((await stat(file)).size, file).toBeLessThan(200 * 1024);
    const driver = join(dir, 'driver.mjs');
    await writeFile(
      driver,
      `const health = (await import(${JSON.stringify(health)})).handler;
       const openApi = (await import(${JSON.stringify(openApi)})).handler;
       const ctx = { awsRequestId: 'req', getRemainingTimeInMillis: () => 4000 };
       const [h, doc] = JSON.parse(process.argv[2]);
       const out = [await health(h, ctx), await openApi(doc, ctx)];
       out.push(await openApi({ ...doc, headers: { 'if-none-match': out[1].headers.etag } }, ctx));
       console.log(JSON.stringify(out));`,
    );
    const child = spawn(process.execPath, [driver, JSON.stringify([event('/health'), event('/openapi.json')])], {
      env: { PATH: process.env['PATH'], POWERTOOLS_LOG_LEVEL: 'SILENT' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    expect(code, err).toBe(0);
    const [h, doc, notModified] = JSON.parse(out.trim().split('\n').at(-1)!) as { statusCode: number; headers: Record<string, string>; body?: string }[];
    expect(h!.statusCode).toBe(200);
    expect(h!.headers['cache-control']).toBe('no-store');
    expect(JSON.parse(h!.body!)).toEqual({ status: 'ok', service: 'transcript-store', version: PACKAGE_VERSION });
    expect(doc!.statusCode).toBe(200);
    expect(JSON.parse(doc!.body!)).toEqual(openApiDocument());
    expect(notModified!.statusCode).toBe(304);
    expect(notModified!.body).toBeUndefined();
  });
});
