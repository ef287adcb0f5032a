/**
 * `npm run bench:hydrate-cost [-- --rounds N]`
 *
 * What a hydrate costs as a function of the DECODED size of the snapshot: the service verifies the stored
 * bytes against the sha256 of the stored (compressed) bytes, so a 400 KB gzip object that decodes to 400 MiB
 * must cost about what a small one does. Writes a 1.3 KB snapshot and a 400 MiB-decoded one (highly
 * compressible, uploaded gzip through the presigned path), then GETs each `rounds` times alternately with
 * `Accept-Encoding: gzip` (as the worker-client sends) and prints the p50 of each and their ratio.
 * Last line: `bench:hydrate-cost: small_p50_ms=… large_p50_ms=… ratio=… stored_kib=… decoded_mib=400`.
 */
import { Agent, request } from 'node:http';
import { createGzip } from 'node:zlib';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { SNAPSHOT_PATH, UPLOADS_PATH } from '../functions/lib/contract.js';
import { startLocalService } from '../local/service.js';

process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';
process.env['POWERTOOLS_LOG_LEVEL'] ??= 'SILENT';

const i = process.argv.indexOf('--rounds');
const rounds = i >= 0 ? Number(process.argv[i + 1]) : 30;
if (!Number.isInteger(rounds) || rounds < 5) throw new Error('--rounds must be an integer >= 5');

const DECODED_MIB = 400;
const svc = await startLocalService({});
try {
  const url = `${svc.url}${SNAPSHOT_PATH}`;
  const token = (conv: string, runId?: number) => svc.mintToken({ org: 'bench', agent: 'hydrate-cost', conv, ...(runId !== undefined && { runId }) });

  // Small: the worker-client's typical direct POST.
  const small = Buffer.from(`${JSON.stringify({ type: 'message', text: 'x'.repeat(1200) })}\n`);
  const posted = await fetch(url, {
    method: 'POST',
    headers: { authorization: `Bearer ${await token('small', 1)}`, 'content-type': 'application/json' },
    body: JSON.stringify({ terminalStatus: 'completed', snapshotJsonl: small.toString(), runId: 1 }),
  });
  if (posted.status !== 200) throw new Error(`small write: ${posted.status} ${await posted.text()}`);

  // Large: 400 MiB of one repeated line, gzip (≈ 1000:1), through the presigned upload.
  const line = Buffer.from(`${JSON.stringify({ type: 'message', text: 'y'.repeat(90) })}\n`);
  const copies = Math.ceil((DECODED_MIB * 1024 * 1024) / line.length);
  const chunk = Buffer.concat(Array.from({ length: 1024 }, () => line));
  const gz = await buffer(
    Readable.from(
      (function* () {
        for (let n = 0; n < copies; n += 1024) yield n + 1024 <= copies ? chunk : chunk.subarray(0, (copies - n) * line.length);
      })(),
    ).pipe(createGzip({ level: 9 })),
  );
  const runToken = await token('large', 1);
  const created = await fetch(`${svc.url}${UPLOADS_PATH}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${runToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ runId: 1, bytes: gz.length, contentEncoding: 'gzip' }),
  });
  const ticket = (await created.json()) as { uploadId: string; url: string };
  if ((await fetch(ticket.url, { method: 'PUT', body: gz })).status !== 200) throw new Error('upload PUT failed');
  const committed = await fetch(url, {
    method: 'POST',
    headers: { authorization: `Bearer ${runToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ terminalStatus: 'completed', runId: 1, uploadId: ticket.uploadId }),
  });
  if (committed.status !== 200) throw new Error(`large commit: ${committed.status} ${await committed.text()}`);

  // node:http, not fetch: fetch would inflate the 400 MiB on the client and time that instead of the service.
  const agent = new Agent({ keepAlive: true });
  const get = async (conv: string): Promise<number> => {
    const auth = `Bearer ${await token(conv)}`;
    const t0 = performance.now();
    const status = await new Promise<number>((resolve, reject) => {
      request(url, { agent, headers: { authorization: auth, 'accept-encoding': 'gzip' } }, (res) => {
        res.on('data', () => {});
        res.on('end', () => resolve(res.statusCode ?? 0));
        res.on('error', reject);
      })
        .on('error', reject)
        .end();
    });
    if (status !== 200) throw new Error(`GET ${conv}: ${status}`);
    return performance.now() - t0;
  };
  for (let w = 0; w < 3; w++) await Promise.all([get('small'), get('large')]); // warm-up
  const samples = { small: [] as number[], large: [] as number[] };
  for (let r = 0; r < rounds; r++) {
    samples.small.push(await get('small'));
    samples.large.push(await get('large'));
  }
  const p50 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const s = p50(samples.small);
  const l = p50(samples.large);
  process.stdout.write(`rounds=${rounds}, large snapshot: ${DECODED_MIB} MiB decoded, ${(gz.length / 1024).toFixed(0)} KiB stored gzip\n`);
  process.stdout.write(
    `bench:hydrate-cost: small_p50_ms=${s.toFixed(2)} large_p50_ms=${l.toFixed(2)} ratio=${(l / s).toFixed(2)} stored_kib=${(gz.length / 1024).toFixed(0)} decoded_mib=${DECODED_MIB}\n`,
  );
  agent.destroy();
} finally {
  await svc.stop();
}
