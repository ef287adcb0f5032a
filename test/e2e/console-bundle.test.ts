import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { build } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { consoleAfterBundling, esbuildOptions } from '../../infra/bundling.js';
import { CONSOLE_ASSETS_DIR, CONSOLE_ROUTE } from '../../infra/routes.js';
import { CONSOLE_CSP } from '../../functions/lib/routes/console-files.js';

/**
 * The console function as the stack deploys it: `functions/console.ts` bundled like every handler, the
 * console built next to it by the very commands the stack's `afterBundling` hook runs, then loaded in a
 * fresh Node process with no configuration at all and invoked with API Gateway v2 events.
 */
const root = new URL('../../', import.meta.url).pathname.replace(/\/$/, '');
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'console-bundle-'));
  await build(esbuildOptions(join(root, CONSOLE_ROUTE.entry), join(dir, 'index.mjs')));
  for (const command of consoleAfterBundling(root, dir, CONSOLE_ASSETS_DIR)) {
    const child = spawn('bash', ['-c', command], { cwd: root, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    if (code !== 0) throw new Error(`bundling hook failed (${code}): ${err}`);
  }
}, 120_000);
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function event(path: string, headers: Record<string, string> = {}) {
  return { version: '2.0', routeKey: `GET ${path}`, rawPath: path, rawQueryString: '', headers, requestContext: { http: { method: 'GET', path }, requestId: 'r' }, isBase64Encoded: false };
}

describe('bundled console function', () => {
  it('serves the page, script and stylesheet built by the bundling hook, with the strict CSP, 304 on a matching ETag and 404 otherwise', async () => {
    expect((await readdir(join(dir, CONSOLE_ASSETS_DIR))).sort()).toEqual(['app.css', 'app.js', 'index.html']);
    const driver = join(dir, 'driver.mjs');
    await writeFile(
      driver,
      `const { handler } = await import(${JSON.stringify(join(dir, 'index.mjs'))});
       const events = JSON.parse(process.argv[2]);
       const out = [];
       for (const ev of events) out.push(await handler(ev, { awsRequestId: 'req', getRemainingTimeInMillis: () => 4000 }));
       const page = out[0];
       out.push(await handler({ ...events[0], headers: { 'if-none-match': page.headers.etag } }, {}));
       console.log(JSON.stringify(out));`,
    );
    // The last: as API Gateway sends it for the `/console/{asset}` route behind a custom-domain base path.
    const events = [
      event('/console'),
      event('/console/app.js'),
      event('/console/app.css'),
      event('/console/other.js'),
      event('/console/index.html'),
      { ...event('/ops/console/app.css'), routeKey: 'GET /console/{asset}', pathParameters: { asset: 'app.css' } },
    ];
    const child = spawn(process.execPath, [driver, JSON.stringify(events)], { env: { PATH: process.env['PATH'], POWERTOOLS_LOG_LEVEL: 'SILENT' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    expect(code, err).toBe(0);
    const [page, js, css, unknown, indexByName, viaParameter, revalidated] = JSON.parse(out.trim().split('\n').at(-1)!) as { statusCode: number; headers: Record<string, string>; body?: string }[];
    expect(page!.statusCode).toBe(200);
    expect(page!.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(page!.body).toContain('<script defer src="console/app.js"></script>');
    expect(js!.statusCode).toBe(200);
    expect(js!.headers['content-type']).toBe('text/javascript; charset=utf-8');
    expect(js!.body!.length).toBeGreaterThan(10_000);
    expect(css!.headers['content-type']).toBe('text/css; charset=utf-8');
    for (const r of [page!, js!, css!, unknown!, revalidated!]) {
      expect(r.headers['content-security-policy']).toBe(CONSOLE_CSP);
      expect(r.headers['x-content-type-options']).toBe('nosniff');
      expect(r.headers['referrer-policy']).toBe('no-referrer');
    }
    expect(unknown!.statusCode).toBe(404);
    expect(JSON.parse(unknown!.body!)).toEqual({ error: 'Not found', code: 'not_found' });
    expect(indexByName!.statusCode).toBe(404);
    expect(viaParameter!.statusCode).toBe(200);
    expect(viaParameter!.body).toBe(css!.body);
    expect(revalidated!.statusCode).toBe(304);
    expect(revalidated!.body).toBeUndefined();
  }, 60_000);
});
