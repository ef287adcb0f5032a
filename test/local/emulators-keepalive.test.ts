/**
 * Fault 1, storage side: the embedded emulators also keep idle keep-alive connections longer than
 * their clients (the AWS SDK, undici's 4 s) reuse them, so a reused connection is never reset.
 */
import { connect } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEmulators, type Emulators } from '../../local/emulators.js';

let dir: string;
let emulators: Emulators;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'emu-keepalive-'));
  emulators = await startEmulators({ dataDir: dir, persistDynamo: false });
});
afterAll(async () => {
  await emulators?.stop();
  await rm(dir, { recursive: true, force: true });
});

/** Sends two requests on one connection, `idleMs` apart; resolves with the number of responses received. */
function twoRequestsOneConnection(endpoint: string, request: string, idleMs: number): Promise<{ responses: number; closedEarly: boolean }> {
  const { hostname, port } = new URL(endpoint);
  return new Promise((resolve, reject) => {
    let buf = '';
    let closedEarly = false;
    const socket = connect(Number(port), hostname, () => socket.write(request));
    const count = () => (buf.match(/HTTP\/1\.1 \d{3} /g) ?? []).length;
    socket.on('data', (d: Buffer) => (buf += d.toString('latin1')));
    socket.once('end', () => {
      if (count() < 2) closedEarly = true;
    });
    socket.once('error', reject);
    setTimeout(() => {
      if (!closedEarly) socket.write(request);
      setTimeout(() => {
        socket.destroy();
        resolve({ responses: count(), closedEarly });
      }, 1_000);
    }, idleMs);
  });
}

describe('emulator keep-alive', () => {
  it('s3rver and dynalite answer a second request on a connection idle past Node’s default 5 s (+1 s)', async () => {
    const [s3, ddb] = await Promise.all([
      twoRequestsOneConnection(emulators.s3Endpoint, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n', 7_000),
      twoRequestsOneConnection(
        emulators.dynamodbEndpoint,
        'POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-amz-json-1.0\r\nX-Amz-Target: DynamoDB_20120810.ListTables\r\nContent-Length: 2\r\n\r\n{}',
        7_000,
      ),
    ]);
    expect(s3).toEqual({ responses: 2, closedEarly: false });
    expect(ddb).toEqual({ responses: 2, closedEarly: false });
  }, 30_000);
});
