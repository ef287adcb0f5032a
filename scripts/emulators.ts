/**
 * The embedded S3 (s3rver) and DynamoDB (dynalite) emulators alone, in this process, for a service
 * started elsewhere with AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL_DYNAMODB (the "external endpoints"
 * mode, as with LocalStack). Prints `{"s3": "...", "dynamodb": "..."}` as one JSON line on stdout and
 * stays up until SIGTERM/SIGINT; data lives in a temp dir (or DATA_DIR) removed on exit when temporary.
 *
 *   tsx scripts/emulators.ts
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { startEmulators } from '../local/emulators.js';

const ephemeral = !process.env['DATA_DIR'];
const dataDir = ephemeral ? await mkdtemp(join(tmpdir(), 'transcript-store-emulators-')) : resolve(process.env['DATA_DIR']!);

try {
  const emulators = await startEmulators({ dataDir, persistDynamo: !ephemeral, host: '127.0.0.1' });
  process.stdout.write(`${JSON.stringify({ s3: emulators.s3Endpoint, dynamodb: emulators.dynamodbEndpoint })}\n`);
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await emulators.stop().catch(() => {});
    if (ephemeral) await rm(dataDir, { recursive: true, force: true }).catch(() => {});
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop());
  process.on('SIGINT', () => void stop());
} catch (err) {
  process.stderr.write(`emulators failed to start: ${err instanceof Error ? err.message : String(err)}\n`);
  if (ephemeral) await rm(dataDir, { recursive: true, force: true }).catch(() => {});
  process.exit(1);
}
