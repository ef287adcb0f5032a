#!/usr/bin/env node
/**
 * Operator CLI: `transcript-store-client hydrate|write|clear [options]`, `--version`, `<command> --help`.
 *
 * - Prints one JSON result on stdout (exit 0 success, 1 failure, 2 usage error).
 * - The token comes from an environment variable, never a flag (flags end up in shell history and `ps`).
 * - The base URL: `--gateway-url`, else `$TRANSCRIPT_STORE_URL` (the documented name), else
 *   `$DISPATCHER_URL` (the name existing workers already have). Nothing else is read (not `BASE_URL`:
 *   too generic a name to send a token to whatever it happens to point at).
 * - stderr: usage errors with the usage of the command concerned; on failure a one-line `error:` and,
 *   where one applies, a `hint:`; progress lines for long transfers when stderr is a terminal. `--quiet`
 *   leaves only usage errors there; `--verbose` adds the client's log events as JSON lines.
 */
import { readFileSync, realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { TranscriptStoreError } from './errors.js';
import { clearSnapshots, hydrateSnapshot, writeSnapshot } from './snapshot.js';
import { type TerminalStatus, type TransferProgress, type TransportOptions } from './types.js';

const BIN = 'transcript-store-client';

type Command = 'hydrate' | 'write' | 'clear';
const COMMANDS: readonly Command[] = ['hydrate', 'write', 'clear'];

/** Options every command takes (connection, output). */
const COMMON_OPTIONS = ['gateway-url', 'token-env', 'timeout-ms', 'retries', 'deadline-ms', 'verbose', 'quiet', 'help', 'version'];
/** Options each command takes besides the common ones. */
const COMMAND_OPTIONS: Record<Command, readonly string[]> = {
  hydrate: ['session-file'],
  write: ['session-file', 'run-id', 'terminal-status', 'direct-max-bytes', 'no-compress'],
  clear: [],
};

const PARSE_OPTIONS = {
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
  quiet: { type: 'boolean', short: 'q' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean' },
} as const;

const COMMON_HELP = `Connection:
  --gateway-url <url>     Base URL of the service (default: $TRANSCRIPT_STORE_URL, then $DISPATCHER_URL)
  --token-env <name>      Environment variable holding the token
                          (default: TRANSCRIPT_STORE_TOKEN, then WORKER_TOKEN; never a flag)
  --timeout-ms <n>        Per-attempt timeout
  --retries <n>           Extra attempts on retryable failures (default 4)
  --deadline-ms <n>       Overall time budget, retries included
Output:
  -q, --quiet             Nothing on stderr but usage errors (no progress, error or hint lines)
  --verbose               Also the client's log events, as JSON lines on stderr
  -h, --help              This help

One JSON result on stdout. Exit status: 0 success, 1 failure, 2 usage error.`;

const GENERAL_USAGE = `Usage: ${BIN} <command> [options]

Commands:
  hydrate   Download the conversation's latest completed snapshot into a session file
  write     Upload a session file as the snapshot of a completed run
  clear     Delete the conversation's snapshots (session reset)

Run \`${BIN} <command> --help\` for a command's options.
  --version               Print the version
  -h, --help              This help
`;

const COMMAND_USAGE: Record<Command, string> = {
  hydrate: `Usage: ${BIN} hydrate --session-file <path> [options]

Replaces <path> with the conversation's latest completed snapshot (atomically; a failure leaves it as
it was). Exit 0 also when there is no snapshot ("status":"not_found"). Token: conversation or per-run.

  --session-file <path>   The session.jsonl to replace (parent directories are created)
${COMMON_HELP}
`,
  write: `Usage: ${BIN} write --session-file <path> --run-id <n> [options]

Uploads <path> as the snapshot of run <n>. Needs the per-run token of run <n> (its runId claim is <n>);
a conversation token is refused (403 run_out_of_scope). Exit 0 also for "duplicate" and "skipped".

  --session-file <path>   The session.jsonl to upload
  --run-id <n>            The run this snapshot belongs to
  --terminal-status <s>   completed (default), failed, timeout or cancelled (only completed is sent)
  --direct-max-bytes <n>  Largest file sent inline (default 4194304); larger files go presigned
  --no-compress           Send the bytes as they are instead of gzip
${COMMON_HELP}
`,
  clear: `Usage: ${BIN} clear [options]

Deletes every snapshot of the token's conversation (idempotent). Token: conversation or per-run.

${COMMON_HELP}
`,
};

/** Where the CLI writes, what it reads from the environment, and whether stderr is a terminal. */
export interface CliIo {
  stdout: (s: string) => void;
  stderr: (s: string) => void;
  env: Record<string, string | undefined>;
  /** Whether stderr is a terminal: progress lines are drawn only then. Default false. */
  stderrIsTTY?: boolean;
}

const TERMINAL: readonly TerminalStatus[] = ['completed', 'failed', 'timeout', 'cancelled'];

/** A mistake in the command line: exit 2, with the usage of `command` (or the general usage). */
class UsageError extends Error {
  constructor(
    message: string,
    readonly command: Command | undefined,
  ) {
    super(message);
  }
}

function intFlag(name: string, v: string | undefined, command: Command): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) throw new UsageError(`--${name} must be a non-negative integer`, command);
  return Number(v);
}

function isCommand(s: string | undefined): s is Command {
  return (COMMANDS as readonly string[]).includes(s ?? '');
}

/** The package version, from the package.json next to src/ or dist/. */
export function cliVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version?: unknown };
  return typeof pkg.version === 'string' ? pkg.version : 'unknown';
}

/** Best-effort command of an argv that did not parse, to show that command's usage with the error. */
function guessCommand(argv: string[]): Command | undefined {
  try {
    const { positionals } = parseArgs({ args: argv, allowPositionals: true, strict: false, options: PARSE_OPTIONS });
    const first = positionals[0] === 'help' ? positionals[1] : positionals[0];
    return isCommand(first) ? first : undefined;
  } catch {
    return undefined;
  }
}

function parseError(e: Error & { code?: string }, argv: string[]): UsageError {
  const command = guessCommand(argv);
  const unknown = /Unknown option '([^']+)'/.exec(e.message)?.[1];
  if (unknown !== undefined) {
    const tokenHint = /^--token(=|$)/.test(unknown)
      ? ': the token is read from the environment only (TRANSCRIPT_STORE_TOKEN, WORKER_TOKEN, or --token-env NAME)'
      : '';
    return new UsageError(`unknown option ${unknown}${tokenHint}`, command);
  }
  return new UsageError(e.message, command);
}

const MiB = 1024 * 1024;
/** Transfers smaller than this never draw a progress line (they are over before one would help). */
export const PROGRESS_MIN_BYTES = MiB;

function formatBytes(n: number): string {
  return n >= MiB ? `${(n / MiB).toFixed(1)} MiB` : `${(n / 1024).toFixed(1)} KiB`;
}

const PHASE_LABEL: Record<TransferProgress['phase'], string> = {
  download: 'downloading',
  prepare: 'preparing',
  upload: 'uploading',
};

/**
 * Progress lines on a terminal: one line per phase, redrawn in place (`\r`, erase to end of line)
 * when the whole percent changes (or, size unknown, every MiB), and ended with a newline when the
 * phase changes or the command ends. Phases under `PROGRESS_MIN_BYTES` are not shown.
 */
function progressDisplay(write: (s: string) => void): { onProgress: (p: TransferProgress) => void; end: () => void } {
  let open = false;
  let phase: string | undefined;
  let lastKey: string | undefined;
  const end = () => {
    if (open) write('\n');
    open = false;
  };
  return {
    onProgress: (p) => {
      if (p.phase !== phase) {
        end();
        phase = p.phase;
        lastKey = undefined;
      }
      if ((p.totalBytes ?? p.bytes) < PROGRESS_MIN_BYTES) return;
      const pct = p.totalBytes ? Math.min(100, Math.floor((p.bytes / p.totalBytes) * 100)) : undefined;
      const key = pct !== undefined ? `${pct}%` : `${Math.floor(p.bytes / MiB)}MiB`;
      if (key === lastKey) return;
      lastKey = key;
      const of = p.totalBytes !== undefined && pct !== undefined ? ` / ${formatBytes(p.totalBytes)} (${pct}%)` : '';
      write(`\r${p.op}: ${PHASE_LABEL[p.phase]} ${formatBytes(p.bytes)}${of}\x1b[K`);
      open = true;
    },
    end,
  };
}

/** Reads the `runId` claim of a JWT without verifying it (only for a hint; the service verifies). */
function runIdClaim(token: string): { readable: boolean; runId: unknown } {
  try {
    const payload = token.split('.')[1];
    if (payload === undefined) return { readable: false, runId: undefined };
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as Record<string, unknown>;
    return { readable: true, runId: claims['runId'] };
  } catch {
    return { readable: false, runId: undefined };
  }
}

/** Why a write was refused with `403 run_out_of_scope`, from the token's own claims. Never contains the token. */
function runScopeHint(token: string, runId: number): string {
  const claim = runIdClaim(token);
  if (claim.readable && claim.runId === undefined) {
    return `this is a conversation token (no runId claim); write needs the per-run token issued for run ${runId}`;
  }
  if (claim.readable && typeof claim.runId === 'number') {
    return `this token is for run ${claim.runId}, not run ${runId}: pass --run-id ${claim.runId} or the token of run ${runId}`;
  }
  return `write needs a per-run token whose runId claim is ${runId} (the --run-id)`;
}

interface Failure {
  message: string;
  hint?: string;
}

/**
 * Runs the CLI and returns the exit status (0 success, 1 failure, 2 usage error). Exported for tests:
 * nothing here calls `process.exit` or reads `process.env`; all I/O goes through `io`.
 */
export async function runCli(argv: string[], io: CliIo): Promise<number> {
  let progress: ReturnType<typeof progressDisplay> | undefined;
  try {
    let parsed;
    try {
      parsed = parseArgs({ args: argv, allowPositionals: true, strict: true, tokens: true, options: PARSE_OPTIONS });
    } catch (e) {
      if ((e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) throw parseError(e as Error, argv);
      throw e;
    }
    const { positionals, values, tokens } = parsed;
    if (values.version) {
      io.stdout(`${cliVersion()}\n`);
      return 0;
    }
    let words = positionals;
    let help = values.help === true;
    if (words[0] === 'help') {
      help = true;
      words = words.slice(1);
    }
    const first = words[0];
    if (first !== undefined && !isCommand(first)) {
      throw new UsageError(`unknown command "${first}": expected hydrate, write or clear`, undefined);
    }
    const command: Command | undefined = first;
    if (help) {
      io.stdout(command ? COMMAND_USAGE[command] : GENERAL_USAGE);
      return 0;
    }
    if (!command) throw new UsageError('no command given', undefined);
    if (words.length > 1) throw new UsageError(`unexpected argument "${words[1]}"`, command);
    const allowed = new Set([...COMMON_OPTIONS, ...COMMAND_OPTIONS[command]]);
    for (const t of tokens) {
      if (t.kind === 'option' && !allowed.has(t.name)) throw new UsageError(`${command} does not take ${t.rawName}`, command);
    }
    if (values.quiet && values.verbose) throw new UsageError('--quiet and --verbose exclude each other', command);

    // The command line first, then the environment; all before anything is sent.
    let write: { sessionFile: string; runId: number; terminalStatus: TerminalStatus; directMaxBytes: number | undefined } | undefined;
    if (command === 'hydrate' && !values['session-file']) throw new UsageError('hydrate needs --session-file', command);
    if (command === 'write') {
      const sessionFile = values['session-file'];
      if (!sessionFile) throw new UsageError('write needs --session-file', command);
      const runId = intFlag('run-id', values['run-id'], command);
      if (runId === undefined) throw new UsageError('write needs --run-id', command);
      const ts = values['terminal-status'] ?? 'completed';
      if (!TERMINAL.includes(ts as TerminalStatus)) {
        throw new UsageError(`--terminal-status must be one of ${TERMINAL.join(', ')}`, command);
      }
      write = { sessionFile, runId, terminalStatus: ts as TerminalStatus, directMaxBytes: intFlag('direct-max-bytes', values['direct-max-bytes'], command) };
    }

    const transport: TransportOptions = {};
    const timeoutMs = intFlag('timeout-ms', values['timeout-ms'], command);
    if (timeoutMs !== undefined) transport.timeoutMs = timeoutMs;
    const retries = intFlag('retries', values.retries, command);
    if (retries !== undefined) transport.retries = retries;
    const deadlineMs = intFlag('deadline-ms', values['deadline-ms'], command);
    if (deadlineMs !== undefined) transport.deadlineMs = deadlineMs;

    const env = (name: string) => (io.env[name] === '' ? undefined : io.env[name]);
    const gatewayUrl = values['gateway-url'] ?? env('TRANSCRIPT_STORE_URL') ?? env('DISPATCHER_URL');
    if (!gatewayUrl) {
      const baseUrl = env('BASE_URL') ? ' (BASE_URL is set but not read: set TRANSCRIPT_STORE_URL)' : '';
      throw new UsageError(`no base URL: pass --gateway-url or set TRANSCRIPT_STORE_URL${baseUrl}`, command);
    }
    const tokenEnv = values['token-env'];
    const workerToken = tokenEnv ? env(tokenEnv) : (env('TRANSCRIPT_STORE_TOKEN') ?? env('WORKER_TOKEN'));
    if (!workerToken) {
      throw new UsageError(`no token: set ${tokenEnv ?? 'TRANSCRIPT_STORE_TOKEN (or WORKER_TOKEN)'} in the environment`, command);
    }
    if (values.verbose) transport.logger = (ev) => io.stderr(`${JSON.stringify(ev)}\n`);
    const quiet = values.quiet === true;
    if (io.stderrIsTTY === true && !quiet) {
      progress = progressDisplay(io.stderr);
      transport.onProgress = progress.onProgress;
    }
    const conn = { gatewayUrl, workerToken, ...transport };

    let result: Record<string, unknown>;
    let failure: Failure | undefined;
    let status: number;
    if (command === 'hydrate') {
      try {
        const r = await hydrateSnapshot({ ...conn, sessionFile: values['session-file']! });
        result = { ...r, hydrated: r.status !== 'not_found' };
        status = 0;
      } catch (e) {
        if (!(e instanceof TranscriptStoreError)) throw e;
        result = {
          status: 'failed',
          code: e.code,
          message: e.message,
          ...(e.status !== undefined ? { httpStatus: e.status } : {}),
          ...(e.serverCode !== undefined ? { serverCode: e.serverCode } : {}),
          attempts: e.attempts,
        };
        failure = { message: e.message };
        status = e.code === 'invalid_argument' ? 2 : 1;
      }
    } else {
      const r =
        command === 'write' && write
          ? await writeSnapshot({
              ...conn,
              sessionFile: write.sessionFile,
              runId: write.runId,
              terminalStatus: write.terminalStatus,
              ...(write.directMaxBytes !== undefined ? { directMaxBytes: write.directMaxBytes } : {}),
              ...(values['no-compress'] ? { compress: false } : {}),
            })
          : await clearSnapshots(conn);
      result = { ...r };
      status = r.status === 'failed' ? (r.reason === 'invalid_argument' ? 2 : 1) : 0;
      if (r.status === 'failed') {
        failure = { message: r.message };
        if (write && r.serverCode === 'run_out_of_scope') failure.hint = runScopeHint(workerToken, write.runId);
        if (failure.hint !== undefined) result['hint'] = failure.hint;
      }
    }
    progress?.end();
    io.stdout(`${JSON.stringify(result)}\n`);
    if (failure && !quiet) io.stderr(`error: ${failure.message}\n${failure.hint !== undefined ? `hint: ${failure.hint}\n` : ''}`);
    return status;
  } catch (e) {
    progress?.end();
    if (e instanceof UsageError) {
      io.stderr(`error: ${e.message}\n\n${e.command ? COMMAND_USAGE[e.command] : GENERAL_USAGE}`);
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
    stderrIsTTY: process.stderr.isTTY === true,
  }).then((code) => {
    process.exitCode = code;
  });
}
