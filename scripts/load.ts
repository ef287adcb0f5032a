/**
 * Load + consistency check: `npm run test:load -- --ops N --workers N` (or `--seconds N`).
 *
 * Simulated workers loop hydrate → append a line → write on their own conversations, plus a few
 * conversations shared by several workers, with random resets (DELETE) and some non-completed runs.
 * Every outcome is recorded with a logical clock (this process is the only client, so "response
 * received before request sent" is a real happens-before on the server too). The checker then proves:
 *
 *   hydrate (online, each one) — I1/I4/I6:  a 200 body must be byte-identical to the body of SOME
 *     completed write to the SAME conversation that was acknowledged (200) — or whose outcome is
 *     unknown (5xx/network) — that had been sent before the hydrate finished, that was not wiped by a
 *     clear acknowledged before the hydrate started (write answered before that clear was sent), and
 *     whose runId is ≥ the floor: the highest runId acknowledged before the hydrate started by a write
 *     sent after the last clear had ended. 404 only when there is no floor. Any clear overlapping the
 *     hydrate lifts the floor (404 or a lower post-clear run are then legitimate).
 *     Classified failures: torn (bytes match no write at all), cross (bytes of another conversation),
 *     stale = lost (older than the floor, or 404 above a floor), resurrected (wiped by a clear),
 *     nonCompleted (a failed/fenced run served).
 *   storage (at the end) — I2: every acknowledged write not overlapped by any clear still has its RUN
 *     record with its sha256 and an S3 object whose (gunzipped) bytes are exactly the written bytes;
 *     every acknowledged write that a later acknowledged clear wiped is gone.
 *   final hydrate per conversation — the same rule with nothing in flight.
 *
 * A run is bounded by an operation count (`ops`: each worker makes its share of the requests, with its
 * own seeded random choices, so what is requested does not depend on scheduling) and/or by wall time
 * (`seconds`, for soak runs). Tests use counts only.
 *
 * Its last line is `load: <ops> ops, <lost> lost, <errors> errors`; exit code 1 on any violation.
 */
import { createHash } from 'node:crypto';
import { parseArgs } from 'node:util';
import { GetItemCommand } from '@aws-sdk/client-dynamodb';
import { SNAPSHOT_PATH } from '../functions/lib/contract.js';
import { conversationKey, padRunId } from '../functions/lib/ids.js';
import { GONE, readRunBytes } from '../functions/lib/store/chain.js';
import { RUN_SK_PREFIX } from '../functions/lib/store/index.js';
import { fromRunItem } from '../functions/lib/store/schema.js';
import { startLocalService, type LocalService, type LocalServiceOptions } from '../local/service.js';

export interface LoadOptions {
  /**
   * Requests to make in total (hydrates + writes + clears), split evenly across workers; a worker
   * finishes the iteration it is in, so the total is at most `ops + 2 × workers`. At least one of
   * `ops` and `seconds` is required; with both, the run stops at whichever comes first.
   */
  ops?: number;
  /** Wall-time bound (soak runs from the command line). */
  seconds?: number;
  workers: number;
  /** Conversations owned by each worker. */
  ownConversations?: number;
  /** Conversations every worker also uses. */
  sharedConversations?: number;
  /** Chance that an iteration on a conversation starts with a DELETE. */
  resetProbability?: number;
  /** Chance that a run ends non-completed (stored, never served). */
  failedProbability?: number;
  /** Chance that an iteration picks a shared conversation. */
  sharedProbability?: number;
  seed?: number;
  /** Use this service; otherwise one is started (and stopped) on embedded emulators. */
  service?: LocalService;
  serviceOptions?: LocalServiceOptions;
  /**
   * Fault injection: `run` starts once `afterOps` requests have completed, concurrently with the
   * workers; the run waits for it to finish before checking.
   */
  midway?: { afterOps: number; run: (svc: LocalService, load: LoadProgress) => Promise<void> };
  log?: (line: string) => void;
}

/** What a midway fault sees of the run in progress. */
export interface LoadProgress {
  /** Counters so far (final once the workers are done). */
  readonly result: Readonly<LoadResult>;
  /**
   * Resolves `true` as soon as `predicate(result)` holds (checked after every completed request), or
   * `false` if the workers finish first — so a fault that lasts "until N requests failed" never
   * outlives the run.
   */
  until(predicate: (r: Readonly<LoadResult>) => boolean): Promise<boolean>;
}

export interface LoadResult {
  ops: number;
  hydrates: number;
  writes: number;
  clears: number;
  acknowledgedWrites: number;
  fenced: number;
  /** Stale reads + acknowledged writes missing from storage. */
  lost: number;
  torn: number;
  cross: number;
  resurrected: number;
  nonCompleted: number;
  /** Unexpected outcomes: 5xx, unexpected 4xx, network errors. */
  errors: number;
  /** Of `errors`: 503 answers that carried Retry-After. */
  unavailable: number;
  statuses: Record<string, number>;
  violations: string[];
  checkedInStorage: number;
  elapsedMs: number;
  opsPerSecond: number;
}

interface WriteRec {
  conv: string;
  runId: number;
  body: Buffer;
  sha: string;
  completed: boolean;
  start: number;
  end: number;
  outcome: 'acked' | 'fenced' | 'unknown' | 'rejected';
}

interface ClearRec {
  start: number;
  end: number;
  acked: boolean;
}

interface Conv {
  id: string;
  scope: { org: string; agent: string; conv: string };
  nextRunId: number;
  writes: WriteRec[];
  bySha: Map<string, WriteRec>;
  clears: ClearRec[];
}

type Check = 'ok' | 'torn' | 'cross' | 'stale' | 'resurrected' | 'nonCompleted';

/** mulberry32: deterministic choices for a given seed. */
function prng(seed: number): () => number {
  let state = seed | 0;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Runs the simulated workers against `opts.service` (or a service of its own), then checks every
 * recorded outcome and the storage itself. Never throws on a violation: see `failed()` / `summary()`.
 */
export async function runLoad(opts: LoadOptions): Promise<LoadResult> {
  if (opts.ops === undefined && opts.seconds === undefined) throw new Error('runLoad: give ops and/or seconds');
  const log = opts.log ?? (() => {});
  const svc = opts.service ?? (await startLocalService(opts.serviceOptions ?? {}));
  const own = opts.ownConversations ?? 2;
  const shared = opts.sharedConversations ?? 2;
  const pReset = opts.resetProbability ?? 0.03;
  const pFailed = opts.failedProbability ?? 0.05;
  const pShared = opts.sharedProbability ?? 0.3;
  // One random stream per worker: a worker's choices do not depend on how requests interleave.
  const seed = opts.seed ?? 1;
  const rngs = Array.from({ length: opts.workers }, (_, w) => prng(seed * 7919 + w * 104_729));

  let clock = 0;
  const tick = () => ++clock;
  const runTag = `${process.pid}-${Date.now()}`;
  const newConv = (name: string): Conv => {
    // Odd characters on purpose: isolation must hold for ids that look like paths (I6).
    const id = `load/${runTag}/${name}`;
    return { id, scope: { org: 'org-load', agent: 'agent/../load', conv: id }, nextRunId: 1, writes: [], bySha: new Map(), clears: [] };
  };
  const sharedConvs = Array.from({ length: shared }, (_, i) => newConv(`shared-${i}`));
  const ownConvs = Array.from({ length: opts.workers }, (_, w) => Array.from({ length: own }, (_, i) => newConv(`w${w}-${i}`)));
  const allConvs = [...sharedConvs, ...ownConvs.flat()];
  const globalBySha = new Map<string, WriteRec>();

  const r: LoadResult = {
    ops: 0, hydrates: 0, writes: 0, clears: 0, acknowledgedWrites: 0, fenced: 0, lost: 0, torn: 0, cross: 0,
    resurrected: 0, nonCompleted: 0, errors: 0, unavailable: 0, statuses: {}, violations: [], checkedInStorage: 0,
    elapsedMs: 0, opsPerSecond: 0,
  };
  const violation = (kind: Check | 'lost' | 'error', msg: string) => {
    if (kind === 'stale' || kind === 'lost') r.lost += 1;
    else if (kind === 'torn') r.torn += 1;
    else if (kind === 'cross') r.cross += 1;
    else if (kind === 'resurrected') r.resurrected += 1;
    else if (kind === 'nonCompleted') r.nonCompleted += 1;
    if (r.violations.length < 50) r.violations.push(`${kind}: ${msg}`);
  };
  const count = (what: string, status: number | string) => {
    const k = `${what} ${status}`;
    r.statuses[k] = (r.statuses[k] ?? 0) + 1;
  };
  const unexpected = async (what: string, res: Response | Error) => {
    r.errors += 1;
    if (res instanceof Response) {
      if (res.status === 503 && res.headers.get('retry-after')) r.unavailable += 1;
      const text = await res.text().catch(() => '');
      if (r.violations.length < 50 && res.status !== 503) r.violations.push(`error: ${what} → ${res.status} ${text.slice(0, 200)}`);
    } else if (r.violations.length < 50) {
      r.violations.push(`error: ${what} → ${res.name}: ${res.message}`);
    }
  };

  const url = `${svc.url}${SNAPSHOT_PATH}`;
  const auth = async (c: Conv, runId?: number) => ({
    authorization: `Bearer ${await svc.mintToken({ ...c.scope, ...(runId !== undefined && { runId }) })}`,
  });

  /** The hydrate rule from the header comment. */
  const judge = (c: Conv, t0: number, t1: number, status: number, body: Buffer, headerRunId: string | null): Check => {
    const cutoff = Math.max(-1, ...c.clears.filter((x) => x.acked && x.end < t0).map((x) => x.start));
    const overlapping = c.clears.some((x) => x.start < t1 && x.end > t0);
    let floor: number | undefined;
    if (!overlapping) {
      const lastEnd = Math.max(-1, ...c.clears.filter((x) => x.end < t0).map((x) => x.end));
      for (const w of c.writes) {
        if (w.outcome === 'acked' && w.completed && w.start > lastEnd && w.end < t0) floor = Math.max(floor ?? 0, w.runId);
      }
    }
    if (status === 404) return floor === undefined ? 'ok' : 'stale';
    const sha = createHash('sha256').update(body).digest('hex');
    const w = c.bySha.get(sha);
    if (!w) return globalBySha.has(sha) ? 'cross' : 'torn';
    if (headerRunId !== String(w.runId)) return 'torn';
    if (!w.completed || w.outcome === 'fenced' || w.outcome === 'rejected') return 'nonCompleted';
    if (w.start > t1) return 'torn'; // impossible unless bytes came from nowhere
    if (w.end < cutoff) return 'resurrected';
    if (floor !== undefined && w.runId < floor) return 'stale';
    return 'ok';
  };

  const hydrate = async (c: Conv): Promise<Buffer> => {
    r.hydrates += 1;
    const t0 = tick();
    let res: Response;
    try {
      res = await fetch(url, { headers: await auth(c) });
    } catch (err) {
      tick();
      count('GET', 'network');
      await unexpected('GET', err as Error);
      return Buffer.alloc(0);
    }
    const body = Buffer.from(await res.arrayBuffer());
    const t1 = tick();
    count('GET', res.status);
    // Loss is loud: a HEAD naming a missing or corrupt object answers 500 (integrity), never 404.
    // Where a snapshot must be served, that is a lost write, whatever the status says.
    if (res.status === 500 && judge(c, t0, t1, 404, body, null) === 'stale') {
      violation('stale', `${c.id} hydrate [${t0},${t1}] → 500 (integrity) where a snapshot must be served`);
      return Buffer.alloc(0);
    }
    if (res.status !== 200 && res.status !== 404) {
      await unexpected('GET', new Response(body, { status: res.status, headers: res.headers }));
      return Buffer.alloc(0);
    }
    const verdict = judge(c, t0, t1, res.status, body, res.headers.get('x-snapshot-run-id'));
    if (verdict !== 'ok') {
      violation(verdict, `${c.id} hydrate [${t0},${t1}] → ${res.status} run=${res.headers.get('x-snapshot-run-id')} ${body.subarray(-120).toString()}`);
    }
    return res.status === 200 ? body : Buffer.alloc(0);
  };

  const write = async (c: Conv, base: Buffer, worker: number, rand: () => number): Promise<void> => {
    r.writes += 1;
    // Shared counter per conversation: runIds increase in allocation order, not in arrival order.
    const runId = c.nextRunId++;
    const completed = rand() >= pFailed;
    // Keep transcripts bounded, as compaction would: start over past ~24 KB.
    const prefix = base.length > 24 * 1024 ? Buffer.alloc(0) : base;
    const line = `${JSON.stringify({ conv: c.id, runId, worker, t: clock, pad: 'p'.repeat(Math.floor(rand() * 200)) })}\n`;
    const body = Buffer.concat([prefix, Buffer.from(line)]);
    const rec: WriteRec = {
      conv: c.id, runId, body, sha: createHash('sha256').update(body).digest('hex'), completed, start: 0, end: 0, outcome: 'unknown',
    };
    c.writes.push(rec);
    c.bySha.set(rec.sha, rec);
    globalBySha.set(rec.sha, rec);
    // The per-run token is minted right before the write (the reset fence compares its iat).
    const headers = { ...(await auth(c, runId)), 'content-type': 'application/json' };
    rec.start = tick();
    let res: Response;
    try {
      res = await fetch(url, {
        method: 'POST',
        headers,
        body: JSON.stringify({ terminalStatus: completed ? 'completed' : 'failed', snapshotJsonl: body.toString('utf8'), runId }),
      });
    } catch (err) {
      rec.end = tick();
      count('POST', 'network');
      await unexpected('POST', err as Error);
      return;
    }
    const text = await res.text();
    rec.end = tick();
    count('POST', res.status);
    if (res.status === 200) {
      rec.outcome = 'acked';
      r.acknowledgedWrites += 1;
    } else if (res.status === 409 && text.includes('"reset_fenced"')) {
      rec.outcome = 'fenced';
      r.fenced += 1;
    } else if (res.status < 500) {
      rec.outcome = 'rejected';
      await unexpected('POST', new Response(text, { status: res.status, headers: res.headers }));
    } else {
      await unexpected('POST', new Response(text, { status: res.status, headers: res.headers }));
    }
  };

  const clear = async (c: Conv): Promise<void> => {
    r.clears += 1;
    const rec: ClearRec = { start: 0, end: Number.POSITIVE_INFINITY, acked: false };
    c.clears.push(rec);
    const headers = await auth(c);
    rec.start = tick();
    try {
      const res = await fetch(url, { method: 'DELETE', headers });
      const text = await res.text();
      rec.end = tick();
      count('DELETE', res.status);
      if (res.status === 200) rec.acked = true;
      else await unexpected('DELETE', new Response(text, { status: res.status, headers: res.headers }));
    } catch (err) {
      rec.end = tick();
      count('DELETE', 'network');
      await unexpected('DELETE', err as Error);
    }
  };

  // Wakes `until` waiters after every completed request.
  const waiters = new Set<() => void>();
  let workersDone = false;
  const notify = () => {
    for (const w of [...waiters]) w();
  };
  const progress: LoadProgress = {
    result: r,
    until: (predicate) =>
      new Promise<boolean>((resolve) => {
        const check = () => {
          if (predicate(r)) resolve(true);
          else if (workersDone) resolve(false);
          else return;
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      }),
  };

  let midway: Promise<void> | undefined;
  const maybeStartMidway = () => {
    if (opts.midway && midway === undefined && r.ops >= opts.midway.afterOps) {
      log(`load: fault injection after ${r.ops} ops`);
      const run = opts.midway.run;
      midway = Promise.resolve().then(() => run(svc, progress));
      midway.catch(() => {}); // awaited (and rethrown) once the workers are done
    }
  };

  const started = performance.now();
  const stopAt = opts.seconds === undefined ? Number.POSITIVE_INFINITY : started + opts.seconds * 1000;
  const quota = (w: number) =>
    opts.ops === undefined ? Number.POSITIVE_INFINITY : Math.floor(opts.ops / opts.workers) + (w < opts.ops % opts.workers ? 1 : 0);
  const worker = async (w: number) => {
    const rand = rngs[w]!;
    const mine = ownConvs[w]!;
    const myQuota = quota(w);
    let myOps = 0;
    while (myOps < myQuota && performance.now() < stopAt) {
      const c = sharedConvs.length > 0 && rand() < pShared ? sharedConvs[Math.floor(rand() * sharedConvs.length)]! : mine[Math.floor(rand() * mine.length)]!;
      const errorsBefore = r.errors;
      const doClear = rand() < pReset;
      myOps += doClear ? 3 : 2;
      if (doClear) {
        await clear(c);
        r.ops += 1;
        notify();
        maybeStartMidway();
      }
      const base = await hydrate(c);
      r.ops += 1;
      notify();
      maybeStartMidway();
      await write(c, base, w, rand);
      r.ops += 1;
      notify();
      maybeStartMidway();
      // Back off on errors like a real worker (Retry-After is 1 s; a shorter pause keeps the test short).
      if (r.errors > errorsBefore) await new Promise((res) => setTimeout(res, 200));
    }
  };
  const progressLog = setInterval(() => log(`load: ${r.ops} ops, ${r.acknowledgedWrites} acknowledged writes, ${r.errors} errors`), 5000);
  try {
    await Promise.all(Array.from({ length: opts.workers }, (_, w) => worker(w)));
    workersDone = true;
    notify();
    await midway;
  } finally {
    clearInterval(progressLog);
  }
  r.elapsedMs = performance.now() - started;
  r.ops = r.hydrates + r.writes + r.clears;
  r.opsPerSecond = r.ops / (r.elapsedMs / 1000);

  // Final hydrate of every conversation, nothing in flight.
  for (const c of allConvs) {
    const t = tick();
    const res = await fetch(url, { headers: await auth(c) });
    const body = Buffer.from(await res.arrayBuffer());
    if (res.status !== 200 && res.status !== 404) {
      await unexpected('final GET', new Response(body, { status: res.status }));
      continue;
    }
    const verdict = judge(c, t, t, res.status, body, res.headers.get('x-snapshot-run-id'));
    if (verdict !== 'ok') violation(verdict, `${c.id} final hydrate → ${res.status} run=${res.headers.get('x-snapshot-run-id')}`);
  }

  // Every acknowledged write, straight from storage (I2).
  const checks: (() => Promise<void>)[] = [];
  for (const c of allConvs) {
    const pk = conversationKey({ organizationId: c.scope.org, agentId: c.scope.agent, conversationId: c.scope.conv });
    for (const w of c.writes) {
      if (w.outcome !== 'acked') continue;
      const mustExist = c.clears.every((x) => x.end < w.start);
      const mustBeGone = c.clears.some((x) => x.acked && x.start > w.end);
      if (!mustExist && !mustBeGone) continue;
      checks.push(async () => {
        r.checkedInStorage += 1;
        const item = (
          await svc.ddb.send(
            new GetItemCommand({ TableName: svc.config.tableName, Key: { pk: { S: pk }, sk: { S: RUN_SK_PREFIX + padRunId(w.runId) } }, ConsistentRead: true }),
          )
        ).Item;
        if (mustBeGone) {
          if (item) violation('resurrected', `${c.id} run ${w.runId} still stored after an acknowledged clear`);
          return;
        }
        if (!item) return violation('lost', `${c.id} run ${w.runId}: acknowledged, no record`);
        if (item['sha256']?.S !== w.sha) return violation('torn', `${c.id} run ${w.runId}: record sha256 differs`);
        // The run's bytes as stored: its object, or its prefix of a chain (verified against the record).
        const run = fromRunItem(item);
        let plain: Buffer | typeof GONE;
        try {
          plain = await readRunBytes(svc.store, pk, run);
        } catch (err) {
          return violation('torn', `${c.id} run ${w.runId}: stored bytes unreadable (${(err as Error).message})`);
        }
        if (plain === GONE) return violation('lost', `${c.id} run ${w.runId}: object ${run.s3Key} unreadable (NoSuchKey)`);
        if (!plain.equals(w.body)) violation('torn', `${c.id} run ${w.runId}: stored bytes differ`);
      });
    }
  }
  let next = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (next < checks.length) await checks[next++]!();
    }),
  );

  if (!opts.service) await svc.stop();
  return r;
}

export function summary(r: LoadResult): string[] {
  return [
    `load: ${r.hydrates} hydrates, ${r.writes} writes (${r.acknowledgedWrites} acknowledged, ${r.fenced} reset_fenced), ${r.clears} clears in ${(r.elapsedMs / 1000).toFixed(1)} s = ${r.opsPerSecond.toFixed(0)} ops/s`,
    `check: ${r.checkedInStorage} acknowledged writes verified in storage; torn=${r.torn} cross=${r.cross} resurrected=${r.resurrected} nonCompleted=${r.nonCompleted} unavailable=${r.unavailable}`,
    `statuses: ${Object.entries(r.statuses).sort().map(([k, v]) => `${k}=${v}`).join(' ')}`,
    ...r.violations.slice(0, 20).map((v) => `  ${v}`),
    `load: ${r.ops} ops, ${r.lost} lost, ${r.errors} errors`,
  ];
}

export function failed(r: LoadResult): boolean {
  return r.lost + r.torn + r.cross + r.resurrected + r.nonCompleted + r.errors > 0;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      ops: { type: 'string' },
      seconds: { type: 'string' },
      workers: { type: 'string', default: '6' },
      seed: { type: 'string', default: '1' },
    },
  });
  const usage = 'usage: load.ts [--ops N] [--seconds N] [--workers N] [--seed N]  (default: --seconds 20)';
  const ops = values.ops === undefined ? undefined : Number(values.ops);
  const seconds = values.seconds === undefined ? (ops === undefined ? 20 : undefined) : Number(values.seconds);
  const workers = Number(values.workers);
  if ((ops !== undefined && !(Number.isInteger(ops) && ops > 0)) || (seconds !== undefined && !(seconds > 0))) throw new Error(usage);
  if (!Number.isInteger(workers) || workers < 1) throw new Error(usage);
  process.env['POWERTOOLS_LOG_LEVEL'] ??= 'SILENT';
  const r = await runLoad({
    ...(ops !== undefined && { ops }),
    ...(seconds !== undefined && { seconds }),
    workers,
    seed: Number(values.seed),
    log: (l) => console.error(l),
  });
  for (const l of summary(r)) console.log(l);
  process.exitCode = failed(r) ? 1 : 0;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
