/**
 * `npm run bench:append [-- --rounds N]`
 *
 * Two costs of incremental sync, each as a ratio against a baseline measured in the same run, on the
 * same local service (HTTP → handler → store → emulators), requests interleaved so both sides see the
 * same machine load:
 *
 *  1. Append cost vs transcript size: a 1 KB append (`appendJsonl`) to a 50 MB transcript against a
 *     1 KB append to a 50 KB one (each transcript built from the real fixture, stored as a chain).
 *     Prints the p50 and the mean of each (the mean includes the appends that compact) and the ratios.
 *  2. Chain hydrate vs single object: a GET (Accept-Encoding: gzip, as the worker-client sends) of the
 *     fixture stored as a chain built by its 89 turns against the same bytes stored as one object.
 *
 *     Also the widest chain a read can meet: the fixture in CHAIN_MAX_EXTENTS parts (the compaction bound, 3).
 *
 * Last line: `bench:append: append_p50_ratio=<x> append_mean_ratio=<y> chain_hydrate_p50_ratio=<z> extents=<n>
 * widest_chain_hydrate_p50_ratio=<w> widest_extents=3`.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { GetItemCommand } from '@aws-sdk/client-dynamodb';
import { SNAPSHOT_PATH } from '../functions/lib/contract.js';
import { startLocalService } from '../local/service.js';
import { turnsOf } from './replay-turns.js';

process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';
process.env['POWERTOOLS_LOG_LEVEL'] ??= 'SILENT';

const i = process.argv.indexOf('--rounds');
const rounds = i >= 0 ? Number(process.argv[i + 1]) : 60;
if (!Number.isInteger(rounds) || rounds < 5) throw new Error('--rounds must be an integer >= 5');

const FIXTURE = new URL('../test/fixtures/pi-large-session.jsonl', import.meta.url);
const p50 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

const fixture = await readFile(FIXTURE);
const svc = await startLocalService({});
const url = `${svc.url}${SNAPSHOT_PATH}`;

/** One conversation the bench writes to: what it holds and its next run id. */
class Conversation {
  /** What the conversation holds, as the chunks written (joined only to check a hydrate). */
  private chunks: Buffer[] = [];
  private length = 0;
  /** Running sha256 of the content: the client side of an append stays O(appended) too. */
  private hash = createHash('sha256');
  runId = 0;
  constructor(readonly conv: string) {}

  get content(): Buffer {
    if (this.chunks.length > 1) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0] ?? Buffer.alloc(0);
  }

  get bytes(): number {
    return this.length;
  }

  token(runId?: number): Promise<string> {
    return svc.mintToken({ org: 'bench', agent: 'append', conv: this.conv, ...(runId !== undefined && { runId }) });
  }

  /** Writes `content` whole (POST snapshotJsonl). */
  async full(content: Buffer): Promise<void> {
    const runId = ++this.runId;
    await this.post(runId, { runId, terminalStatus: 'completed', snapshotJsonl: content.toString('utf8') });
    this.chunks = [content];
    this.length = content.length;
    this.hash = createHash('sha256').update(content);
  }

  /** Appends `bytes` (POST appendJsonl) and returns the request's duration in ms. */
  async append(bytes: Buffer): Promise<number> {
    const runId = ++this.runId;
    const base = { runId: runId - 1, bytes: this.length, sha256: this.hash.copy().digest('hex') };
    const next = this.hash.copy().update(bytes);
    const body = { runId, terminalStatus: 'completed', appendJsonl: bytes.toString('utf8'), base, sha256: next.copy().digest('hex') };
    const started = performance.now();
    await this.post(runId, body);
    const ms = performance.now() - started;
    this.chunks.push(bytes);
    this.length += bytes.length;
    this.hash = next;
    return ms;
  }

  private async post(runId: number, body: unknown): Promise<void> {
    const res = await fetch(url, {
      method: 'POST',
      headers: { authorization: `Bearer ${await this.token(runId)}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    if (res.status !== 200) throw new Error(`${this.conv} run ${runId}: ${res.status} ${await res.text()}`);
    await res.arrayBuffer();
  }

  /** GET with Accept-Encoding: gzip; returns ms. Checks the bytes. */
  async hydrate(token: string): Promise<number> {
    const started = performance.now();
    const res = await fetch(url, { headers: { authorization: `Bearer ${token}`, 'accept-encoding': 'gzip' } });
    const body = Buffer.from(await res.arrayBuffer());
    const ms = performance.now() - started;
    if (res.status !== 200 || !body.equals(this.content)) throw new Error(`${this.conv}: hydrate ${res.status}, ${body.length} bytes`);
    return ms;
  }
}

/** `target` bytes of transcript: the fixture's lines, repeated. */
function transcriptOf(target: number): Buffer {
  const copies = Math.ceil(target / fixture.length);
  const all = Buffer.concat(Array.from({ length: copies }, () => fixture));
  return all.subarray(0, all.lastIndexOf(0x0a, target - 1) + 1);
}

function linesOf(buf: Buffer, target: number): Buffer {
  const end = buf.indexOf(0x0a, target);
  return buf.subarray(0, end === -1 ? buf.length : end + 1);
}

try {
  // 1. Append cost.
  const small = new Conversation('small');
  await small.full(transcriptOf(50 * 1024));
  const large = new Conversation('large');
  const largeTarget = transcriptOf(50 * 1024 * 1024);
  // Built in ≤ 4 MiB steps (the direct-POST limit): a full write, then appends.
  const step = 3 * 1024 * 1024;
  await large.full(largeTarget.subarray(0, largeTarget.lastIndexOf(0x0a, step) + 1));
  while (large.bytes < largeTarget.length) {
    const from = large.bytes;
    const to = Math.min(largeTarget.length, largeTarget.lastIndexOf(0x0a, from + step) + 1);
    await large.append(largeTarget.subarray(from, to > from ? to : largeTarget.length));
  }
  // 1 KB appends: whole fixture lines of about 1 KB.
  const kb = linesOf(fixture.subarray(fixture.indexOf(0x0a) + 1), 1000);
  const smallMs: number[] = [];
  const largeMs: number[] = [];
  for (let r = 0; r < 5; r++) {
    await small.append(kb);
    await large.append(kb);
  } // warm-up
  for (let r = 0; r < rounds; r++) {
    smallMs.push(await small.append(kb));
    largeMs.push(await large.append(kb));
  }
  // Both still hydrate byte-exact after all that compaction.
  await small.hydrate(await small.token());
  await large.hydrate(await large.token());

  // 2. Chain hydrate vs single object, same bytes.
  const chained = new Conversation('chained');
  const turns = turnsOf(fixture);
  await chained.full(turns[0]!);
  for (const turn of turns.slice(1)) await chained.append(turn);
  // The worst case a read meets: a chain at the compaction bound (CHAIN_MAX_EXTENTS objects), the fixture in as many parts.
  const widest = new Conversation('widest');
  const parts = svc.config.chainMaxExtents;
  const per = Math.floor(turns.length / parts);
  await widest.full(Buffer.concat(turns.slice(0, per)));
  for (let q = 1; q < parts; q++) await widest.append(Buffer.concat(turns.slice(q * per, q === parts - 1 ? turns.length : (q + 1) * per)));
  const single = new Conversation('single');
  await single.full(fixture);
  const extentsOf = async (conv: string) => {
    const head = await svc.ddb.send(
      new GetItemCommand({ TableName: svc.config.tableName, Key: { pk: { S: `bench/append/${conv}` }, sk: { S: 'HEAD' } }, ConsistentRead: true }),
    );
    return head.Item?.['latestExtents']?.L?.length ?? 0;
  };
  const extents = await extentsOf('chained');
  const widestExtents = await extentsOf('widest');
  const chainToken = await chained.token();
  const widestToken = await widest.token();
  const singleToken = await single.token();
  for (let r = 0; r < 20; r++) {
    await chained.hydrate(chainToken);
    await widest.hydrate(widestToken);
    await single.hydrate(singleToken);
  }
  const chainMs: number[] = [];
  const widestMs: number[] = [];
  const singleMs: number[] = [];
  for (let r = 0; r < rounds * 5; r++) {
    chainMs.push(await chained.hydrate(chainToken));
    widestMs.push(await widest.hydrate(widestToken));
    singleMs.push(await single.hydrate(singleToken));
  }

  // The appends above ran on the layout a 3 MiB-step build left; a conversation that reached 50 MB by
  // small appends has the layout compaction converges to. What compaction copies per append there, from the
  // policy itself (planCompaction, the configured bound and ratio) over a whole conversation of such appends:
  const member = (await import('node:zlib')).deflateRawSync(kb, { finishFlush: (await import('node:zlib')).constants.Z_SYNC_FLUSH }).length;
  const { planCompaction } = await import('../functions/lib/store/chain.js');
  const steady = (storedTarget: number) => {
    let lengths: number[] = [];
    let total = 0;
    let copied = 0;
    let counted = 0;
    const appends = Math.ceil(storedTarget / member);
    for (let n = 0; n < appends; n++) {
      const next = [...lengths, member];
      const from = planCompaction(next, svc.config.chainMaxExtents, svc.config.chainMergeRatio);
      const bytes = from < 0 ? 0 : next.slice(from, -1).reduce((a, b) => a + b, 0);
      lengths = from < 0 ? next : [...next.slice(0, from), next.slice(from).reduce((a, b) => a + b, 0)];
      total += member;
      if (n >= appends * 0.75) ((copied += bytes), (counted += 1)); // the last quarter: at about full size
    }
    return { copiedPerAppend: copied / counted, stored: total };
  };
  const storedOf = async (conv: string) => {
    const head = await svc.ddb.send(
      new GetItemCommand({ TableName: svc.config.tableName, Key: { pk: { S: `bench/append/${conv}` }, sk: { S: 'HEAD' } }, ConsistentRead: true }),
    );
    return Number(head.Item?.['latestStoredBytes']?.N ?? 0);
  };
  const smallSteady = steady(await storedOf('small'));
  const largeSteady = steady(await storedOf('large'));
  const f = (x: number) => x.toFixed(2);
  process.stdout.write(
    `append 1 KB to ${small.bytes} B: p50 ${f(p50(smallMs))} ms, mean ${f(mean(smallMs))} ms (${rounds} appends)\n` +
      `append 1 KB to ${large.bytes} B: p50 ${f(p50(largeMs))} ms, mean ${f(mean(largeMs))} ms (${rounds} appends)\n` +
      `compaction at steady state (policy simulated, ${kb.length} B appends = ${member} B fragments): ` +
      `${Math.round(smallSteady.copiedPerAppend)} B copied per append at ${smallSteady.stored} B stored, ` +
      `${Math.round(largeSteady.copiedPerAppend)} B at ${largeSteady.stored} B stored\n` +
      `hydrate ${fixture.length} B as a chain of ${extents} objects (${turns.length} turns): p50 ${f(p50(chainMs))} ms;` +
      ` as a chain of ${widestExtents} objects: p50 ${f(p50(widestMs))} ms; as one object: p50 ${f(p50(singleMs))} ms (${rounds * 5} each)\n`,
  );
  process.stdout.write(
    `bench:append: append_p50_ratio=${f(p50(largeMs) / p50(smallMs))} append_mean_ratio=${f(mean(largeMs) / mean(smallMs))}` +
      ` chain_hydrate_p50_ratio=${f(p50(chainMs) / p50(singleMs))} extents=${extents}` +
      ` widest_chain_hydrate_p50_ratio=${f(p50(widestMs) / p50(singleMs))} widest_extents=${widestExtents}\n`,
  );
} finally {
  await svc.stop();
}
