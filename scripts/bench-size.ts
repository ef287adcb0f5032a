/**
 * `npm run bench:size` — snapshot sizes end to end through the worker-client.
 *
 * Two child processes, like a real deployment against LocalStack:
 *   1. `tsx scripts/emulators.ts`  — s3rver + dynalite, endpoints printed as JSON on stdout;
 *   2. `tsx scripts/local.ts`      — the service in "external endpoints" mode (AWS_ENDPOINT_URL_S3/_DYNAMODB).
 * This process is the worker: for each size it writes a snapshot (gzip, then `compress: false`) with
 * `writeSnapshot`, hydrates it into a fresh file with `hydrateSnapshot`, checks the result byte for byte,
 * and runs plain SDK PutObject + GetObject of the same file on the same emulator as the baseline.
 * The service's peak RSS (VmHWM of the real node process, reset through /proc/<pid>/clear_refs before
 * each size) shows whether its memory follows the snapshot size.
 *
 * Exits non-zero if any hydrate is not byte-exact or any step fails. Children and temp dirs are
 * removed on exit, failure included.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { CreateBucketCommand, GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { mintDevToken } from '../local/dev-secret.js';
import { hydrateSnapshot, writeSnapshot, type WriteSnapshotResult } from '../worker-client/src/index.js';
import { sameBytes } from './lib/files.js';

process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true'; // Node 20 here; Lambda runs 22

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const TSX = join(ROOT, 'node_modules', '.bin', 'tsx');
const FIXTURE = join(ROOT, 'test', 'fixtures', 'pi-large-session.jsonl');

const SIZES: { label: string; bytes: number }[] = [
  { label: '1.3KB', bytes: 1_300 },
  { label: '633KB', bytes: 633_000 },
  { label: '6MB', bytes: 6_000_000 },
  { label: '50MB', bytes: 50_000_000 },
  { label: '200MB', bytes: 200_000_000 },
];

const children: ChildProcess[] = [];
const tempDirs: string[] = [];

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

// ---- child processes ---------------------------------------------------------------------------

/** Spawns `tsx <script>` (never synchronously) and resolves with its first stdout line. */
async function spawnTsx(script: string, env: NodeJS.ProcessEnv, name: string): Promise<{ child: ChildProcess; firstLine: string }> {
  const child = spawn(TSX, [script], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => {
    stderr = (stderr + c.toString('utf8')).slice(-4000);
  });
  const firstLine = await new Promise<string>((resolveLine, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`${name} did not start within 60 s; stderr:\n${stderr}`)), 60_000);
    const onData = (c: Buffer) => {
      buf += c.toString('utf8');
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        child.stdout!.off('data', onData);
        child.stdout!.resume(); // keep draining: a full pipe would block the child
        resolveLine(buf.slice(0, nl).trim());
      }
    };
    child.stdout!.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited with ${code} before it was ready; stderr:\n${stderr}`));
    });
  });
  return { child, firstLine };
}

async function parentOf(pid: number): Promise<number | undefined> {
  try {
    const s = await readFile(`/proc/${pid}/stat`, 'utf8');
    // "pid (comm) state ppid …" — comm may contain spaces and parentheses: parse after the last ')'.
    return Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return undefined;
  }
}

/**
 * tsx runs the script in a node grandchild. The real service process is the deepest descendant of
 * the spawned tsx process whose command line runs scripts/local.ts.
 */
async function realNodePid(rootPid: number, script: string): Promise<number> {
  const pids = (await readdir('/proc')).filter((d) => /^\d+$/.test(d)).map(Number);
  const parent = new Map<number, number>();
  await Promise.all(
    pids.map(async (p) => {
      const pp = await parentOf(p);
      if (pp !== undefined) parent.set(p, pp);
    }),
  );
  const depth = (p: number): number => {
    let d = 0;
    for (let q: number | undefined = p; q !== undefined && q !== rootPid; q = parent.get(q)) {
      if (q <= 1 || d > 50) return -1;
      d++;
    }
    return d;
  };
  let best = rootPid;
  let bestDepth = 0;
  for (const p of pids) {
    if (p === rootPid) continue;
    const d = depth(p);
    if (d <= 0) continue;
    const cmd = await readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '');
    if (cmd.includes(script) && d > bestDepth) {
      best = p;
      bestDepth = d;
    }
  }
  return best;
}

async function statusKb(pid: number, field: 'VmHWM' | 'VmRSS'): Promise<number> {
  const s = await readFile(`/proc/${pid}/status`, 'utf8');
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(s);
  if (!m) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(m[1]);
}

/** Resets VmHWM to the current RSS (Linux ≥ 4.0); false when not permitted. */
async function resetPeak(pid: number): Promise<boolean> {
  try {
    await writeFile(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

async function freePort(): Promise<number> {
  const srv = createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

async function stopChild(child: ChildProcess, realPid?: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit').catch(() => {});
  // SIGTERM to the real node process (its handler stops cleanly), then to the tsx wrapper.
  if (realPid !== undefined && realPid !== child.pid) {
    try {
      process.kill(realPid, 'SIGTERM');
    } catch {
      // already gone
    }
  }
  child.kill('SIGTERM');
  const timeout = new Promise((r) => setTimeout(r, 5_000).unref());
  await Promise.race([exited, timeout]);
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
}

// ---- data --------------------------------------------------------------------------------------

/** `bytes` of the real transcript, repeated, cut at the last newline at or before `bytes`. */
async function buildFile(path: string, bytes: number, fixture: Buffer): Promise<number> {
  const out = createWriteStream(path);
  let written = 0;
  while (written + fixture.length <= bytes) {
    if (!out.write(fixture)) await once(out, 'drain');
    written += fixture.length;
  }
  const rest = fixture.subarray(0, bytes - written);
  const cut = rest.lastIndexOf(0x0a) + 1;
  if (cut > 0) {
    out.write(rest.subarray(0, cut));
    written += cut;
  }
  out.end();
  await once(out, 'finish');
  return written;
}


// ---- measurement -------------------------------------------------------------------------------

interface RoundTrip {
  writeMs: number;
  hydrateMs: number;
  upBytes: number;
  downBytes: number | undefined;
  transport: string;
  /** `307` when the hydrate followed the redirect to storage, `inline` otherwise. */
  hydratePath: string;
  exact: boolean;
}

interface Row {
  label: string;
  bytes: number;
  gzip: RoundTrip;
  identity: RoundTrip;
  sdkPutMs: number;
  sdkGetMs: number;
  /** Service RSS when the size started (after the peak reset) and its peak during the size. */
  startRssMb: number;
  peakRssMb: number;
}

const mb = (b: number) => b / 1e6;
const fmtBytes = (b: number | undefined) =>
  b === undefined ? 'n/a' : b >= 1e6 ? `${(b / 1e6).toFixed(2)} MB` : b >= 1e3 ? `${(b / 1e3).toFixed(1)} KB` : `${b} B`;
const rate = (bytes: number, totalMs: number) => {
  const v = (2 * mb(bytes)) / (Math.max(1, totalMs) / 1000);
  return v.toFixed(v < 1 ? 2 : 1);
};
const ms = (t0: number) => Math.round(performance.now() - t0);

/** A fetch that refuses gzip downloads (identity round trips), as an existing worker could. */
const identityFetch: typeof fetch = (input, init) => {
  const headers = new Headers(init?.headers);
  headers.set('accept-encoding', 'identity');
  return fetch(input, { ...init, headers });
};

async function roundTrip(
  url: string,
  secret: string,
  conv: string,
  src: string,
  out: string,
  compress: boolean,
): Promise<RoundTrip> {
  const ids = { org: 'bench', agent: 'bench', conv };
  const runToken = await mintDevToken(secret, { ...ids, runId: 1 });
  const convToken = await mintDevToken(secret, ids);
  let t0 = performance.now();
  const w: WriteSnapshotResult = await writeSnapshot({
    sessionFile: src,
    gatewayUrl: url,
    workerToken: runToken,
    terminalStatus: 'completed',
    runId: 1,
    compress,
    deadlineMs: 240_000,
    timeoutMs: 120_000,
  });
  const writeMs = ms(t0);
  if (w.status !== 'written') throw new Error(`write (${compress ? 'gzip' : 'identity'}) failed: ${JSON.stringify(w)}`);
  t0 = performance.now();
  const h = await hydrateSnapshot({
    sessionFile: out,
    gatewayUrl: url,
    workerToken: convToken,
    deadlineMs: 240_000,
    timeoutMs: 120_000,
    ...(compress ? {} : { fetch: identityFetch }),
  });
  const hydrateMs = ms(t0);
  if (h.status !== 'hydrated') throw new Error(`hydrate failed: ${JSON.stringify(h)}`);
  const exact = await sameBytes(src, out);
  await rm(out, { force: true });
  return {
    writeMs,
    hydrateMs,
    upBytes: w.wireBytes,
    downBytes: h.wireBytes,
    transport: w.transport === 'direct' ? 'direct' : `presigned×${w.parts}`,
    hydratePath: h.redirected ? '307' : 'inline',
    exact,
  };
}

async function sdkBaseline(s3: S3Client, bucket: string, src: string, bytes: number, out: string): Promise<{ putMs: number; getMs: number; exact: boolean }> {
  const key = `baseline/${randomBytes(8).toString('hex')}`;
  let t0 = performance.now();
  await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: createReadStream(src), ContentLength: bytes }));
  const putMs = ms(t0);
  t0 = performance.now();
  const obj = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  await pipeline(obj.Body as NodeJS.ReadableStream, createWriteStream(out));
  const getMs = ms(t0);
  const exact = await sameBytes(src, out);
  await rm(out, { force: true });
  return { putMs, getMs, exact };
}

// ---- main --------------------------------------------------------------------------------------

async function main(): Promise<number> {
  const work = await mkdtemp(join(tmpdir(), 'bench-size-'));
  tempDirs.push(work);
  const fixture = await readFile(FIXTURE);
  const baseEnv: NodeJS.ProcessEnv = {
    ...process.env,
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
  };

  log('starting emulators (child process)…');
  const emu = await spawnTsx('scripts/emulators.ts', baseEnv, 'emulators');
  const endpoints = JSON.parse(emu.firstLine) as { s3: string; dynamodb: string };

  const secret = randomBytes(32).toString('base64url');
  const port = await freePort();
  const dataDir = join(work, 'service-data');
  log('starting the service (child process, external endpoints)…');
  const svc = await spawnTsx(
    'scripts/local.ts',
    {
      ...baseEnv,
      AWS_ENDPOINT_URL_S3: endpoints.s3,
      AWS_ENDPOINT_URL_DYNAMODB: endpoints.dynamodb,
      AWS_ACCESS_KEY_ID: 'S3RVER',
      AWS_SECRET_ACCESS_KEY: 'S3RVER',
      AWS_REGION: 'us-east-1',
      S3_FORCE_PATH_STYLE: 'true',
      JWT_SECRET: secret,
      PORT: String(port),
      DATA_DIR: dataDir,
      POWERTOOLS_LOG_LEVEL: 'WARN',
    },
    'service',
  );
  const url = svc.firstLine;
  const svcPid = await realNodePid(svc.child.pid!, 'scripts/local.ts');
  log(`service ${url}, real node pid ${svcPid} (tsx wrapper ${svc.child.pid}); emulators ${endpoints.s3} ${endpoints.dynamodb}`);
  const idleRssMb = (await statusKb(svcPid, 'VmRSS')) / 1024;

  const s3 = new S3Client({
    region: 'us-east-1',
    endpoint: endpoints.s3,
    forcePathStyle: true,
    credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  const baselineBucket = 'bench-baseline';
  await s3.send(new CreateBucketCommand({ Bucket: baselineBucket }));

  // Warm-up (JIT, connections, first-request costs) — not measured.
  const warm = join(work, 'warm.jsonl');
  await buildFile(warm, 10_000, fixture);
  await roundTrip(url, secret, `warm-${Date.now()}`, warm, join(work, 'warm.out'), true);
  await sdkBaseline(s3, baselineBucket, warm, (await stat(warm)).size, join(work, 'warm.sdk'));

  const rows: Row[] = [];
  let failures = 0;
  for (const size of SIZES) {
    const src = join(work, `${size.label}.jsonl`);
    const bytes = await buildFile(src, size.bytes, fixture);
    const canReset = await resetPeak(svcPid);
    const startRssMb = (await statusKb(svcPid, 'VmRSS')) / 1024;
    const gzip = await roundTrip(url, secret, `gz-${size.label}-${Date.now()}`, src, join(work, `${size.label}.out`), true);
    const identity = await roundTrip(url, secret, `id-${size.label}-${Date.now()}`, src, join(work, `${size.label}.out`), false);
    const peakRssMb = (await statusKb(svcPid, 'VmHWM')) / 1024;
    const sdk = await sdkBaseline(s3, baselineBucket, src, bytes, join(work, `${size.label}.sdk`));
    if (!gzip.exact || !identity.exact) {
      failures++;
      log(`MISMATCH: ${size.label} hydrate is not byte-exact (gzip ${gzip.exact}, identity ${identity.exact})`);
    }
    if (!sdk.exact) log(`warning: SDK baseline GetObject of ${size.label} differs from the source`);
    rows.push({ label: size.label, bytes, gzip, identity, sdkPutMs: sdk.putMs, sdkGetMs: sdk.getMs, startRssMb, peakRssMb });
    log(
      `${size.label}: gzip ${gzip.writeMs}/${gzip.hydrateMs} ms (${gzip.transport}), identity ${identity.writeMs}/${identity.hydrateMs} ms, ` +
        `sdk ${sdk.putMs}/${sdk.getMs} ms, service peak RSS ${peakRssMb.toFixed(1)} MB${canReset ? '' : ' (cumulative: clear_refs not permitted)'}`,
    );
    await rm(src, { force: true });
  }

  // ---- report ----
  const lines: string[] = [];
  lines.push(
    '| snapshot | bytes | write / hydrate path (gzip) | write ms | hydrate ms | MB/s (w+h) | up gzip | up identity | down gzip | down identity | identity write/hydrate ms (path) | SDK put/get ms | ratio vs SDK | service RSS at start → peak MB | byte-exact |',
  );
  lines.push('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    const total = r.gzip.writeMs + r.gzip.hydrateMs;
    const sdkTotal = r.sdkPutMs + r.sdkGetMs;
    lines.push(
      `| ${r.label} | ${r.bytes} | ${r.gzip.transport} / ${r.gzip.hydratePath} | ${r.gzip.writeMs} | ${r.gzip.hydrateMs} | ${rate(r.bytes, total)} | ` +
        `${fmtBytes(r.gzip.upBytes)} | ${fmtBytes(r.identity.upBytes)} | ${fmtBytes(r.gzip.downBytes)} | ${fmtBytes(r.identity.downBytes)} | ` +
        `${r.identity.writeMs}/${r.identity.hydrateMs} (${r.identity.transport} / ${r.identity.hydratePath}) | ${r.sdkPutMs}/${r.sdkGetMs} | ${(total / Math.max(1, sdkTotal)).toFixed(1)}× | ` +
        `${r.startRssMb.toFixed(0)} → ${r.peakRssMb.toFixed(0)} | ${r.gzip.exact && r.identity.exact ? 'yes' : 'NO'} |`,
    );
  }
  const peak = Math.max(...rows.map((r) => r.peakRssMb));
  const big = rows.find((r) => r.label === '200MB')!;
  const ratio200 = (big.gzip.writeMs + big.gzip.hydrateMs) / Math.max(1, big.sdkPutMs + big.sdkGetMs);
  process.stdout.write(`${lines.join('\n')}\n\n`);
  process.stdout.write(`service idle RSS before the run: ${idleRssMb.toFixed(0)} MB\n`);
  process.stdout.write(
    `bench:size: ${rows.map((r) => `${r.label}=${r.gzip.writeMs}/${r.gzip.hydrateMs}`).join(' ')} peak_rss_mb=${peak.toFixed(0)} ratio_200mb=${ratio200.toFixed(1)}\n`,
  );
  s3.destroy();
  return failures > 0 ? 1 : 0;
}

let cleanedUp = false;
async function cleanup(): Promise<void> {
  if (cleanedUp) return;
  cleanedUp = true;
  const svcChild = children[1];
  const svcReal = svcChild?.pid !== undefined ? await realNodePid(svcChild.pid, 'scripts/local.ts').catch(() => undefined) : undefined;
  const emuChild = children[0];
  const emuReal = emuChild?.pid !== undefined ? await realNodePid(emuChild.pid, 'scripts/emulators.ts').catch(() => undefined) : undefined;
  // Service first (it talks to the emulators), then the emulators.
  if (svcChild) await stopChild(svcChild, svcReal);
  if (emuChild) await stopChild(emuChild, emuReal);
  for (const d of tempDirs) await rm(d, { recursive: true, force: true }).catch(() => {});
}

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    void cleanup().then(() => process.exit(130));
  });
}

let code = 1;
try {
  code = await main();
} catch (err) {
  log(`bench:size failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  code = 1;
} finally {
  await cleanup();
}
process.exit(code);
