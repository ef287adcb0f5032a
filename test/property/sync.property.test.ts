/**
 * Incremental sync as a property (issue 12): random sequences of pod operations on one conversation,
 * through the real worker-client against the real local service. Pods append lines (unicode, CRLF,
 * empty lines) and write, rewrite their file (truncate, replace: compaction / provider reset) and
 * write, hydrate, or clear the conversation.
 *
 * Model: the latest content is the content of the highest completed run the service acknowledged
 * (`written`) since the last clear. Every hydrate must leave the pod's file byte-identical to it.
 */
import fc from 'fast-check';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { LocalService } from '../../local/service.js';
import { clearSnapshots, hydrateSnapshot, writeSnapshot } from '../../worker-client/src/index.js';
import { conversation, FAST, tempDir, useServiceAndTempDir } from '../worker-client/support.js';

let svc: LocalService;
useServiceAndTempDir(
  (s) => (svc = s),
  () => {},
);

const lineText = fc.oneof(
  fc.constant(''),
  fc.string({ unit: 'grapheme', maxLength: 24 }).map((s) => s.replace(/[\r\n]/g, ' ')),
  fc.constantFrom('{"role":"user","text":"héllo 🚀"}', '{"a":"\\u0000 \\" quoted"}', 'ü'.repeat(40), '\t', ' '),
);
const line = fc.tuple(lineText, fc.constantFrom('\n', '\r\n')).map(([t, eol]) => t + eol);
const lines = fc.array(line, { minLength: 1, maxLength: 5 }).map((ls) => ls.join(''));

type Op =
  | { kind: 'append'; pod: number; text: string }
  | { kind: 'truncate'; pod: number; keepLines: number }
  | { kind: 'replace'; pod: number; text: string }
  | { kind: 'hydrate'; pod: number }
  | { kind: 'clear' };

function opArb(pods: number): fc.Arbitrary<Op> {
  const pod = fc.integer({ min: 0, max: pods - 1 });
  return fc.oneof(
    { weight: 4, arbitrary: fc.record({ kind: fc.constant('append' as const), pod, text: lines }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('truncate' as const), pod, keepLines: fc.integer({ min: 0, max: 6 }) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('replace' as const), pod, text: lines }) },
    { weight: 4, arbitrary: fc.record({ kind: fc.constant('hydrate' as const), pod }) },
    { weight: 1, arbitrary: fc.constant({ kind: 'clear' as const }) },
  );
}

const scenario = fc.integer({ min: 2, max: 3 }).chain((pods) => fc.record({ pods: fc.constant(pods), ops: fc.array(opArb(pods), { minLength: 1, maxLength: 12 }) }));

/** Keeps the first `n` lines (line ends included), never cutting a UTF-8 sequence. */
function firstLines(content: string, n: number): string {
  let end = 0;
  for (let i = 0; i < n; i++) {
    const next = content.indexOf('\n', end);
    if (next < 0) return content;
    end = next + 1;
  }
  return content.slice(0, end);
}

const stats = { appendWrites: 0, directWrites: 0, deltaHydrates: 0, hydrates: 0, fenced: 0, runs: 0 };

async function readOrUndefined(file: string): Promise<Buffer | undefined> {
  try {
    return await readFile(file);
  } catch {
    return undefined;
  }
}

describe('incremental sync property (worker-client ↔ local service)', () => {
  it('every hydrate leaves the pod file byte-identical to the latest acknowledged completed run', async () => {
    await fc.assert(
      fc.asyncProperty(scenario, async ({ pods, ops }) => {
        stats.runs++;
        const c = await conversation(svc);
        const { dir, cleanup } = await tempDir();
        try {
          const files = Array.from({ length: pods }, (_, i) => join(dir, `pod-${i}`, 'session.jsonl'));
          for (const f of files) await mkdir(join(f, '..'), { recursive: true });
          const local: string[] = Array<string>(pods).fill('');
          let model: string | undefined;
          let nextRun = 1;
          const conn = { gatewayUrl: svc.url, ...FAST };

          const writeFrom = async (pod: number) => {
            await writeFile(files[pod]!, local[pod]!);
            const runId = nextRun++;
            const w = await writeSnapshot({ ...conn, sessionFile: files[pod]!, workerToken: await c.runToken(runId), runId, terminalStatus: 'completed' });
            if (w.status === 'written') {
              model = local[pod];
              if (w.transport === 'append') stats.appendWrites++;
              else stats.directWrites++;
              expect(w.bytes).toBe(Buffer.byteLength(local[pod]!, 'utf8'));
            } else if (w.status === 'skipped') {
              if (w.reason === 'reset') stats.fenced++;
              else expect(w.reason === 'empty_file' && local[pod] === '', `skipped ${w.reason}`).toBe(true);
            } else {
              throw new Error(`write of run ${runId} by pod ${pod}: ${JSON.stringify(w)}`);
            }
          };

          for (const op of ops) {
            switch (op.kind) {
              case 'append':
                local[op.pod] += op.text;
                await writeFrom(op.pod);
                break;
              case 'truncate':
                local[op.pod] = firstLines(local[op.pod]!, op.keepLines);
                await writeFrom(op.pod);
                break;
              case 'replace':
                local[op.pod] = op.text;
                await writeFrom(op.pod);
                break;
              case 'hydrate': {
                const file = files[op.pod]!;
                const before = await readOrUndefined(file);
                const h = await hydrateSnapshot({ ...conn, sessionFile: file, workerToken: c.convToken });
                stats.hydrates++;
                if (model === undefined) {
                  expect(h.status, JSON.stringify(h)).toBe('not_found');
                  // Nothing to hydrate: the file is left as it was.
                  const after = await readOrUndefined(file);
                  expect(after === undefined ? undefined : after.toString('utf8')).toBe(before === undefined ? undefined : before.toString('utf8'));
                } else {
                  expect(['hydrated', 'not_modified'], JSON.stringify(h)).toContain(h.status);
                  if (h.status === 'hydrated' && h.delta && h.delta.appendedBytes > 0) stats.deltaHydrates++;
                  const got = await readFile(file);
                  expect(got.toString('hex'), `pod ${op.pod} after hydrate`).toBe(Buffer.from(model, 'utf8').toString('hex'));
                  local[op.pod] = model;
                }
                break;
              }
              case 'clear': {
                const r = await clearSnapshots({ ...conn, workerToken: c.convToken });
                expect(r.status, JSON.stringify(r)).toBe('cleared');
                model = undefined;
                break;
              }
            }
          }
          // Finally every pod hydrates to the model.
          for (let p = 0; p < pods; p++) {
            const h = await hydrateSnapshot({ ...conn, sessionFile: files[p]!, workerToken: c.convToken });
            if (model === undefined) expect(h.status).toBe('not_found');
            else expect((await readFile(files[p]!)).toString('hex'), `pod ${p} at the end`).toBe(Buffer.from(model, 'utf8').toString('hex'));
          }
        } finally {
          await cleanup();
        }
      }),
      { numRuns: Number(process.env["SYNC_RUNS"] ?? 15), endOnFailure: true },
    );
    // The property exercised the incremental paths, not only full writes and full hydrates.
    expect(stats.appendWrites, JSON.stringify(stats)).toBeGreaterThan(0);
    expect(stats.hydrates).toBeGreaterThan(0);
  }, 240_000);
});
