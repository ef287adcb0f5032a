/**
 * The operator CLI as a person meets it: `--version`, help per command, usage errors that show only the
 * usage concerned, the one documented base-URL name (and its precedence), errors that name the host and
 * the errno, the hint when `write` gets a conversation token, and progress lines only on a terminal.
 * Also `onProgress`, the library hook the progress lines are drawn from. The CLI runs in-process
 * (`runCli` with injected stdout/stderr/env/TTY); no assertion depends on timing.
 */
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { LocalService } from '../../local/service.js';
import { runCli } from '../../worker-client/src/cli.js';
import { hydrateSnapshot, type TransferProgress, writeSnapshot } from '../../worker-client/src/index.js';
import { conversation, FAST, fakeGateway, useServiceAndTempDir } from './support.js';

const ROOT = resolve(import.meta.dirname, '../..');
const MiB = 1024 * 1024;

let svc: LocalService;
let dir: string;
useServiceAndTempDir(
  (s) => (svc = s),
  (d) => (dir = d),
);

interface Ran {
  code: number;
  out: string;
  err: string;
}

async function cli(argv: string[], env: Record<string, string | undefined> = {}, stderrIsTTY = false): Promise<Ran> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(argv, { stdout: (s) => out.push(s), stderr: (s) => err.push(s), env, stderrIsTTY });
  return { code, out: out.join(''), err: err.join('') };
}

/** A local port with nothing listening on it (bound, then released). */
async function closedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** `n` bytes of JSONL that gzip cannot shrink much (random hex: about 2:1). */
function bulkyJsonl(n: number): string {
  const line = () => `{"r":"${randomBytes(48).toString('hex')}"}\n`;
  let s = '';
  while (s.length < n) s += line();
  return s.slice(0, n - 1) + '\n';
}

describe('version and help', () => {
  it('--version prints the package version, alone or after a command', async () => {
    const { version } = JSON.parse(await readFile(join(ROOT, 'worker-client/package.json'), 'utf8')) as { version: string };
    expect(await cli(['--version'])).toEqual({ code: 0, out: `${version}\n`, err: '' });
    expect(await cli(['write', '--version'])).toEqual({ code: 0, out: `${version}\n`, err: '' });
  });

  it('--help lists the commands; `<command> --help` and `help <command>` show that command only', async () => {
    const general = await cli(['--help']);
    expect(general.code).toBe(0);
    expect(general.out).toMatch(/Commands:\n\s+hydrate[\s\S]+write[\s\S]+clear/);
    expect(general.out).toContain('<command> --help');

    const write = await cli(['write', '--help']);
    expect(write.code).toBe(0);
    expect(write.out).toMatch(/^Usage: transcript-store-client write --session-file <path> --run-id <n>/);
    expect(write.out).toContain('--direct-max-bytes');
    expect(write.out).toContain('TRANSCRIPT_STORE_URL');
    expect(write.out).not.toMatch(/Usage: transcript-store-client (hydrate|clear)/);

    const hydrate = await cli(['help', 'hydrate']);
    expect(hydrate.out).toMatch(/^Usage: transcript-store-client hydrate/);
    expect(hydrate.out).not.toContain('--run-id');
    const clear = await cli(['clear', '-h']);
    expect(clear.out).toMatch(/^Usage: transcript-store-client clear/);
    expect(clear.out).not.toContain('--session-file');
  });
});

describe('usage errors (exit 2, nothing sent)', () => {
  // No base URL or token in the environment: a usage error must be found before either is looked for.
  const cases: { argv: string[]; message: string; usage: RegExp }[] = [
    { argv: ['write', '--session-file', 'f'], message: 'write needs --run-id', usage: /^Usage: transcript-store-client write /m },
    { argv: ['write', '--session-file', 'f', '--run-id', 'x'], message: '--run-id must be a non-negative integer', usage: /^Usage: transcript-store-client write /m },
    { argv: ['hydrate', '--session-file', 'f', '--run-id', '3'], message: 'hydrate does not take --run-id', usage: /^Usage: transcript-store-client hydrate /m },
    { argv: ['clear', '--no-compress'], message: 'clear does not take --no-compress', usage: /^Usage: transcript-store-client clear /m },
    { argv: ['hydrate', '--sesion-file', 'f'], message: 'unknown option --sesion-file', usage: /^Usage: transcript-store-client hydrate /m },
    { argv: ['hydrate', '--token', 'x'], message: 'the token is read from the environment only', usage: /^Usage: transcript-store-client hydrate /m },
    { argv: ['hydrate', 'extra', '--session-file', 'f'], message: 'unexpected argument "extra"', usage: /^Usage: transcript-store-client hydrate /m },
    { argv: ['purge'], message: 'unknown command "purge"', usage: /^Usage: transcript-store-client <command>/m },
    { argv: [], message: 'no command given', usage: /^Usage: transcript-store-client <command>/m },
    { argv: ['clear', '--quiet', '--verbose'], message: '--quiet and --verbose exclude each other', usage: /^Usage: transcript-store-client clear /m },
  ];
  it.each(cases)('$argv → $message, with only the relevant usage', async ({ argv, message, usage }) => {
    const r = await cli(argv);
    expect(r.code).toBe(2);
    expect(r.out).toBe('');
    expect(r.err).toMatch(/^error: /);
    expect(r.err).toContain(message);
    expect(r.err).toMatch(usage);
    expect(r.err.match(/^Usage: /gm)).toHaveLength(1);
  });
});

describe('base URL: --gateway-url, then $TRANSCRIPT_STORE_URL, then $DISPATCHER_URL; nothing else', () => {
  it('takes the first one set (the others point at a closed port)', async () => {
    const c = await conversation(svc);
    const dead = `http://127.0.0.1:${await closedPort()}`;
    const base = { TRANSCRIPT_STORE_TOKEN: c.convToken, BASE_URL: dead };
    const viaFlag = await cli(['clear', '--gateway-url', svc.url, '--retries', '0'], { ...base, TRANSCRIPT_STORE_URL: dead, DISPATCHER_URL: dead });
    const viaDocumented = await cli(['clear', '--retries', '0'], { ...base, TRANSCRIPT_STORE_URL: svc.url, DISPATCHER_URL: dead });
    const viaDropIn = await cli(['clear', '--retries', '0'], { ...base, TRANSCRIPT_STORE_URL: '', DISPATCHER_URL: svc.url });
    for (const r of [viaFlag, viaDocumented, viaDropIn]) {
      expect(r.code).toBe(0);
      expect(JSON.parse(r.out)).toMatchObject({ status: 'cleared' });
    }
  });

  it('does not read BASE_URL, and says so', async () => {
    const c = await conversation(svc);
    const r = await cli(['clear'], { TRANSCRIPT_STORE_TOKEN: c.convToken, BASE_URL: svc.url });
    expect(r.code).toBe(2);
    expect(r.err).toContain('no base URL: pass --gateway-url or set TRANSCRIPT_STORE_URL');
    expect(r.err).toContain('BASE_URL is set but not read');
  });
});

describe('errors name the host and the errno', () => {
  it('a refused connection: host:port and ECONNREFUSED in the JSON result and on stderr, for each command', async () => {
    const port = await closedPort();
    const env = { TRANSCRIPT_STORE_TOKEN: 'a.b.c', TRANSCRIPT_STORE_URL: `http://127.0.0.1:${port}` };
    const file = join(dir, 's.jsonl');
    await writeFile(file, '{"a":1}\n');
    for (const argv of [['hydrate', '--session-file', file], ['write', '--session-file', file, '--run-id', '1'], ['clear']]) {
      const r = await cli([...argv, '--retries', '0'], env);
      expect(r.code, argv[0]).toBe(1);
      const result = JSON.parse(r.out) as { status: string; message: string };
      expect(result.status).toBe('failed');
      expect(result.message).toContain(`network error talking to 127.0.0.1:${port}: ECONNREFUSED (connect)`);
      expect(r.err).toBe(`error: ${result.message}\n`);
      expect(r.out + r.err).not.toContain('a.b.c');
    }
  });

  it('after a 307, names the storage host it was talking to, not the gateway', async () => {
    const storagePort = await closedPort();
    const gw = await fakeGateway((_req, res) => {
      res.writeHead(307, { location: `http://127.0.0.1:${storagePort}/bucket/key?X-Amz-Signature=secret` });
      res.end();
    });
    try {
      const r = await cli(['hydrate', '--session-file', join(dir, 'h.jsonl'), '--retries', '0'], { TRANSCRIPT_STORE_TOKEN: 't', TRANSCRIPT_STORE_URL: gw.url });
      expect(r.code).toBe(1);
      const { message } = JSON.parse(r.out) as { message: string };
      expect(message).toBe(`hydrate failed: network error talking to 127.0.0.1:${storagePort}: ECONNREFUSED (connect)`);
      expect(r.err).not.toContain('secret');
    } finally {
      await gw.close();
    }
  });

  it('an unresolvable host: the host and ENOTFOUND (or the resolver errno of this machine)', async () => {
    const r = await cli(['clear', '--retries', '0'], { TRANSCRIPT_STORE_TOKEN: 't', TRANSCRIPT_STORE_URL: 'http://no-such-host.invalid:8787' });
    expect(r.code).toBe(1);
    expect((JSON.parse(r.out) as { message: string }).message).toMatch(/network error talking to no-such-host\.invalid:8787: E[A-Z_]+ \(getaddrinfo\)$/);
  });
});

describe('write with the wrong kind of token', () => {
  it('a conversation token: 403 run_out_of_scope, and a hint that says it is a conversation token', async () => {
    const c = await conversation(svc);
    const file = join(dir, 's.jsonl');
    await writeFile(file, '{"a":1}\n');
    const r = await cli(['write', '--session-file', file, '--run-id', '7'], { TRANSCRIPT_STORE_TOKEN: c.convToken, TRANSCRIPT_STORE_URL: svc.url });
    expect(r.code).toBe(1);
    const result = JSON.parse(r.out) as Record<string, unknown>;
    expect(result).toMatchObject({ status: 'failed', reason: 'forbidden', httpStatus: 403, serverCode: 'run_out_of_scope', attempts: 1 });
    expect(result.hint).toBe('this is a conversation token (no runId claim); write needs the per-run token issued for run 7');
    expect(r.err).toBe(`error: ${result.message as string}\nhint: ${result.hint as string}\n`);
    expect(r.out + r.err).not.toContain(c.convToken);
  });

  it("another run's token: the hint names both runs; --quiet keeps stderr empty but the JSON keeps the hint", async () => {
    const c = await conversation(svc);
    const file = join(dir, 's.jsonl');
    await writeFile(file, '{"a":1}\n');
    const r = await cli(['write', '--session-file', file, '--run-id', '6', '--quiet'], { TRANSCRIPT_STORE_TOKEN: await c.runToken(5), TRANSCRIPT_STORE_URL: svc.url });
    expect(r.code).toBe(1);
    expect(JSON.parse(r.out)).toMatchObject({ serverCode: 'run_out_of_scope', hint: 'this token is for run 5, not run 6: pass --run-id 5 or the token of run 6' });
    expect(r.err).toBe('');
  });

  it('a failure with nothing to hint about gets no hint', async () => {
    const r = await cli(['write', '--session-file', join(dir, 'x.jsonl'), '--run-id', '1'], { TRANSCRIPT_STORE_TOKEN: 'not-a-jwt', TRANSCRIPT_STORE_URL: svc.url });
    expect(r.code).toBe(0); // missing file: skipped, nothing sent
    await writeFile(join(dir, 'x.jsonl'), 'x\n');
    const f = await cli(['write', '--session-file', join(dir, 'x.jsonl'), '--run-id', '1'], { TRANSCRIPT_STORE_TOKEN: 'not-a-jwt', TRANSCRIPT_STORE_URL: svc.url });
    expect(f.code).toBe(1);
    expect(JSON.parse(f.out)).toMatchObject({ httpStatus: 401, serverCode: 'invalid_token' });
    expect(JSON.parse(f.out).hint).toBeUndefined();
    expect(f.err).not.toContain('hint:');
  });
});

describe('progress', () => {
  /** Draws of the progress lines: the text of every `\r…` redraw, per line. */
  function draws(err: string): string[] {
    return [...err.matchAll(/\r([^\r\n\x1b]*)\x1b\[K/g)].map((m) => m[1]!);
  }

  it('on a terminal: per-phase lines for a large presigned write and its hydrate, redrawn in place up to 100%', async () => {
    const c = await conversation(svc);
    const src = join(dir, 'big.jsonl');
    const content = bulkyJsonl(3 * MiB);
    await writeFile(src, content);
    const env = { TRANSCRIPT_STORE_TOKEN: await c.runToken(1), TRANSCRIPT_STORE_URL: svc.url };
    const w = await cli(['write', '--session-file', src, '--run-id', '1', '--direct-max-bytes', '1000'], env, true);
    expect(w.code).toBe(0);
    const written = JSON.parse(w.out) as { status: string; transport: string; wireBytes: number };
    expect(written).toMatchObject({ status: 'written', transport: 'presigned' });
    const lines = draws(w.err);
    const prepare = lines.filter((l) => l.startsWith('write: preparing '));
    const upload = lines.filter((l) => l.startsWith('write: uploading '));
    expect(prepare.at(-1)).toBe('write: preparing 3.0 MiB / 3.0 MiB (100%)');
    expect(upload.at(-1)).toMatch(/^write: uploading \d+\.\d MiB \/ \d+\.\d MiB \(100%\)$/);
    // At most one redraw per percent, in order, and each phase's line ends before the next begins.
    expect(prepare.length).toBeLessThanOrEqual(101);
    expect(lines).toEqual([...prepare, ...upload]);
    expect(w.err.split('\n').filter((l) => l.length > 0)).toHaveLength(2);
    expect(w.err.endsWith('\n')).toBe(true);

    const dst = join(dir, 'copy.jsonl');
    const h = await cli(['hydrate', '--session-file', dst], { ...env, TRANSCRIPT_STORE_TOKEN: c.convToken }, true);
    expect(h.code).toBe(0);
    expect(await readFile(dst, 'utf8')).toBe(content);
    const got = draws(h.err);
    expect(got.length).toBeGreaterThan(0);
    expect(got.every((l) => /^hydrate: downloading \d+\.\d MiB( \/ 3\.0 MiB \(\d+%\))?$/.test(l))).toBe(true);
    expect(got.at(-1)).toMatch(/^hydrate: downloading 3\.0 MiB/);
  });

  it('nothing when stderr is not a terminal, with --quiet, or for a small transfer', async () => {
    const c = await conversation(svc);
    const src = join(dir, 'big.jsonl');
    await writeFile(src, bulkyJsonl(2 * MiB));
    const env = { TRANSCRIPT_STORE_TOKEN: await c.runToken(1), TRANSCRIPT_STORE_URL: svc.url };
    const notTty = await cli(['write', '--session-file', src, '--run-id', '1', '--direct-max-bytes', '1000'], env, false);
    expect(notTty).toMatchObject({ code: 0, err: '' });
    const quiet = await cli(['hydrate', '--session-file', join(dir, 'q.jsonl'), '--quiet'], { ...env, TRANSCRIPT_STORE_TOKEN: c.convToken }, true);
    expect(quiet).toMatchObject({ code: 0, err: '' });
    expect(JSON.parse(quiet.out)).toMatchObject({ status: 'hydrated', bytes: 2 * MiB });
    const small = join(dir, 'small.jsonl');
    await writeFile(small, bulkyJsonl(64 * 1024));
    const s = await cli(['write', '--session-file', small, '--run-id', '2', '--direct-max-bytes', '1000'], { ...env, TRANSCRIPT_STORE_TOKEN: await c.runToken(2) }, true);
    expect(s).toMatchObject({ code: 0, err: '' });
  });
});

describe('onProgress (library)', () => {
  it('reports each phase up to its total, and a throwing callback changes nothing', async () => {
    const c = await conversation(svc);
    const src = join(dir, 'big.jsonl');
    await writeFile(src, bulkyJsonl(2 * MiB));
    const seen: TransferProgress[] = [];
    const w = await writeSnapshot({
      ...FAST,
      gatewayUrl: svc.url,
      workerToken: await c.runToken(1),
      sessionFile: src,
      runId: 1,
      terminalStatus: 'completed',
      directMaxBytes: 1000,
      onProgress: (p) => {
        seen.push(p);
        throw new Error('a broken progress display');
      },
    });
    expect(w).toMatchObject({ status: 'written', transport: 'presigned' });
    if (w.status !== 'written') throw new Error('unreachable');
    const prepare = seen.filter((p) => p.phase === 'prepare');
    const upload = seen.filter((p) => p.phase === 'upload');
    expect(seen.every((p) => p.op === 'write')).toBe(true);
    expect(prepare.at(-1)).toEqual({ op: 'write', phase: 'prepare', bytes: 2 * MiB, totalBytes: 2 * MiB });
    expect(upload.at(-1)).toEqual({ op: 'write', phase: 'upload', bytes: w.wireBytes, totalBytes: w.wireBytes });
    expect(seen.indexOf(upload[0]!)).toBeGreaterThan(seen.indexOf(prepare.at(-1)!));
    for (const phase of [prepare, upload]) {
      for (let i = 1; i < phase.length; i++) expect(phase[i]!.bytes).toBeGreaterThanOrEqual(phase[i - 1]!.bytes);
    }

    const down: TransferProgress[] = [];
    const h = await hydrateSnapshot({ ...FAST, gatewayUrl: svc.url, workerToken: c.convToken, sessionFile: join(dir, 'copy.jsonl'), onProgress: (p) => down.push(p) });
    expect(h).toMatchObject({ status: 'hydrated', bytes: 2 * MiB });
    expect(down.every((p) => p.op === 'hydrate' && p.phase === 'download')).toBe(true);
    expect(down[0]!.bytes).toBe(0);
    expect(down.at(-1)!.bytes).toBe(2 * MiB);
  });

  it('a PUT that is retried takes its count back: the upload never counts past its total', async () => {
    const src = join(dir, 'big.jsonl');
    await writeFile(src, bulkyJsonl(256 * 1024));
    let puts = 0;
    const gw = await fakeGateway((req, res, body) => {
      if (req.method === 'POST' && req.url === '/worker/transcript/snapshot/uploads') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ uploadId: 'u1', url: `${gw.url}/storage/obj?sig=1`, encoding: 'gzip', expiresAt: '2099-01-01T00:00:00Z' }));
      } else if (req.method === 'PUT') {
        puts++;
        res.writeHead(puts === 1 ? 503 : 200, { etag: '"e"' });
        res.end();
      } else if (req.method === 'POST') {
        const { runId } = JSON.parse(body) as { runId: number };
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ id: runId, runId, latest: true }));
      } else {
        res.writeHead(404);
        res.end();
      }
    });
    try {
      const seen: TransferProgress[] = [];
      const w = await writeSnapshot({
        ...FAST,
        gatewayUrl: gw.url,
        workerToken: 't',
        sessionFile: src,
        runId: 3,
        terminalStatus: 'completed',
        directMaxBytes: 1000,
        onProgress: (p) => seen.push(p),
      });
      expect(w).toMatchObject({ status: 'written', transport: 'presigned' });
      if (w.status !== 'written') throw new Error('unreachable');
      expect(puts).toBe(2);
      const upload = seen.filter((p) => p.phase === 'upload').map((p) => p.bytes);
      expect(Math.max(...upload)).toBe(w.wireBytes);
      expect(upload.at(-1)).toBe(w.wireBytes);
      // The second attempt started again from 0 (the count went down once, then back up to the total).
      const drops = upload.filter((b, i) => i > 0 && b < upload[i - 1]!);
      expect(drops.length).toBe(1);
    } finally {
      await gw.close();
    }
  });
});
