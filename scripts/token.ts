/**
 * `npm run token -- --org O --agent A --conv C [--run N] [--ttl 2h]` (worker token), or
 * `npm run token -- --admin --org O [--sub WHO] [--ttl 2h]` (admin token: `scope: transcripts:admin`).
 * Prints a dev JWT as the last line of stdout, signed with JWT_SECRET or the dev secret in DATA_DIR
 * (the same one `npm start` uses).
 */
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadOrCreateDevSecret, mintDevAdminToken, mintDevToken } from '../local/dev-secret.js';

const USAGE =
  'usage: npm run token -- --org O --agent A --conv C [--run N] [--ttl 2h] [--iss ISS] [--aud AUD]\n' +
  '       npm run token -- --admin --org O [--sub WHO] [--ttl 2h] [--iss ISS] [--aud AUD]   (operator API)';

export function parseTtl(raw: string): number {
  const m = /^(\d+)\s*([smhd]?)$/.exec(raw.trim());
  if (!m) throw new Error(`invalid --ttl "${raw}" (use e.g. 90s, 30m, 2h, 1d)`);
  const unit = { '': 1, s: 1, m: 60, h: 3600, d: 86400 }[m[2] as '' | 's' | 'm' | 'h' | 'd'];
  const seconds = Number(m[1]) * unit;
  if (seconds <= 0) throw new Error('--ttl must be positive');
  return seconds;
}

function fail(message: string): never {
  process.stderr.write(`${message}\n${USAGE}\n`);
  process.exit(2);
}

let values;
try {
  ({ values } = parseArgs({
    options: {
      org: { type: 'string' },
      agent: { type: 'string' },
      conv: { type: 'string' },
      run: { type: 'string' },
      ttl: { type: 'string', default: '2h' },
      iss: { type: 'string' },
      aud: { type: 'string' },
      admin: { type: 'boolean' },
      sub: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  }));
} catch (err) {
  fail((err as Error).message);
}
if (values.help) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}
if (values.admin) {
  if (!values.org) fail('--org is required');
  if (values.run !== undefined) fail('--run is for worker tokens, not --admin');
  // An admin token reaches its whole organization; silently dropping these would hide a mistake.
  if (values.agent !== undefined || values.conv !== undefined) fail('--agent and --conv are for worker tokens, not --admin (an admin token reaches the whole organization)');
} else {
  if (!values.org || !values.agent || !values.conv) fail('--org, --agent and --conv are required');
  if (values.sub !== undefined) fail('--sub is for --admin tokens');
}
let runId: number | undefined;
if (values.run !== undefined) {
  runId = Number(values.run);
  if (!/^\d+$/.test(values.run) || !Number.isSafeInteger(runId) || runId <= 0) fail(`--run must be a positive integer, got "${values.run}"`);
}
let ttlSeconds: number;
try {
  ttlSeconds = parseTtl(values.ttl!);
} catch (err) {
  fail((err as Error).message);
}

const dataDir = process.env['DATA_DIR'] || '.data';
const secretFile = join(dataDir, 'dev-jwt-secret');
const fromEnv = Boolean(process.env['JWT_SECRET']?.trim());
const existed = fromEnv || (await access(secretFile).then(() => true, () => false));
const secret = await loadOrCreateDevSecret(dataDir);
if (!existed) {
  // The usual cause of a 401 from a service that is running fine: a token signed for another DATA_DIR.
  process.stderr.write(
    `note: ${secretFile} did not exist, so a new dev secret was created there: only an npm start with DATA_DIR=${dataDir} accepts this token` +
      ` (run this with the DATA_DIR npm start printed)\n`,
  );
}
const signedWith = fromEnv ? 'JWT_SECRET' : secretFile;
const common = { ttlSeconds, issuer: values.iss ?? process.env['JWT_ISSUER'], audience: values.aud ?? process.env['JWT_AUDIENCE'] };
if (values.admin) {
  const token = await mintDevAdminToken(secret, { org: values.org!, ...(values.sub !== undefined && { sub: values.sub }), ...common });
  process.stderr.write(`dev admin token for organization ${values.org}${values.sub ? ` (actor ${values.sub})` : ''}, valid ${ttlSeconds}s, signed with ${signedWith}:\n`);
  process.stdout.write(`${token}\n`);
} else {
  const token = await mintDevToken(secret, {
    org: values.org!,
    agent: values.agent!,
    conv: values.conv!,
    ...(runId !== undefined && { runId }),
    ...common,
  });
  process.stderr.write(`dev token for ${values.org}/${values.agent}/${values.conv}${runId ? ` run ${runId}` : ''}, valid ${ttlSeconds}s, signed with ${signedWith}:\n`);
  process.stdout.write(`${token}\n`);
}
