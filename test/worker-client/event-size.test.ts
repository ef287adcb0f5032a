/**
 * Fault 6: Lambda's 6 MB limit counts the serialized event, in which API Gateway JSON-escapes a text
 * body once more (or base64-encodes a binary one). A 2.4 MiB quote-heavy transcript POSTed as plain
 * JSON is ~5 MiB of body but ~9 MiB of event: AWS refuses it outside the contract. The worker-client
 * must choose the presigned path for it by its estimate of the event, not by the file size — and the
 * local adapter must answer the contract 413 to a raw POST of it.
 */
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ERRORS, errorBody } from '../../functions/lib/contract.js';
import type { LocalService } from '../../local/service.js';
import { hydrateSnapshot, writeSnapshot } from '../../worker-client/src/index.js';
import { quoteHeavyTranscript } from '../local/support.js';
import { conversation, useServiceAndTempDir } from './support.js';

let svc: LocalService;
let dir: string;
useServiceAndTempDir(
  (s) => (svc = s),
  (d) => (dir = d),
);

const LAMBDA_LIMIT = 6 * 1024 * 1024;
const transcript = quoteHeavyTranscript(2.4 * 1024 * 1024);

/** Records every request the client sends, and every answer status. */
function recordingFetch(): { fetch: typeof globalThis.fetch; calls: { method: string; url: string; status: number; bodyBytes: number }[] } {
  const calls: { method: string; url: string; status: number; bodyBytes: number }[] = [];
  const f: typeof globalThis.fetch = async (input, init) => {
    const res = await globalThis.fetch(input, init);
    const body = init?.body;
    const bodyBytes = typeof body === 'string' ? Buffer.byteLength(body) : body instanceof Uint8Array ? body.byteLength : -1;
    calls.push({ method: init?.method ?? 'GET', url: String(input instanceof Request ? input.url : input), status: res.status, bodyBytes });
    return res;
  };
  return { fetch: f, calls };
}

describe('direct POST vs presigned upload by the serialized event size', () => {
  it('the fixture is what the fault is about: raw body under 6 MB, its event over', () => {
    const body = JSON.stringify({ terminalStatus: 'completed', snapshotJsonl: transcript, runId: 1 });
    expect(Buffer.byteLength(transcript)).toBeLessThanOrEqual(4 * 1024 * 1024); // under directMaxBytes
    expect(Buffer.byteLength(body)).toBeLessThan(LAMBDA_LIMIT);
    expect(Buffer.byteLength(JSON.stringify(body))).toBeGreaterThan(LAMBDA_LIMIT);
  });

  it('a raw POST of it gets the contract 413 from the adapter, and nothing is stored', async () => {
    const c = await conversation(svc);
    const res = await fetch(`${svc.url}/worker/transcript/snapshot`, {
      method: 'POST',
      headers: { authorization: `Bearer ${await c.runToken(1)}`, 'content-type': 'application/json' },
      body: JSON.stringify({ terminalStatus: 'completed', snapshotJsonl: transcript, runId: 1 }),
    });
    expect(res.status).toBe(413);
    expect(await res.json()).toEqual(errorBody(ERRORS.tooLarge));
    const get = await fetch(`${svc.url}/worker/transcript/snapshot`, { headers: { authorization: `Bearer ${c.convToken}` } });
    expect(get.status).toBe(404);
    await get.body?.cancel();
  });

  it('uncompressed (compress: false): written through the presigned path without a 413 round trip, hydrated byte-exact', async () => {
    const c = await conversation(svc);
    const sessionFile = join(dir, 'session.jsonl');
    await writeFile(sessionFile, transcript);
    const rec = recordingFetch();
    const result = await writeSnapshot({
      sessionFile,
      gatewayUrl: svc.url,
      workerToken: await c.runToken(1),
      terminalStatus: 'completed',
      runId: 1,
      compress: false,
      fetch: rec.fetch,
    });
    expect(result).toMatchObject({ status: 'written', transport: 'presigned', encoding: 'identity' });
    // The client never sent the inline POST Lambda would refuse, so it never saw a 413.
    expect(rec.calls.filter((x) => x.status === 413)).toEqual([]);
    expect(rec.calls.some((x) => x.method === 'POST' && x.bodyBytes > 2 * 1024 * 1024)).toBe(false);

    const out = join(dir, 'hydrated.jsonl');
    const hydrated = await hydrateSnapshot({ sessionFile: out, gatewayUrl: svc.url, workerToken: c.convToken });
    expect(hydrated).toMatchObject({ status: 'hydrated', runId: 1 });
    const got = await readFile(out);
    expect(got.length).toBe(Buffer.byteLength(transcript));
    expect(createHash('sha256').update(got).digest('hex')).toBe(createHash('sha256').update(transcript).digest('hex'));
  });

  it('compressed (the default): gzip keeps the event small, so it still goes direct', async () => {
    const c = await conversation(svc);
    const sessionFile = join(dir, 'session.jsonl');
    await writeFile(sessionFile, transcript);
    const result = await writeSnapshot({ sessionFile, gatewayUrl: svc.url, workerToken: await c.runToken(1), terminalStatus: 'completed', runId: 1 });
    expect(result).toMatchObject({ status: 'written', transport: 'direct', encoding: 'gzip' });
    const out = join(dir, 'hydrated.jsonl');
    await hydrateSnapshot({ sessionFile: out, gatewayUrl: svc.url, workerToken: c.convToken });
    expect((await readFile(out)).equals(Buffer.from(transcript))).toBe(true);
  });
});
