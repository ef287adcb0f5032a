/**
 * `npm run bench [-- --requests N --concurrency N --rounds N]`: request overhead of the service.
 *
 * For a 1.3 KB and a 633 KB snapshot, measures hydrate (GET) and write (POST) through the full local
 * HTTP stack — fetch over loopback → HTTP→API Gateway adapter → handler (JWT verify, validation) →
 * store → SDK → emulators — against the bare minimum made directly with the SDK on the same emulators,
 * in the same run:
 *   hydrate baseline = GetItem (consistent) + GetObject of the same HEAD item and the same object;
 *   write baseline   = PutObject of the raw bytes (the service gzips first, then PutObject) + one PutItem.
 * Everything runs in one process (service, emulators and client share one event loop on 2 cores), so
 * absolute figures are loopback/emulator figures, not AWS ones; the ratio is what is comparable.
 * AWS calls per operation are counted by a middleware at the SDK's `deserialize` step on the service's
 * own clients: one per HTTP request actually sent to storage (SDK retries would count; presigning not).
 * The whole measurement is repeated `rounds` times (default 3) to report the spread of the ratios.
 *
 * A request through the service that fails with a connection reset before any response arrived (a
 * keep-alive socket the server closed just as it was reused: `ECONNRESET`, undici's `UND_ERR_SOCKET`)
 * is retried once, so one reset does not end the run; retries are counted and reported (a retried
 * write answered `409` was stored by its first attempt and counts as done). A second failure is fatal.
 *
 * Last line: `bench: hydrate_ratio=<x> write_ratio=<y> aws_calls_hydrate=<n> aws_calls_write=<m>`
 * (ratios: median over rounds of service p50 / baseline p50, 1.3 KB snapshot).
 */
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { GetItemCommand, PutItemCommand, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { createClients } from '../functions/lib/aws.js';
import { HEAD_SK } from '../functions/lib/store/index.js';
import { SNAPSHOT_PATH } from '../functions/lib/contract.js';
import { conversationKey } from '../functions/lib/ids.js';
import { startLocalService, type LocalService } from '../local/service.js';

process.env['POWERTOOLS_LOG_LEVEL'] ??= 'SILENT';

interface Stats {
  p50: number;
  p99: number;
  rps: number;
}

function countCalls(client: S3Client | DynamoDBClient, counter: { n: number; by: Record<string, number> }): void {
  (client.middlewareStack as { add: (mw: unknown, opts: unknown) => void }).add(
    (next: (args: unknown) => Promise<unknown>, context: { commandName?: string }) => async (args: unknown) => {
      counter.n += 1;
      const name = context.commandName ?? 'unknown';
      counter.by[name] = (counter.by[name] ?? 0) + 1;
      return next(args);
    },
    { step: 'deserialize', name: 'benchCallCounter', override: true },
  );
}

/** Connection-level failure codes that mean "the socket was closed under us", not a server answer. */
const RESET_CODES = new Set(['ECONNRESET', 'UND_ERR_SOCKET', 'EPIPE']);

/** True for a fetch that failed because its connection was reset before any response arrived. */
function isConnectionReset(err: unknown): boolean {
  if (!(err instanceof TypeError)) return false;
  const cause = (err as { cause?: { code?: unknown; cause?: { code?: unknown } } }).cause;
  const code = cause?.code ?? cause?.cause?.code;
  return typeof code === 'string' && RESET_CODES.has(code);
}

/** Requests through the service that were retried after a connection reset, by operation. */
const resetRetries: Record<string, number> = {};

/**
 * `fetch`, retried once when the connection was reset before any response (see the header). Only the
 * request is retried: a reset while the body is being read surfaces as an error to the caller.
 */
async function fetchRetryingReset(what: string, url: string, init: RequestInit = {}): Promise<{ res: Response; retried: boolean }> {
  try {
    return { res: await fetch(url, init), retried: false };
  } catch (err) {
    if (!isConnectionReset(err)) throw err;
    resetRetries[what] = (resetRetries[what] ?? 0) + 1;
    console.error(`bench: ${what}: connection reset before any response, retrying once`);
    return { res: await fetch(url, init), retried: true };
  }
}

async function measure(requests: number, concurrency: number, op: (i: number) => Promise<void>): Promise<Stats> {
  const lat: number[] = [];
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < requests) {
        const i = next++;
        const s = performance.now();
        await op(i);
        lat.push(performance.now() - s);
      }
    }),
  );
  const wall = performance.now() - t0;
  lat.sort((a, b) => a - b);
  const q = (p: number) => lat[Math.min(lat.length - 1, Math.ceil(p * lat.length) - 1)]!;
  return { p50: q(0.5), p99: q(0.99), rps: requests / (wall / 1000) };
}

function smallSnapshot(): Buffer {
  const lines: string[] = [];
  lines.push(JSON.stringify({ type: 'session', id: 'bench', cwd: '/work', timestamp: '2026-01-01T00:00:00.000Z' }));
  let i = 0;
  while (lines.join('\n').length < 1250) {
    lines.push(JSON.stringify({ type: 'message', id: `m${i}`, role: i % 2 ? 'assistant' : 'user', content: [{ type: 'text', text: `turn ${i} of the benchmark conversation` }] }));
    i += 1;
  }
  return Buffer.from(lines.join('\n') + '\n');
}

/** The first whole lines of the real fixture transcript, ≈633 KB. */
function largeSnapshot(): Buffer {
  const text = readFileSync(new URL('../test/fixtures/pi-large-session.jsonl', import.meta.url), 'utf8');
  let out = '';
  for (const line of text.split('\n')) {
    if (Buffer.byteLength(out) >= 633 * 1000) break;
    out += line + '\n';
  }
  return Buffer.from(out);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      requests: { type: 'string', default: '300' },
      concurrency: { type: 'string', default: '4' },
      rounds: { type: 'string', default: '3' },
      warmup: { type: 'string', default: '50' },
    },
  });
  const requests = Number(values.requests);
  const concurrency = Number(values.concurrency);
  const rounds = Number(values.rounds);
  const warmup = Number(values.warmup);
  const started = performance.now();

  const svc: LocalService = await startLocalService();
  const calls = { n: 0, by: {} as Record<string, number> };
  const writeCalls: Record<string, number> = {};
  countCalls(svc.s3, calls);
  countCalls(svc.ddb, calls);
  const emu = svc.emulators!;
  // Baseline clients: same configuration as the service's, not counted.
  const base = createClients({ region: svc.config.region, s3ForcePathStyle: true }, { endpoints: { s3: emu.s3Endpoint, dynamodb: emu.dynamodbEndpoint }, credentials: emu.credentials });
  const bucket = svc.config.bucketName;
  const table = svc.config.tableName;
  const url = `${svc.url}${SNAPSHOT_PATH}`;

  const sizes = [
    { name: '1.3 KB', body: smallSnapshot() },
    { name: '633 KB', body: largeSnapshot() },
  ];
  type Row = { size: string; op: string; who: string; round: number } & Stats;
  const rows: Row[] = [];
  const callsPer = { hydrate: [] as number[], write: [] as number[] };
  let convSeq = 0;

  for (let round = 1; round <= rounds; round++) {
    for (const size of sizes) {
      const snapshot = size.body.toString('utf8');
      // --- hydrate: one conversation holding the snapshot ---
      const scope = { org: 'bench', agent: 'bench', conv: `hydrate-${round}-${convSeq++}` };
      const writeToken = await svc.mintToken({ ...scope, runId: 1 });
      const { res: w, retried: wRetried } = await fetchRetryingReset('setup write', url, { method: 'POST', headers: { authorization: `Bearer ${writeToken}`, 'content-type': 'application/json' }, body: JSON.stringify({ terminalStatus: 'completed', snapshotJsonl: snapshot, runId: 1 }) });
      if (w.status !== 200 && !(wRetried && w.status === 409)) throw new Error(`setup write: ${w.status} ${await w.text()}`);
      await w.body?.cancel();
      const readToken = await svc.mintToken(scope);
      const pk = conversationKey({ organizationId: scope.org, agentId: scope.agent, conversationId: scope.conv });
      const head = await base.ddb.send(new GetItemCommand({ TableName: table, Key: { pk: { S: pk }, sk: { S: HEAD_SK } }, ConsistentRead: true }));
      const objectKey = head.Item!['latestKey']!.S!;

      const svcHydrate = async () => {
        const { res } = await fetchRetryingReset('hydrate', url, { headers: { authorization: `Bearer ${readToken}` } });
        const got = Buffer.from(await res.arrayBuffer());
        if (res.status !== 200 || got.length !== size.body.length) throw new Error(`hydrate: ${res.status} ${got.length}`);
      };
      const baseHydrate = async () => {
        const h = await base.ddb.send(new GetItemCommand({ TableName: table, Key: { pk: { S: pk }, sk: { S: HEAD_SK } }, ConsistentRead: true }));
        if (!h.Item) throw new Error('baseline: no HEAD');
        const o = await base.s3.send(new GetObjectCommand({ Bucket: bucket, Key: objectKey }));
        await o.Body!.transformToByteArray();
      };
      // --- write: fresh runIds on one conversation per round/size; tokens minted before timing ---
      const wScope = { org: 'bench', agent: 'bench', conv: `write-${round}-${convSeq++}` };
      const total = warmup + requests;
      const tokens = await Promise.all(Array.from({ length: total }, (_, i) => svc.mintToken({ ...wScope, runId: i + 1 })));
      // Each run's snapshot differs in its first line, so none extends another: every write stores its whole
      // body (a new chain), the most a whole-file write costs. (A body that repeats or extends the latest run
      // is cheaper: bench:append measures appends.)
      const bodies = tokens.map((_, i) => JSON.stringify({ terminalStatus: 'completed', snapshotJsonl: `{"type":"bench","run":${i + 1}}\n${snapshot}`, runId: i + 1 }));
      let wNext = 0;
      const svcWrite = async () => {
        const i = wNext++;
        const { res, retried } = await fetchRetryingReset('write', url, { method: 'POST', headers: { authorization: `Bearer ${tokens[i]}`, 'content-type': 'application/json' }, body: bodies[i] });
        const text = await res.text();
        // After a reset, 409 means the first attempt was stored (the answer was what got lost).
        if (res.status !== 200 && !(retried && res.status === 409)) throw new Error(`write: ${res.status} ${text}`);
      };
      let bNext = 0;
      const basePk = `bench-baseline/${round}/${convSeq++}`;
      const baseWrite = async () => {
        const i = bNext++;
        const key = `baseline/${basePk}/${i}.jsonl`;
        await base.s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: size.body, ContentLength: size.body.length }));
        await base.ddb.send(new PutItemCommand({ TableName: table, Item: { pk: { S: basePk }, sk: { S: `RUN#${i}` }, s3Key: { S: key }, bytes: { N: String(size.body.length) } }, ConditionExpression: 'attribute_not_exists(pk)' }));
      };

      // Warm up every path, then measure. Service and baseline alternate so drift hits both alike.
      await measure(warmup, concurrency, svcHydrate);
      await measure(warmup, concurrency, baseHydrate);
      await measure(warmup, concurrency, svcWrite);
      await measure(warmup, concurrency, baseWrite);

      calls.n = 0;
      const sh = await measure(requests, concurrency, svcHydrate);
      callsPer.hydrate.push(calls.n / requests);
      const bh = await measure(requests, concurrency, baseHydrate);
      calls.n = 0;
      calls.by = {};
      const sw = await measure(requests, concurrency, svcWrite);
      callsPer.write.push(calls.n / requests);
      for (const [k, v] of Object.entries(calls.by)) writeCalls[k] = (writeCalls[k] ?? 0) + v;
      const bw = await measure(requests, concurrency, baseWrite);
      rows.push({ size: size.name, op: 'hydrate', who: 'service', round, ...sh }, { size: size.name, op: 'hydrate', who: 'baseline', round, ...bh });
      rows.push({ size: size.name, op: 'write', who: 'service', round, ...sw }, { size: size.name, op: 'write', who: 'baseline', round, ...bw });
      console.error(`round ${round} ${size.name}: hydrate ${sh.p50.toFixed(2)}/${bh.p50.toFixed(2)} ms, write ${sw.p50.toFixed(2)}/${bw.p50.toFixed(2)} ms (p50 service/baseline)`);
    }
  }
  await svc.stop();
  base.s3.destroy();
  base.ddb.destroy();

  const median = (xs: number[]) => {
    const s = [...xs].sort((a, b) => a - b);
    return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
  };
  const f = (x: number, d = 2) => x.toFixed(d);
  console.log(`Machine: ${os.cpus().length} × ${os.cpus()[0]?.model.trim()}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}, ${os.platform()} ${os.release()}`);
  console.log(`Settings: ${rounds} rounds × (${warmup} warm-up + ${requests} measured) requests per op and size, concurrency ${concurrency}; one process; storage = s3rver + dynalite on loopback`);
  console.log('');
  console.log('| size | op | service p50 ms | service p99 ms | service req/s | baseline p50 ms | baseline p99 ms | baseline req/s | p50 ratio (median, min–max) |');
  console.log('|---|---|---|---|---|---|---|---|---|');
  const ratios: Record<string, number[]> = {};
  for (const size of sizes) {
    for (const op of ['hydrate', 'write']) {
      const pick = (who: string) => rows.filter((r) => r.size === size.name && r.op === op && r.who === who);
      const s = pick('service');
      const b = pick('baseline');
      const rs = s.map((r, i) => r.p50 / b[i]!.p50);
      ratios[`${size.name} ${op}`] = rs;
      const m = (xs: Row[], k: keyof Stats) => median(xs.map((r) => r[k]));
      console.log(
        `| ${size.name} | ${op} | ${f(m(s, 'p50'))} | ${f(m(s, 'p99'))} | ${f(m(s, 'rps'), 0)} | ${f(m(b, 'p50'))} | ${f(m(b, 'p99'))} | ${f(m(b, 'rps'), 0)} | ${f(median(rs))} (${f(Math.min(...rs))}–${f(Math.max(...rs))}) |`,
      );
    }
  }
  console.log('');
  console.log(`AWS calls per operation (service clients, all rounds and sizes): hydrate ${callsPer.hydrate.map((x) => f(x)).join(', ')}; write ${callsPer.write.map((x) => f(x)).join(', ')}`);
  console.log(`Write calls by command (all measured writes): ${Object.entries(writeCalls).map(([k, v]) => `${k}=${v}`).join(' ')}`);
  const resets = Object.values(resetRetries).reduce((a, b) => a + b, 0);
  console.log(`Connection resets retried: ${resets}${resets ? ` (${Object.entries(resetRetries).map(([k, v]) => `${k}=${v}`).join(' ')})` : ''}`);
  console.log(`Total time: ${f((performance.now() - started) / 1000, 1)} s`);
  const hr = median(ratios['1.3 KB hydrate']!);
  const wr = median(ratios['1.3 KB write']!);
  const ch = Math.max(...callsPer.hydrate);
  const cw = Math.max(...callsPer.write);
  console.log(`bench: hydrate_ratio=${f(hr)} write_ratio=${f(wr)} aws_calls_hydrate=${Number.isInteger(ch) ? ch : f(ch)} aws_calls_write=${Number.isInteger(cw) ? cw : f(cw)}`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
