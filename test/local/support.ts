/**
 * Shared helpers for the local-service robustness tests.
 */
import { spawn, type ChildProcess } from 'node:child_process';

/**
 * A JSONL transcript of about `bytes` bytes (UTF-8) whose lines are quote-heavy, like tool output
 * quoting code: every line is valid JSON and about half of it is `\"` escapes, so each JSON-escaping
 * pass (the POST body, then API Gateway's event) roughly doubles its size.
 */
export function quoteHeavyTranscript(bytes: number): string {
  const lines: string[] = [];
  let size = 0;
  for (let i = 0; size < bytes; i++) {
    const line = JSON.stringify({ type: 'tool_result', i, text: `"q${i}" said "${'"'.repeat(40)}" and ${'"x" '.repeat(20)}` }) + '\n';
    lines.push(line);
    size += Buffer.byteLength(line);
  }
  return lines.join('');
}


const root = new URL('../../', import.meta.url).pathname;
/**
 * `node --import tsx scripts/local.ts`: one process (the tsx binary would run the script in a child
 * of its own, so a SIGKILL would leave that child running — not the kill -9 being simulated).
 */
const command = [process.execPath, ['--import', 'tsx', 'scripts/local.ts']] as const;

/** A running `npm start` (scripts/local.ts) child. */
export interface NpmStart {
  readonly child: ChildProcess;
  /** The service's base URL (printed alone on stdout). */
  readonly url: string;
  /** The embedded s3rver's endpoint (from the banner on stderr). */
  readonly s3Endpoint: string;
  stderr(): string;
  /** Resolves with the exit code (or signal name) once the child has exited. */
  readonly exited: Promise<number | string | null>;
  /** Whether the child is still running. */
  alive(): boolean;
  /** Sends `signal` (default SIGTERM) and waits for the exit. */
  stop(signal?: NodeJS.Signals): Promise<number | string | null>;
}

/** The environment for a child `npm start` on `dataDir`, on a free port, with embedded emulators. */
export function npmStartEnv(dataDir: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { ...process.env, DATA_DIR: dataDir, PORT: '0', ...extra };
  delete e['JWT_SECRET'];
  delete e['AWS_ENDPOINT_URL'];
  delete e['AWS_ENDPOINT_URL_S3'];
  delete e['AWS_ENDPOINT_URL_DYNAMODB'];
  return e;
}

/**
 * Spawns `scripts/local.ts` asynchronously (a synchronous spawn would deadlock in-process emulators)
 * and resolves once it printed its URL; rejects with its stderr if it exits first or prints nothing
 * for 60 s. Use {@link runToExit} for a start that is expected to fail.
 */
export async function startNpm(dataDir: string, extra: Record<string, string> = {}): Promise<NpmStart> {
  const child = spawn(command[0], [...command[1]], { cwd: root, env: npmStartEnv(dataDir, extra), stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  let running = true;
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | string | null>((resolve) =>
    child.once('exit', (code, signal) => {
      running = false;
      resolve(code ?? signal);
    }),
  );
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`npm start printed no URL in 60 s: ${err}`)), 60_000);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /^(http:\/\/127\.0\.0\.1:\d+)$/m.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`npm start exited early (${String(code)}): ${err}`));
    });
  });
  const s3Endpoint = /s3rver (http:\/\/127\.0\.0\.1:\d+)/.exec(err)?.[1] ?? '';
  return {
    child,
    url,
    s3Endpoint,
    stderr: () => err,
    exited,
    alive: () => running,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (running) child.kill(signal);
      return exited;
    },
  };
}

/** Spawns `scripts/local.ts` and waits for it to exit: its exit code and output. */
export async function runToExit(dataDir: string, extra: Record<string, string> = {}, timeoutMs = 60_000): Promise<{ code: number | string | null; stdout: string; stderr: string }> {
  const child = spawn(command[0], [...command[1]], { cwd: root, env: npmStartEnv(dataDir, extra), stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const code = await new Promise<number | string | null>((resolve) => child.once('exit', (c, s) => resolve(c ?? s)));
  clearTimeout(timer);
  return { code, stdout, stderr };
}
