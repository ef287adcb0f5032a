/**
 * Incremental sync (issue 12) end to end against the real local service: two pods take turns on one
 * conversation (hydrate → append a turn → write), ten turns. Every hydrate must be byte-exact whatever
 * the service supports; the client must try an append for every write after the first.
 *
 * It also asserts that the service took them: writes 2–10 are stored as appends (no full body after the
 * first write), and at least one hydrate came back as a delta (226). (A service that predates appends
 * answers each append with 415/400 and the client falls back to a full write in the same call;
 * test/worker-client/append.test.ts covers that against a fake service.)
 */
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { brotliDecompressSync, gunzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import type { LocalService } from '../../local/service.js';
import { hydrateSnapshot, writeSnapshot, type WriteSnapshotResult } from '../../worker-client/src/index.js';
import { conversation, FAST, useServiceAndTempDir } from './support.js';

const SERVICE_SUPPORTS_APPEND = true;

let svc: LocalService;
let dir: string;
useServiceAndTempDir(
  (s) => (svc = s),
  (d) => (dir = d),
);

/** A `fetch` that records what kind of snapshot body each POST carried, and 226 answers. */
function countingFetch() {
  const seen = { appendBodies: 0, fullBodies: 0, delta226: 0 };
  const f: typeof globalThis.fetch = async (input, init) => {
    if (init?.method === 'POST' && init.body !== undefined && init.body !== null) {
      const coding = new Headers(init.headers).get('content-encoding');
      const raw = typeof init.body === 'string' ? Buffer.from(init.body, 'utf8') : Buffer.from(init.body as Uint8Array);
      const json = JSON.parse((coding === 'br' ? brotliDecompressSync(raw) : coding === 'gzip' ? gunzipSync(raw) : raw).toString('utf8')) as Record<string, unknown>;
      if ('appendJsonl' in json) seen.appendBodies++;
      else if ('snapshotJsonl' in json) seen.fullBodies++;
    }
    const res = await globalThis.fetch(input, init);
    if (res.status === 226) seen.delta226++;
    return res;
  };
  return { seen, fetch: f };
}

function turnLines(turn: number): string {
  return [
    JSON.stringify({ type: 'message', role: 'user', turn, text: `turn ${turn}: héllo — 🚀 "quoted" \\ back` }),
    JSON.stringify({ type: 'message', role: 'assistant', turn, text: 'ü'.repeat(turn * 7), tools: [{ name: 'bash', args: { n: turn } }] }),
  ].join('\n') + '\n';
}

describe('incremental sync end to end (local service)', () => {
  it('10 turns alternating between two pods: every hydrate byte-exact; writes after the first go as appends', async () => {
    const c = await conversation(svc);
    const pods = [join(dir, 'pod-a', 'session.jsonl'), join(dir, 'pod-b', 'session.jsonl')];
    for (const p of pods) await mkdir(join(p, '..'), { recursive: true });
    const { seen, fetch } = countingFetch();
    let expected = '';
    const writes: WriteSnapshotResult[] = [];

    for (let turn = 1; turn <= 10; turn++) {
      const file = pods[(turn - 1) % 2]!;
      const h = await hydrateSnapshot({ sessionFile: file, gatewayUrl: svc.url, workerToken: c.convToken, fetch, ...FAST });
      if (turn === 1) {
        expect(h.status).toBe('not_found');
      } else {
        expect(h.status, `turn ${turn}`).not.toBe('not_found');
        expect(Buffer.compare(await readFile(file), Buffer.from(expected, 'utf8')), `turn ${turn}: hydrate byte-exact`).toBe(0);
      }

      expected += turnLines(turn);
      await writeFile(file, expected);
      const appendsBefore = seen.appendBodies;
      const w = await writeSnapshot({ sessionFile: file, gatewayUrl: svc.url, workerToken: await c.runToken(turn), runId: turn, terminalStatus: 'completed', fetch, ...FAST });
      expect(w, `turn ${turn}`).toMatchObject({ status: 'written', bytes: Buffer.byteLength(expected) });
      writes.push(w);
      // Client side, whatever the service: the first write is whole, every later one is tried as an append.
      expect(seen.appendBodies - appendsBefore, `turn ${turn}: append bodies sent`).toBe(turn === 1 ? 0 : 1);
    }

    // Both pods end on the last turn, byte-exact.
    for (const file of pods) {
      await hydrateSnapshot({ sessionFile: file, gatewayUrl: svc.url, workerToken: c.convToken, fetch, ...FAST });
      expect(Buffer.compare(await readFile(file), Buffer.from(expected, 'utf8'))).toBe(0);
    }

    if (SERVICE_SUPPORTS_APPEND) {
      expect(writes.map((w) => (w.status === 'written' ? w.transport : w.status))).toEqual(['direct', ...Array<string>(9).fill('append')]);
      expect(seen.fullBodies).toBe(1);
      expect(seen.appendBodies).toBe(9);
      expect(seen.delta226).toBeGreaterThan(0);
    }
  });
});
