import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { build } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { esbuildOptions } from '../../infra/bundling.js';
import { useLocalService } from '../helpers/service.js';

/**
 * The production entry points, bundled exactly as the stack bundles them (infra/bundling.ts), loaded
 * in a fresh Node process with a Lambda-style environment, and invoked with API Gateway v2 events
 * against the emulators. Catches what the in-process tests cannot: bundling, module-scope wiring,
 * config read at init.
 */
const ctx = useLocalService();
const root = new URL('../../', import.meta.url).pathname;
const ENTRIES = ['get-snapshot', 'post-snapshot', 'delete-snapshot', 'create-upload', 'reconcile', 'retention'];
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'lambda-bundle-'));
  await Promise.all(ENTRIES.map((e) => build(esbuildOptions(join(root, `functions/${e}.ts`), join(dir, e, 'index.mjs')))));
}, 120_000);
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function event(method: string, path: string, token: string, body?: unknown) {
  return {
    version: '2.0',
    routeKey: `${method} ${path}`,
    rawPath: path,
    rawQueryString: '',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    requestContext: { http: { method, path }, requestId: 'r-1' },
    ...(body !== undefined && { body: JSON.stringify(body) }),
    isBase64Encoded: false,
  };
}

describe('bundled Lambda handlers', () => {
  it('serve POST, GET, uploads and DELETE, and the reconciler and the retention pass run, from a fresh process with only environment configuration', async () => {
    const { svc } = ctx;
    const emu = svc.emulators!;
    const scope = { org: 'bundle-org', agent: 'a', conv: `c-${Date.now()}` };
    const conv = await svc.mintToken(scope);
    const run = await svc.mintToken({ ...scope, runId: 3 });
    const P = '/worker/transcript/snapshot';
    const calls = [
      ['post-snapshot', event('POST', P, run, { terminalStatus: 'completed', snapshotJsonl: 'from the bundle ✓\n', runId: 3 })],
      ['get-snapshot', event('GET', P, conv)],
      ['create-upload', event('POST', `${P}/uploads`, run, { runId: 3, bytes: 10 })],
      ['delete-snapshot', event('DELETE', P, conv)],
      ['get-snapshot', event('GET', P, 'not-a-token')],
      ['reconcile', { source: 'aws.events', 'detail-type': 'Scheduled Event' }],
      ['retention', { source: 'aws.events', 'detail-type': 'Scheduled Event' }],
    ];
    const driver = join(dir, 'driver.mjs');
    await writeFile(
      driver,
      `const calls = ${JSON.stringify(calls)};
       const out = [];
       for (const [name, ev] of calls) {
         const { handler } = await import(${JSON.stringify(dir)} + '/' + name + '/index.mjs');
         // The retention pass keeps 30 s of its time in reserve: give it its 5 min.
         const remaining = name === 'retention' ? 300000 : 20000;
         const res = await handler(ev, { awsRequestId: 'req', getRemainingTimeInMillis: () => remaining });
         out.push(res);
       }
       console.log(JSON.stringify(out));`,
    );
    const secret = svc.config.keySource.kind === 'secret' ? svc.config.keySource.secret : '';
    const child = spawn(process.execPath, ['--enable-source-maps', driver], {
      env: {
        PATH: process.env['PATH'],
        AWS_REGION: 'us-east-1',
        AWS_ACCESS_KEY_ID: 'S3RVER',
        AWS_SECRET_ACCESS_KEY: 'S3RVER',
        AWS_ENDPOINT_URL_S3: emu.s3Endpoint,
        AWS_ENDPOINT_URL_DYNAMODB: emu.dynamodbEndpoint,
        AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
        BUCKET_NAME: svc.config.bucketName,
        TABLE_NAME: svc.config.tableName,
        JWT_SECRET: secret,
        POWERTOOLS_LOG_LEVEL: 'SILENT',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    expect(code, stderr).toBe(0);
    const [post, get, upload, del, bad, reconciled, retained] = JSON.parse(stdout.trim().split('\n').at(-1)!) as {
      statusCode: number;
      headers: Record<string, string>;
      body: string;
      isBase64Encoded?: boolean;
    }[];
    expect(post!.statusCode).toBe(200);
    expect(get!.statusCode).toBe(200);
    expect(get!.headers['x-snapshot-run-id']).toBe('3');
    expect(Buffer.from(get!.body, get!.isBase64Encoded ? 'base64' : 'utf8').toString('utf8')).toBe('from the bundle ✓\n');
    expect(upload!.statusCode).toBe(200);
    expect(JSON.parse(upload!.body).url).toContain('X-Amz-Signature=');
    expect(JSON.parse(del!.body)).toEqual({ deleted: 1 });
    expect(bad!.statusCode).toBe(401);
    // The reconciler ran a full pass with the default 1 h grace: everything is young, nothing deleted.
    expect(reconciled).toMatchObject({ deleted: 0, complete: true });
    // The retention pass walked the work queue (the conversation written above is due): nothing is old enough to go.
    expect(retained).toMatchObject({ runs: 0, objects: 0, failed: 0, complete: true });
    expect((retained as unknown as { conversations: number }).conversations).toBeGreaterThanOrEqual(1);
  }, 60_000);
});
