/**
 * `npm run bench:coldstart [-- --runs N]`
 *
 * Bundles every handler in the route table exactly as the stack deploys it (options from
 * infra/bundling.ts, shared with NodejsFunction), plus a baseline that only imports and constructs
 * S3Client and DynamoDBClient. Then, for each bundle, starts N fresh `node` processes (default 15,
 * minimum 10), one at a time so they do not compete for the CPU, and measures inside each child the
 * time of `await import(bundle)` — module load + init, i.e. the cold-start cost our code controls.
 * Children run with `NODE_OPTIONS=--enable-source-maps`, as deployed (the source map is parsed at load).
 *
 * Bundles go to a temporary directory, never into the repository, and are removed afterwards.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { build } from 'esbuild';
import { esbuildOptions, LAMBDA_BUNDLE, NODE_MAJOR } from '../infra/bundling.js';
import { ROUTES } from '../infra/routes.js';

const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));
const MIN_RUNS = 10;

function parseRuns(argv: readonly string[]): number {
  const i = argv.indexOf('--runs');
  const raw = i >= 0 ? argv[i + 1] : process.env['BENCH_RUNS'];
  if (raw === undefined) return 15;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < MIN_RUNS) throw new Error(`--runs must be an integer >= ${MIN_RUNS}, got "${raw}"`);
  return n;
}

/** What the deployed functions see (plus dummy values: the handlers read their config at import). */
const CHILD_ENV: Record<string, string> = {
  PATH: process.env['PATH'] ?? '',
  NODE_OPTIONS: '--enable-source-maps',
  // The SDK warns on Node < 22 (this machine); Lambda runs Node 22, where no warning is printed.
  AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
  AWS_REGION: 'us-east-1',
  AWS_ACCESS_KEY_ID: 'bench',
  AWS_SECRET_ACCESS_KEY: 'bench',
  BUCKET_NAME: 'bench-bucket',
  TABLE_NAME: 'bench-table',
  JWT_SECRET_ARN: 'arn:aws:secretsmanager:us-east-1:123456789012:secret:bench-AbCdEf',
  POWERTOOLS_SERVICE_NAME: 'transcript-store',
  POWERTOOLS_LOG_LEVEL: 'INFO',
};

/** Runs in the child: one cold import, timed from inside the process. */
const CHILD_SCRIPT = `
const t0 = performance.now();
await import(process.argv[1]);
const ms = performance.now() - t0;
process.stdout.write(JSON.stringify({ ms }));
`;

const BASELINE_SOURCE = `
import { S3Client } from '@aws-sdk/client-s3';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
const s3 = new S3Client({});
const ddb = new DynamoDBClient({});
export const handler = async () => ({ statusCode: 200, body: String(Boolean(s3 && ddb)) });
`;

interface Bundle {
  readonly name: string;
  readonly file: string;
  readonly bytes: number;
  readonly mapBytes: number;
  readonly samples: number[];
}

function runChild(file: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', CHILD_SCRIPT, pathToFileURL(file).href], {
      env: CHILD_ENV,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`import of ${file} failed (exit ${code}):\n${err.trim()}`));
      try {
        resolve((JSON.parse(out) as { ms: number }).ms);
      } catch {
        reject(new Error(`unexpected child output for ${file}: ${out}\n${err}`));
      }
    });
  });
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

const shortName = (id: string) => id.replace(/Snapshot$/, '').toLowerCase();
const kib = (bytes: number) => (bytes / 1024).toFixed(0);

async function main(): Promise<void> {
  const runs = parseRuns(process.argv.slice(2));
  const missing = ROUTES.filter((r) => !existsSync(path.join(REPO_ROOT, r.entry)));
  if (missing.length > 0) {
    throw new Error(`handler entry file(s) not found: ${missing.map((r) => `${r.entry} (${r.method} ${r.path})`).join(', ')}`);
  }

  const dir = await mkdtemp(path.join(os.tmpdir(), 'transcript-store-coldstart-'));
  try {
    const targets: { name: string; file: string }[] = [];
    for (const route of ROUTES) {
      const file = path.join(dir, shortName(route.id), LAMBDA_BUNDLE.outfileName);
      await build(esbuildOptions(path.join(REPO_ROOT, route.entry), file));
      targets.push({ name: shortName(route.id), file });
    }
    const baselineFile = path.join(dir, 'baseline', LAMBDA_BUNDLE.outfileName);
    const { entryPoints: _unused, ...baselineOptions } = esbuildOptions('', baselineFile);
    await build({ ...baselineOptions, stdin: { contents: BASELINE_SOURCE, resolveDir: REPO_ROOT, sourcefile: 'baseline.ts', loader: 'ts' } });
    targets.push({ name: 'baseline', file: baselineFile });

    const bundles: Bundle[] = [];
    for (const t of targets) {
      bundles.push({ ...t, bytes: (await stat(t.file)).size, mapBytes: (await stat(`${t.file}.map`)).size, samples: [] });
    }
    // One warm-up import per bundle (fills the OS file cache), then interleave the measured runs
    // round-robin so slow drifts in machine load hit every bundle alike.
    for (const b of bundles) await runChild(b.file);
    for (let i = 0; i < runs; i++) {
      for (const b of bundles) b.samples.push(await runChild(b.file));
    }

    const baseline = median(bundles.find((b) => b.name === 'baseline')!.samples);
    console.log(`cold import, ${runs} fresh processes per bundle, node ${process.versions.node} (Lambda runs node ${NODE_MAJOR}), ${os.cpus().length} CPUs`);
    console.log('bundle     size KiB   map KiB   median ms   min ms   max ms   ratio');
    const handlers = bundles.filter((b) => b.name !== 'baseline');
    for (const b of [...handlers, bundles.find((x) => x.name === 'baseline')!]) {
      const m = median(b.samples);
      console.log(
        [
          b.name.padEnd(10),
          kib(b.bytes).padStart(8),
          kib(b.mapBytes).padStart(9),
          m.toFixed(1).padStart(11),
          Math.min(...b.samples).toFixed(1).padStart(8),
          Math.max(...b.samples).toFixed(1).padStart(8),
          (m / baseline).toFixed(2).padStart(7),
        ].join(' '),
      );
    }
    const maxRatio = Math.max(...handlers.map((b) => median(b.samples) / baseline));
    console.log(
      `coldstart: ${handlers.map((b) => `${b.name}=${median(b.samples).toFixed(1)}`).join(' ')} baseline=${baseline.toFixed(1)} max_ratio=${maxRatio.toFixed(2)}`,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(`bench:coldstart: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
