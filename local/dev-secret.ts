import { randomBytes } from 'node:crypto';
import { link, mkdir, readFile, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SignJWT } from 'jose';

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

/** Registered and timing claims every dev token may set. */
interface DevTokenTiming {
  /** Lifetime in seconds (default 2 h). */
  ttlSeconds?: number;
  /** Override `iat` (seconds) — tests of the reset fence. */
  issuedAt?: number;
  issuer?: string;
  audience?: string;
  /** `sub` claim (an admin token's actor, recorded in audit log lines). */
  sub?: string;
}

/** A worker token's claims: the conversation scope, and `runId` for a per-run token. */
export interface DevTokenClaims extends DevTokenTiming {
  org: string;
  agent: string;
  conv: string;
  runId?: number;
  /** `scope` claim (RFC 8693 §4.2); worker tokens carry none — a worker token with the admin scope is both. */
  scope?: string;
}

/** An admin token's claims (docs/DESIGN.md § Operator API): the organization, and worker claims only when given. */
export interface DevAdminTokenClaims extends DevTokenTiming {
  org: string;
  /** `scope` claim; default {@link DEV_ADMIN_SCOPE}. */
  scope?: string;
  agent?: string;
  conv?: string;
  runId?: number;
}

/** The `scope` value of admin tokens (functions/lib/auth.ts `ADMIN_SCOPE`). */
export const DEV_ADMIN_SCOPE = 'transcripts:admin';

/** Signs a dev worker token (HS256) with `secret`: `organizationId`, `agentId`, `conversationId`, optional `runId`. */
export async function mintDevToken(secret: string, c: DevTokenClaims): Promise<string> {
  return sign(secret, c, c.scope);
}

/** Signs a dev admin token (HS256) with `secret`: `organizationId`, `scope` (default transcripts:admin), optional `sub`. */
export async function mintDevAdminToken(secret: string, c: DevAdminTokenClaims): Promise<string> {
  return sign(secret, c, c.scope ?? DEV_ADMIN_SCOPE);
}

async function sign(secret: string, c: DevTokenTiming & { org: string; agent?: string; conv?: string; runId?: number }, scope: string | undefined): Promise<string> {
  const iat = c.issuedAt ?? Math.floor(Date.now() / 1000);
  let jwt = new SignJWT({
    organizationId: c.org,
    ...(c.agent !== undefined && { agentId: c.agent }),
    ...(c.conv !== undefined && { conversationId: c.conv }),
    ...(c.runId !== undefined && { runId: c.runId }),
    ...(scope !== undefined && { scope }),
  })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuedAt(iat)
    .setExpirationTime(iat + (c.ttlSeconds ?? 7200));
  if (c.sub !== undefined) jwt = jwt.setSubject(c.sub);
  if (c.issuer) jwt = jwt.setIssuer(c.issuer);
  if (c.audience) jwt = jwt.setAudience(c.audience);
  return jwt.sign(new TextEncoder().encode(secret));
}
