/**
 * `npm run bench:retention`
 *
 * What retention saves (docs/DESIGN.md § Retention): 500 turns over 20 conversations (25 each, consecutive
 * turns of the real fixture transcript, each conversation from its own offset) through the local service's
 * HTTP API with RETAIN_COMPLETED_RUNS=3. Turns alternate between an existing worker (a whole-file POST of the
 * session file) and a new one (an append: `appendJsonl` on the latest run); every 10th turn fails (a
 * whole-file POST with `terminalStatus: failed` that the next turn does not build on). Measures the bytes in
 * S3 (sum of the listed object sizes) and the RUN + CHAIN records:
 *   - without retention: right after the writes;
 *   - after a pass past the grace period (the completed runs beyond the 3 kept go: records only, their
 *     bytes are shared with the kept runs' chain);
 *   - with retention: passes past RETAIN_FAILED_DAYS (the failed runs and their objects go) and a grace
 *     period later (chains no run references), then the reconciler.
 * The passes run on a store whose clock is moved forward; the writes use the real clock.
 * Last line: `retention: turns=500 conversations=20 stored_bytes_without=… stored_bytes_with=… ratio=…`.
 */
import { readFile } from 'node:fs/promises';
import { paginateQuery } from '@aws-sdk/client-dynamodb';
import { marshall } from '@aws-sdk/util-dynamodb';
import { createHash } from 'node:crypto';
import { SNAPSHOT_PATH } from '../functions/lib/contract.js';
import { conversationKey } from '../functions/lib/ids.js';
import { SnapshotStore } from '../functions/lib/store/index.js';
import { listObjectPages } from '../functions/lib/store/objects.js';
import { startLocalService, type LocalService } from '../local/service.js';
import { turnsOf } from './replay-turns.js';

process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';
process.env['POWERTOOLS_LOG_LEVEL'] ??= 'SILENT';

const FIXTURE = new URL('../test/fixtures/pi-large-session.jsonl', import.meta.url);
const CONVERSATIONS = 20;
const TURNS_PER_CONVERSATION = 25;
const FAIL_EVERY = 10;
const KEEP = 3;
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function stored(svc: LocalService): Promise<{ bytes: number; objects: number }> {
  let bytes = 0;
  let objects = 0;
  for await (const page of listObjectPages(svc.store, { prefix: '' })) {
    for (const o of page) {
      bytes += o.Size ?? 0;
      objects += 1;
    }
  }
  return { bytes, objects };
}

async function records(svc: LocalService, pks: readonly string[]): Promise<number> {
  let n = 0;
  for (const pk of pks) {
    const pages = paginateQuery(
      { client: svc.ddb },
      { TableName: svc.config.tableName, KeyConditionExpression: 'pk = :pk', ExpressionAttributeValues: marshall({ ':pk': pk }), ConsistentRead: true, Select: 'COUNT' },
    );
    for await (const page of pages) n += page.Count ?? 0;
  }
  return n - pks.length; // HEAD items are not runs or chains
}

async function post(svc: LocalService, ids: { org: string; agent: string; conv: string }, runId: number, body: unknown): Promise<void> {
  const token = await svc.mintToken({ ...ids, runId });
  const res = await fetch(`${svc.url}${SNAPSHOT_PATH}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (res.status !== 200) throw new Error(`run ${runId}: ${res.status} ${await res.text()}`);
  await res.arrayBuffer();
}

async function main(): Promise<void> {
  const started = Date.now();
  const turns = turnsOf(await readFile(FIXTURE));
  const svc = await startLocalService({ env: { ...process.env, RETAIN_COMPLETED_RUNS: String(KEEP) } });
  try {
    const pks: string[] = [];
    let turnCount = 0;
    let failed = 0;
    let appends = 0;
    let wholeFile = 0;
    for (let c = 0; c < CONVERSATIONS; c++) {
      const ids = { org: 'bench-org', agent: 'bench-agent', conv: `retention-${started}-${c}` };
      pks.push(conversationKey({ organizationId: ids.org, agentId: ids.agent, conversationId: ids.conv }));
      const offset = (c * 3) % Math.max(1, turns.length - TURNS_PER_CONVERSATION);
      let latest: { runId: number; content: Buffer } | undefined;
      for (let i = 0; i < TURNS_PER_CONVERSATION; i++) {
        const runId = i + 1;
        const added = turns[offset + i]!;
        const content = Buffer.concat([latest?.content ?? Buffer.alloc(0), added]);
        turnCount += 1;
        if (turnCount % FAIL_EVERY === 0) {
          await post(svc, ids, runId, { runId, terminalStatus: 'failed', snapshotJsonl: content.toString('utf8') });
          failed += 1;
          continue;
        }
        if (latest && (i + c) % 2 === 1) {
          await post(svc, ids, runId, {
            runId,
            terminalStatus: 'completed',
            appendJsonl: added.toString('utf8'),
            base: { runId: latest.runId, bytes: latest.content.length, sha256: sha(latest.content) },
            sha256: sha(content),
          });
          appends += 1;
        } else {
          await post(svc, ids, runId, { runId, terminalStatus: 'completed', snapshotJsonl: content.toString('utf8') });
          wholeFile += 1;
        }
        latest = { runId, content };
      }
    }
    const writtenAt = Date.now();
    const without = { ...(await stored(svc)), records: await records(svc, pks) };
    console.log(`writes: ${turnCount} turns (${wholeFile} whole-file, ${appends} appends, ${failed} failed) in ${((writtenAt - started) / 1000).toFixed(1)} s`);
    console.log(`without retention: ${without.bytes} bytes in ${without.objects} objects, ${without.records} RUN+CHAIN records`);

    let now = writtenAt;
    const store = new SnapshotStore({
      s3: svc.s3,
      ddb: svc.ddb,
      bucket: svc.config.bucketName,
      table: svc.config.tableName,
      now: () => now,
      retention: svc.store.retention,
    });
    const grace = store.retention.graceSeconds * 1000;
    const pass = async (label: string) => {
      const r = await store.runRetention();
      if (r.failed > 0) throw new Error(`retention pass failed: ${JSON.stringify(r)}`);
      const s = await stored(svc);
      console.log(`${label}: removed ${r.runs} runs, ${r.objects} objects, ${r.bytes} bytes → ${s.bytes} bytes in ${s.objects} objects, ${await records(svc, pks)} records`);
    };
    now = writtenAt + grace + 60_000;
    await pass('pass past the grace');
    now = writtenAt + store.retention.retainFailedDays * DAY + grace + 60_000;
    await pass(`pass past RETAIN_FAILED_DAYS (${store.retention.retainFailedDays} d)`);
    now += grace + 60_000;
    await pass('pass a grace period later');
    const rec = await store.reconcile({ graceSeconds: store.retention.graceSeconds, deadlineAt: Date.now() + 120_000 });
    console.log(`reconciler: scanned ${rec.scanned}, deleted ${rec.deleted}`);
    const withRetention = { ...(await stored(svc)), records: await records(svc, pks) };
    console.log(`with retention: ${withRetention.bytes} bytes in ${withRetention.objects} objects, ${withRetention.records} RUN+CHAIN records (${((Date.now() - started) / 1000).toFixed(1)} s total)`);
    console.log(
      `retention: turns=${turnCount} conversations=${CONVERSATIONS} stored_bytes_without=${without.bytes} stored_bytes_with=${withRetention.bytes} ratio=${(without.bytes / withRetention.bytes).toFixed(2)}`,
    );
  } finally {
    await svc.stop();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
