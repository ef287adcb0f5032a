#!/usr/bin/env node
/**
 * Operator CLI: `transcript-store-client hydrate|write|clear [flags]`.
 * The token comes from an environment variable (never a flag: flags end up in shell history and
 * `ps` output). Prints one JSON result on stdout; `--verbose` streams log events to stderr.
 */
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { TranscriptStoreError } from './errors.js';
import { clearSnapshots, hydrateSnapshot, writeSnapshot } from './snapshot.js';
import { type TerminalStatus, type TransportOptions } from './types.js';

const USAGE = `Usage:
  transcript-store-client hydrate --session-file <path> [options]
  transcript-store-client write   --session-file <path> --run-id <n> [--terminal-status completed] [options]
  transcript-store-client clear   [options]

Options:
  --gateway-url <url>     Gateway base URL (default: $TRANSCRIPT_STORE_URL, then $DISPATCHER_URL)
  --token-env <name>      Environment variable holding the worker token
                          (default: TRANSCRIPT_STORE_TOKEN, then WORKER_TOKEN)
  --timeout-ms <n>        Per-attempt timeout
  --retries <n>           Extra attempts on retryable failures
  --deadline-ms <n>       Overall time budget
  --direct-max-bytes <n>  write: largest file sent inline (default 4194304); larger → presigned upload
  --no-compress           write: send the bytes as they are instead of gzip
  --verbose               Log events as JSON lines on stderr
  -h, --help

Exit status: 0 success (including "no snapshot", "duplicate", "skipped"), 1 failure, 2 usage error.
`;

export interface CliIo {
  stdout: (s: string) => void;
  stderr: (s: string) => void;
  env: Record<string, string | undefined>;
}

const TERMINAL: readonly TerminalStatus[] = ['completed', 'failed', 'timeout', 'cancelled'];

function intFlag(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) throw new UsageError(`--${name} must be a non-negative integer`);
  return Number(v);
}

class UsageError extends Error {}

/** Runs the CLI; returns the exit status. Exported for tests (no process.exit inside). */
export async function runCli(argv: string[], io: CliIo): Promise<number> {
  try {
    const { positionals, values } = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        'session-file': { type: 'string' },
        'gateway-url': { type: 'string' },
        'token-env': { type: 'string' },
        'run-id': { type: 'string' },
        'terminal-status': { type: 'string' },
        'timeout-ms': { type: 'string' },
        retries: { type: 'string' },
        'deadline-ms': { type: 'string' },
        'direct-max-bytes': { type: 'string' },
        'no-compress': { type: 'boolean' },
        verbose: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
    if (values.help) {
      io.stdout(USAGE);
      return 0;
    }
    const command = positionals[0];
    if (positionals.length !== 1 || !['hydrate', 'write', 'clear'].includes(command ?? '')) {
      throw new UsageError('expected exactly one command: hydrate, write or clear');
    }
    const gatewayUrl = values['gateway-url'] ?? io.env.TRANSCRIPT_STORE_URL ?? io.env.DISPATCHER_URL;
    if (!gatewayUrl) throw new UsageError('--gateway-url (or $TRANSCRIPT_STORE_URL) is required');
    const tokenEnv = values['token-env'];
    const workerToken = tokenEnv ? io.env[tokenEnv] : (io.env.TRANSCRIPT_STORE_TOKEN ?? io.env.WORKER_TOKEN);
    if (!workerToken) {
      throw new UsageError(`no token: set ${tokenEnv ?? 'TRANSCRIPT_STORE_TOKEN (or WORKER_TOKEN)'} in the environment`);
    }
    const transport: TransportOptions = {};
    const timeoutMs = intFlag('timeout-ms', values['timeout-ms']);
    if (timeoutMs !== undefined) transport.timeoutMs = timeoutMs;
    const retries = intFlag('retries', values.retries);
    if (retries !== undefined) transport.retries = retries;
    const deadlineMs = intFlag('deadline-ms', values['deadline-ms']);
    if (deadlineMs !== undefined) transport.deadlineMs = deadlineMs;
    if (values.verbose) transport.logger = (ev) => io.stderr(`${JSON.stringify(ev)}\n`);
    const conn = { gatewayUrl, workerToken, ...transport };

    if (command === 'hydrate') {
      const sessionFile = values['session-file'];
      if (!sessionFile) throw new UsageError('hydrate needs --session-file');
      try {
        const r = await hydrateSnapshot({ ...conn, sessionFile });
        io.stdout(`${JSON.stringify({ ...r, hydrated: r.status !== 'not_found' })}\n`);
        return 0;
      } catch (e) {
        if (e instanceof TranscriptStoreError) {
          const failure = {
            status: 'failed',
            code: e.code,
            message: e.message,
            ...(e.status !== undefined ? { httpStatus: e.status } : {}),
            ...(e.serverCode !== undefined ? { serverCode: e.serverCode } : {}),
            attempts: e.attempts,
          };
          io.stdout(`${JSON.stringify(failure)}\n`);
          return e.code === 'invalid_argument' ? 2 : 1;
        }
        throw e;
      }
    }
    if (command === 'write') {
      const sessionFile = values['session-file'];
      if (!sessionFile) throw new UsageError('write needs --session-file');
      const runId = intFlag('run-id', values['run-id']);
      if (runId === undefined) throw new UsageError('write needs --run-id');
      const ts = values['terminal-status'] ?? 'completed';
      if (!TERMINAL.includes(ts as TerminalStatus)) {
        throw new UsageError(`--terminal-status must be one of ${TERMINAL.join(', ')}`);
      }
      const directMaxBytes = intFlag('direct-max-bytes', values['direct-max-bytes']);
      const r = await writeSnapshot({
        ...conn,
        sessionFile,
        runId,
        terminalStatus: ts as TerminalStatus,
        ...(directMaxBytes !== undefined ? { directMaxBytes } : {}),
        ...(values['no-compress'] ? { compress: false } : {}),
      });
      io.stdout(`${JSON.stringify(r)}\n`);
      return r.status === 'failed' ? (r.reason === 'invalid_argument' ? 2 : 1) : 0;
    }
    const r = await clearSnapshots(conn);
    io.stdout(`${JSON.stringify(r)}\n`);
    return r.status === 'failed' ? (r.reason === 'invalid_argument' ? 2 : 1) : 0;
  } catch (e) {
    if (e instanceof UsageError || (e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      io.stderr(`error: ${(e as Error).message}\n\n${USAGE}`);
      return 2;
    }
    io.stderr(`error: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
}

function isMain(): boolean {
  const entry = process.argv[1];
  if (!entry) return false;
  try {
    return realpathSync(entry) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isMain()) {
  runCli(process.argv.slice(2), {
    stdout: (s) => process.stdout.write(s),
    stderr: (s) => process.stderr.write(s),
    env: process.env,
  }).then((code) => {
    process.exitCode = code;
  });
}
