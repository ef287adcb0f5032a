/**
 * `npm run bench:replay`
 *
 * Replays the real fixture transcript (test/fixtures/pi-large-session.jsonl) turn by turn, cut at user
 * messages, through two pods that take turns: before its turn a pod hydrates (it lacks what the other pod
 * appended), then appends its turn's lines to its session file and writes the run. Counts
 *   - up/down: bytes on the TCP connection between the pods and the service (headers included), through a
 *     counting proxy, against Σ gzip(appended bytes per turn) and Σ gzip(bytes the pod lacked) — the
 *     final check's fresh pod included (it lacks the whole transcript);
 *   - stored: bytes in S3 at the end, against gzip(final transcript);
 *   - exact: every hydrate leaves the pod's file byte-identical to the transcript prefix it must hold.
 * Runs it for the worker-client, then for a legacy client (plain fetch: full JSON POSTs, plain GETs).
 * Last line: `replay: turns=89 up_ratio=<x> down_ratio=<y> stored_ratio=<z> exact=<bool>` (worker-client).
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { SNAPSHOT_PATH } from '../functions/lib/contract.js';
import { startLocalService, type LocalService } from '../local/service.js';
import { hydrateSnapshot, writeSnapshot } from '../worker-client/src/index.js';
import { turnsOf } from './replay-turns.js';


process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';
process.env['POWERTOOLS_LOG_LEVEL'] ??= 'SILENT';

const FIXTURE = new URL('../test/fixtures/pi-large-session.jsonl', import.meta.url);

/** A TCP proxy in front of the service that counts the bytes each way. */
async function countingProxy(target: URL): Promise<{ url: string; up: () => number; down: () => number; close: () => Promise<void> }> {
  let up = 0;
  let down = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = connect(Number(target.port), target.hostname);
    sockets.add(client).add(upstream);
    client.on('data', (c: Buffer) => (up += c.length));
    upstream.on('data', (c: Buffer) => (down += c.length));
    client.pipe(upstream).pipe(client);
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    up: () => up,
    down: () => down,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

async function storedBytes(svc: LocalService): Promise<number> {
  let total = 0;
  let token: string | undefined;
  do {
    const page = await svc.s3.send(new ListObjectsV2Command({ Bucket: svc.config.bucketName, ContinuationToken: token }));
    for (const o of page.Contents ?? []) total += o.Size ?? 0;
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return total;
}

interface Pod {
  /** Brings the pod's file up to date; returns false when the service had nothing. */
  hydrate(file: string): Promise<boolean>;
  write(file: string, runId: number): Promise<void>;
}

interface Replay {
  turns: number;
  up: number;
  down: number;
  stored: number;
  exact: boolean;
}

async function replay(name: string, client: (svc: LocalService, url: string, conv: string) => Pod): Promise<Replay> {
  const transcript = await readFile(FIXTURE);
  const turns = turnsOf(transcript);
  const dir = await mkdtemp(join(tmpdir(), 'replay-'));
  const svc = await startLocalService({});
  const proxy = await countingProxy(new URL(svc.url));
  try {
    const pod = client(svc, proxy.url, `replay-${name}`);
    const files = [join(dir, 'podA.jsonl'), join(dir, 'podB.jsonl')];
    let exact = true;
    let expected = Buffer.alloc(0); // the transcript prefix the service holds
    for (let i = 0; i < turns.length; i++) {
      const file = files[i % 2]!;
      const had = await pod.hydrate(file);
      const now = had ? await readFile(file) : Buffer.alloc(0);
      if (!now.equals(expected)) exact = false;
      expected = Buffer.concat([expected, turns[i]!]);
      await writeFile(file, expected);
      await pod.write(file, i + 1);
    }
    const fresh = join(dir, 'fresh.jsonl');
    await pod.hydrate(fresh);
    if (!(await readFile(fresh)).equals(transcript)) exact = false;
    return { turns: turns.length, up: proxy.up(), down: proxy.down(), stored: await storedBytes(svc), exact };
  } finally {
    await proxy.close();
    await svc.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

/** The bundled worker-client (gzip POST bodies, gzip hydrate, its own state). */
function workerClient(svc: LocalService, url: string, conv: string): Pod {
  const ids = { org: 'replay', agent: 'bench', conv };
  return {
    async hydrate(file) {
      const r = await hydrateSnapshot({ sessionFile: file, gatewayUrl: url, workerToken: await svc.mintToken(ids) });
      return r.status !== 'not_found';
    },
    async write(file, runId) {
      const r = await writeSnapshot({ sessionFile: file, gatewayUrl: url, workerToken: await svc.mintToken({ ...ids, runId }), runId, terminalStatus: 'completed' });
      if (r.status !== 'written') throw new Error(`write ${runId}: ${JSON.stringify(r)}`);
    },
  };
}

/** An existing worker: plain fetch, full JSON POST (uncompressed), plain GET. */
function legacyClient(svc: LocalService, url: string, conv: string): Pod {
  const ids = { org: 'replay', agent: 'bench', conv };
  return {
    async hydrate(file) {
      const res = await fetch(`${url}${SNAPSHOT_PATH}`, { headers: { authorization: `Bearer ${await svc.mintToken(ids)}` } });
      const body = Buffer.from(await res.arrayBuffer());
      if (res.status === 404) return false;
      if (res.status !== 200) throw new Error(`GET ${res.status}`);
      await writeFile(file, body);
      return true;
    },
    async write(file, runId) {
      const res = await fetch(`${url}${SNAPSHOT_PATH}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${await svc.mintToken({ ...ids, runId })}`, 'content-type': 'application/json' },
        body: JSON.stringify({ terminalStatus: 'completed', snapshotJsonl: (await readFile(file)).toString('utf8'), runId }),
      });
      if (res.status !== 200) throw new Error(`POST ${runId}: ${res.status} ${await res.text()}`);
    },
  };
}

const transcript = await readFile(FIXTURE);
const turns = turnsOf(transcript);
const gz = (b: Buffer) => gzipSync(b).length;
const upBase = turns.reduce((n, t) => n + gz(t), 0);
// Each pod lacks the turn the other pod wrote just before (the first hydrate of each pod: everything so
// far); the fresh pod that checks the end result at the last hydrate lacks the whole transcript.
const downBase = turns.reduce((n, _t, i) => n + (i === 0 ? 0 : gz(turns[i - 1]!)), 0) + gz(transcript);
const storedBase = gz(transcript);
process.stdout.write(
  `fixture: ${transcript.length} bytes, ${turns.length} turns; baselines: Σgzip(appended)=${upBase} Σgzip(lacked)=${downBase} gzip(final)=${storedBase}\n`,
);
const line = (label: string, r: Replay) =>
  `${label}: turns=${r.turns} up_ratio=${(r.up / upBase).toFixed(2)} down_ratio=${(r.down / downBase).toFixed(2)} stored_ratio=${(r.stored / storedBase).toFixed(2)} exact=${r.exact}` +
  ` (up ${r.up} B, down ${r.down} B, stored ${r.stored} B)\n`;
const legacy = await replay('legacy', legacyClient);
process.stdout.write(line('replay-legacy', legacy));
const wc = await replay('worker-client', workerClient);
process.stdout.write(line('replay', wc).replace(/ \(up .*\)\n$/, `\n`).replace(/^/, `(up ${wc.up} B, down ${wc.down} B, stored ${wc.stored} B)\n`));
