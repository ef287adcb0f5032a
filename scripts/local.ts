/**
 * `npm start`: the service on embedded S3/DynamoDB emulators (or AWS_ENDPOINT_URL* endpoints),
 * data under DATA_DIR (default .data/, kept across restarts), on 127.0.0.1:${PORT:-8787}.
 */
import { HEALTH_PATH, OPENAPI_PATH, SNAPSHOT_PATH } from '../functions/lib/contract.js';
import { CONSOLE_PATH } from '../functions/lib/routes/console-files.js';
import { acquireDataDirLock, DataDirInUseError, type DataDirLock } from '../local/data-dir-lock.js';
import { startLocalService, storeLocations, type StoreLocation } from '../local/service.js';

process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true'; // Node 20 locally; Lambda runs 22

const dataDir = process.env['DATA_DIR'] || '.data';
const port = Number(process.env['PORT'] || 8787);
const host = process.env['HOST'] || '127.0.0.1';
/** The organization the printed console URL's dev admin token reads. */
const consoleOrg = process.env['CONSOLE_ORG'] || 'dev';

// Embedded emulators keep their data in DATA_DIR: one npm start per DATA_DIR (a second one would
// corrupt it). Against AWS_ENDPOINT_URL* endpoints DATA_DIR only holds the dev secret: no lock.
const where = storeLocations(process.env);
const embedded = where.s3 === 'embedded' || where.dynamodb === 'embedded';
let lock: DataDirLock | undefined;
try {
  if (embedded) lock = await acquireDataDirLock(dataDir);
} catch (err) {
  process.stderr.write(
    err instanceof DataDirInUseError
      ? `transcript-store: ${err.message}\n`
      : `transcript-store failed to start: cannot lock DATA_DIR ${dataDir}: ${err instanceof Error ? err.message : String(err)}\n`,
  );
  process.exit(1);
}
process.on('exit', () => lock?.releaseSync());

/** What the retention timer does, in the terms of its variables (README § Configuration). */
function retentionLine(c: { retentionIntervalMinutes: number; retainCompletedRuns: number; retainFailedDays: number; orphanGraceSeconds: number; conversationTtlDays: number }): string {
  const ttl = c.conversationTtlDays > 0 ? `, conversations erased ${c.conversationTtlDays} d after their last write` : '';
  return (
    `a pass every ${c.retentionIntervalMinutes} min (first one ${c.retentionIntervalMinutes} min after start): keeps the latest completed run + ${c.retainCompletedRuns - 1} before it, ` +
    `runs that did not complete ${c.retainFailedDays} d${ttl}; never anything younger than ${c.orphanGraceSeconds} s`
  );
}

try {
  const svc = await startLocalService({ dataDir, port, host });
  const describe = (name: string, location: StoreLocation, endpoint: string | undefined, emulator: string) =>
    `${name} ${location === 'embedded' ? `embedded ${emulator} ${endpoint ?? ''}, data in ${dataDir}` : `${endpoint ?? 'AWS'} (AWS_ENDPOINT_URL*)`}`;
  const storage = [
    describe('S3', svc.storage.s3, svc.endpoints.s3, 's3rver'),
    describe('DynamoDB', svc.storage.dynamodb, svc.endpoints.dynamodb, 'dynalite'),
  ].join('; ') + `; bucket ${svc.config.bucketName}, table ${svc.config.tableName}`;
  // The dev admin token rides in the URL fragment, which the browser never sends; the console reads it
  // into sessionStorage and removes it from the address bar. Without a dev secret (JWKS, Secrets
  // Manager) the operator pastes a token instead.
  let consoleUrl = `${svc.url}${CONSOLE_PATH}`;
  try {
    const issuer = svc.config.issuer;
    const audience = svc.config.audience;
    const token = await svc.mintAdminToken({ org: consoleOrg, sub: 'dev-console', ttlSeconds: 8 * 3600, ...(issuer && { issuer }), ...(audience && { audience }) });
    consoleUrl += `#token=${token}`;
  } catch {
    consoleUrl += '  (paste an admin token)';
  }
  process.stderr.write(
    [
      `transcript-store listening on ${svc.url}`,
      `  storage:  ${storage}`,
      `  endpoint: ${svc.url}${SNAPSHOT_PATH}`,
      `  api:      ${svc.url}${OPENAPI_PATH} (OpenAPI 3.1 of every route); health: ${svc.url}${HEALTH_PATH}`,
      `  token:    ${dataDir === '.data' ? '' : `DATA_DIR=${dataDir} `}npm run token -- --org O --agent A --conv C [--run N] [--ttl 2h]`,
      `  worker:   TRANSCRIPT_STORE_URL=${svc.url}  (existing workers: DISPATCHER_URL)`,
      `  admin:    TRANSCRIPT_STORE_URL=${svc.url} TRANSCRIPT_STORE_ADMIN_TOKEN=$(${dataDir === '.data' ? '' : `DATA_DIR=${dataDir} `}npm run -s token -- --admin --org O) npm run admin -- conversations`,
      `  retention: ${retentionLine(svc.config)}`,
      `  console:  ${consoleUrl}`,
      `            (organization "${consoleOrg}", dev admin token valid 8 h; CONSOLE_ORG=… npm start for another)`,
      `Ctrl-C to stop.`,
      '',
    ].join('\n'),
  );
  // The URL alone on stdout, so scripts can capture it.
  process.stdout.write(`${svc.url}\n`);

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`\n${signal}: stopping…\n`);
    await svc.stop();
    await lock?.release();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
} catch (err) {
  process.stderr.write(`transcript-store failed to start: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
}
