import { randomBytes } from 'node:crypto';
import { link, mkdir, readFile, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SignJWT } from 'jose';
import { ADMIN_SCOPE } from '../functions/lib/auth.js';

/**
 * A development secret: the variable `name` (default JWT_SECRET) when set, otherwise one random secret
 * generated once into DATA_DIR/`file` (default dev-jwt-secret, mode 0600), so `npm start` and
 * `npm run token` agree across restarts.
 */
export async function loadOrCreateDevSecret(
  dataDir: string,
  env: Readonly<Record<string, string | undefined>> = process.env,
  { name = 'JWT_SECRET', file: fileName = 'dev-jwt-secret' }: { name?: string; file?: string } = {},
): Promise<string> {
  const fromEnv = env[name]?.trim();
  if (fromEnv) return fromEnv;
  const file = join(dataDir, fileName);
  try {
    const existing = (await readFile(file, 'utf8')).trim();
    if (existing) return existing;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  await mkdir(dataDir, { recursive: true });
  const secret = randomBytes(32).toString('base64url');
  // Written whole to a private temp file, then linked into place: link(2) creates the name only if it
  // does not exist, and the name never shows a partly written file. If two processes race (`npm start`
  // and `npm run token` on a fresh DATA_DIR), the loser reads the winner's complete secret.
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  await writeFile(tmp, secret + '\n', { mode: 0o600, flag: 'wx' });
  try {
    await link(tmp, file);
    return secret;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    return (await readFile(file, 'utf8')).trim();
  } finally {
    await unlink(tmp).catch(() => {});
  }
}

export interface DevTokenClaims {
  org: string;
  agent: string;
  conv: string;
  runId?: number;
  /** Lifetime in seconds (default 2 h). */
  ttlSeconds?: number;
  /** Override `iat` (seconds) — tests of the reset fence. */
  issuedAt?: number;
  issuer?: string;
  audience?: string;
}

export async function mintDevToken(secret: string, c: DevTokenClaims): Promise<string> {
  const iat = c.issuedAt ?? Math.floor(Date.now() / 1000);
  let jwt = new SignJWT({
    organizationId: c.org,
    agentId: c.agent,
    conversationId: c.conv,
    ...(c.runId !== undefined && { runId: c.runId }),
  })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuedAt(iat)
    .setExpirationTime(iat + (c.ttlSeconds ?? 7200));
  if (c.issuer) jwt = jwt.setIssuer(c.issuer);
  if (c.audience) jwt = jwt.setAudience(c.audience);
  return jwt.sign(new TextEncoder().encode(secret));
}

export interface DevAdminTokenClaims {
  org: string;
  /** Recorded as the actor in audit log lines (default `dev-console`). */
  sub?: string;
  /** Lifetime in seconds (default 8 h). */
  ttlSeconds?: number;
  issuer?: string;
  audience?: string;
}

/** An admin token for the operator API and console: `organizationId`, `scope` {@link ADMIN_SCOPE}, `sub`. HS256. */
export async function mintDevAdminToken(secret: string, c: DevAdminTokenClaims): Promise<string> {
  const iat = Math.floor(Date.now() / 1000);
  let jwt = new SignJWT({ organizationId: c.org, scope: ADMIN_SCOPE })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(c.sub ?? 'dev-console')
    .setIssuedAt(iat)
    .setExpirationTime(iat + (c.ttlSeconds ?? 8 * 3600));
  if (c.issuer) jwt = jwt.setIssuer(c.issuer);
  if (c.audience) jwt = jwt.setAudience(c.audience);
  return jwt.sign(new TextEncoder().encode(secret));
}
