// First: loads s3rver's bucket controller with continuation tokens that need no legacy OpenSSL cipher.
import './s3rver-tokens.js';
import { mkdir } from 'node:fs/promises';
import { Server as HttpServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import dynalite from 'dynalite';
import S3rver from 's3rver';
import { applyKeepAliveTimeouts } from './adapter.js';
import { describeRepair, repairS3Data } from './repair.js';
import { hardenS3rverStore } from './s3rver-hardening.js';

/**
 * Embedded S3 (s3rver) and DynamoDB (dynalite) speaking the real wire protocols, in this process.
 * Local development and tests only — never imported by functions/.
 */
export interface Emulators {
  readonly s3Endpoint: string;
  readonly dynamodbEndpoint: string;
  /** s3rver only accepts this access key id (any secret). */
  readonly credentials: { accessKeyId: string; secretAccessKey: string };
  /**
   * Simulates a storage outage: both endpoints go away (dropping open connections) for `downMs`, then
   * come back on the same ports with the same data. S3 restarts on its data directory; DynamoDB keeps its
   * database open and only its HTTP server stops (closing dynalite's database under in-flight requests
   * crashes the process), so its data survives whether or not it is persistent.
   */
  restart(opts?: { downMs?: number }): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Starts s3rver (data in `dataDir/s3`) and dynalite (in `dataDir/dynamodb` when `persistDynamo`, else in
 * memory) on free ports of `host` (default 127.0.0.1). Before s3rver starts, emulator files torn by an
 * unclean stop are repaired (torn objects moved to `dataDir/quarantine/`, one line on stderr), and
 * s3rver's store is hardened so no request can crash this process (see s3rver-hardening.ts).
 */
export async function startEmulators(opts: { dataDir: string; persistDynamo: boolean; host?: string }): Promise<Emulators> {
  const host = opts.host ?? '127.0.0.1';
  const s3Dir = join(opts.dataDir, 's3');
  await mkdir(s3Dir, { recursive: true });
  let dynamoPath: string | undefined;
  if (opts.persistDynamo) {
    dynamoPath = join(opts.dataDir, 'dynamodb');
    await mkdir(dynamoPath, { recursive: true });
  }

  // Files torn by an unclean stop (kill -9 mid-write) would make s3rver fail every listing: move them
  // aside before it starts, and say so in one line.
  const repaired = describeRepair(await repairS3Data(s3Dir, join(opts.dataDir, 'quarantine')));
  if (repaired !== undefined) process.stderr.write(`${repaired}\n`);
  // s3rver's store lets stream errors escape as uncaught exceptions; make them S3 errors instead.
  hardenS3rverStore();
  const startS3 = async (port: number) => {
    const server = new S3rver({ address: host, port, silent: true, directory: s3Dir });
    const address = (await server.run()) as AddressInfo;
    // The SDK and worker-clients reuse idle connections: outlive their idle timeouts (no ECONNRESET).
    const httpServer = (server as unknown as { httpServer?: Server }).httpServer;
    if (httpServer) applyKeepAliveTimeouts(httpServer);
    return { server, port: address.port };
  };
  const startDynamo = async (port: number) => {
    const server = dynalite({ createTableMs: 0, deleteTableMs: 0, updateTableMs: 0, ...(dynamoPath && { path: dynamoPath }) });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    applyKeepAliveTimeouts(server);
    return { server, port: (server.address() as AddressInfo).port };
  };

  let s3 = await startS3(0);
  let ddb = await startDynamo(0);
  const closeBoth = async () => {
    ddb.server.closeAllConnections?.();
    (s3.server as unknown as { httpServer?: Server }).httpServer?.closeAllConnections?.();
    await Promise.all([s3.server.close(), new Promise<void>((resolve) => ddb.server.close(() => resolve()))]);
  };
  // An outage of DynamoDB is its HTTP endpoint going away, not its database: dynalite's own close also
  // closes LevelDB, and requests still in flight then fail with an unhandled "Database is closed" that
  // kills this process. So a restart stops and starts only the HTTP server (http.Server's own methods).
  const restartDynamoHttp = async (downMs: number) => {
    ddb.server.closeAllConnections?.();
    await new Promise<void>((resolve) => HttpServer.prototype.close.call(ddb.server, () => resolve()));
    await new Promise((r) => setTimeout(r, downMs));
    await new Promise<void>((resolve, reject) => {
      ddb.server.once('error', reject);
      (HttpServer.prototype.listen as (port: number, host: string, cb: () => void) => Server).call(ddb.server, ddb.port, host, () => resolve());
    });
  };

  let stopped = false;
  return {
    s3Endpoint: `http://${host}:${s3.port}`,
    dynamodbEndpoint: `http://${host}:${ddb.port}`,
    credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
    async restart(restartOpts = {}) {
      if (stopped) throw new Error('emulators are stopped');
      (s3.server as unknown as { httpServer?: Server }).httpServer?.closeAllConnections?.();
      await Promise.all([
        s3.server.close().then(async () => {
          await new Promise((r) => setTimeout(r, restartOpts.downMs ?? 0));
          s3 = await startS3(s3.port);
        }),
        restartDynamoHttp(restartOpts.downMs ?? 0),
      ]);
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await closeBoth();
    },
  };
}
