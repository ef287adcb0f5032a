import { mkdir } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import dynalite from 'dynalite';
import S3rver from 's3rver';

/**
 * Embedded S3 (s3rver) and DynamoDB (dynalite) speaking the real wire protocols, in this process.
 * Local development and tests only — never imported by functions/.
 */
export interface Emulators {
  readonly s3Endpoint: string;
  readonly dynamodbEndpoint: string;
  /** s3rver only accepts this access key id (any secret). */
  readonly credentials: { accessKeyId: string; secretAccessKey: string };
  stop(): Promise<void>;
}

export async function startEmulators(opts: { dataDir: string; persistDynamo: boolean; host?: string }): Promise<Emulators> {
  const host = opts.host ?? '127.0.0.1';
  const s3Dir = join(opts.dataDir, 's3');
  await mkdir(s3Dir, { recursive: true });
  const s3rver = new S3rver({ address: host, port: 0, silent: true, directory: s3Dir });
  const s3Address = (await s3rver.run()) as AddressInfo;

  let dynamoPath: string | undefined;
  if (opts.persistDynamo) {
    dynamoPath = join(opts.dataDir, 'dynamodb');
    await mkdir(dynamoPath, { recursive: true });
  }
  const ddbServer = dynalite({ createTableMs: 0, deleteTableMs: 0, updateTableMs: 0, ...(dynamoPath && { path: dynamoPath }) });
  await new Promise<void>((resolve, reject) => {
    ddbServer.once('error', reject);
    ddbServer.listen(0, host, () => resolve());
  });
  const ddbPort = (ddbServer.address() as AddressInfo).port;

  let stopped = false;
  return {
    s3Endpoint: `http://${host}:${s3Address.port}`,
    dynamodbEndpoint: `http://${host}:${ddbPort}`,
    credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
    async stop() {
      if (stopped) return;
      stopped = true;
      ddbServer.closeAllConnections?.();
      await Promise.all([s3rver.close(), new Promise<void>((resolve) => ddbServer.close(() => resolve()))]);
    },
  };
}
