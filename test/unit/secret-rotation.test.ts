/**
 * Secret rotation (JWT_SECRET_ARN): the HS256 key is kept for at most SECRET_MAX_AGE_SECONDS, a token that
 * does not verify with the kept key makes the verifier fetch it once more (at most once per
 * SECRET_REFETCH_COOLDOWN_MS, so forged tokens cannot make a Secrets Manager storm), and the production
 * loader is Powertools Parameters against the Secrets Manager wire protocol. Clocks are injected.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createJwtVerifier, createVerifier, SECRET_REFETCH_COOLDOWN_MS, type SecretLoader } from '../../functions/lib/auth.js';
import { secretsManagerLoader } from '../../functions/lib/aws.js';
import { loadConfig } from '../../functions/lib/config.js';
import { HttpError } from '../../functions/lib/errors.js';

const ARN = 'arn:aws:secretsmanager:us-east-1:123456789012:secret:jwt-rotate';
const OLD = 'old-secret-0123456789abcdef0123456789';
const NEW = 'new-secret-0123456789abcdef0123456789';
const config = (maxAge = 300) =>
  loadConfig({ AWS_REGION: 'us-east-1', BUCKET_NAME: 'b', TABLE_NAME: 't', JWT_SECRET_ARN: ARN, SECRET_MAX_AGE_SECONDS: String(maxAge) });
const SCOPE = { organizationId: 'o', agentId: 'a', conversationId: 'c' };

async function sign(secret: string): Promise<string> {
  return new SignJWT({ ...SCOPE }).setProtectedHeader({ alg: 'HS256' }).setIssuedAt().setExpirationTime('1h').sign(new TextEncoder().encode(secret));
}

/** A loader whose value the test rotates; records every call (`force` when the cache was bypassed). */
function rotatingLoader(initial: string) {
  const state = { value: initial, calls: [] as ('fetch' | 'force')[] };
  const loader: SecretLoader = async (_arn, opts) => {
    state.calls.push(opts?.forceFetch ? 'force' : 'fetch');
    return state.value;
  };
  return { state, loader };
}

const status = async (p: Promise<unknown>) => {
  try {
    await p;
    return 200;
  } catch (err) {
    if (err instanceof HttpError) return err.spec.status;
    throw err;
  }
};

describe('HS256 key from Secrets Manager: rotation without a cold start', () => {
  it('a token signed with a rotated key verifies at once: one forced fetch, then the new key is kept', async () => {
    let t = 0;
    const { state, loader } = rotatingLoader(OLD);
    const verify = createVerifier(config(), loader, createJwtVerifier(config(), loader, () => t));
    expect(await status(verify(`Bearer ${await sign(OLD)}`))).toBe(200);
    state.value = NEW; // rotated in Secrets Manager
    t += 1_000;
    expect(await status(verify(`Bearer ${await sign(NEW)}`))).toBe(200);
    expect(state.calls).toEqual(['fetch', 'force']);
    expect(await status(verify(`Bearer ${await sign(NEW)}`))).toBe(200);
    expect(state.calls).toEqual(['fetch', 'force']);
    // The old key no longer verifies.
    t += SECRET_REFETCH_COOLDOWN_MS;
    expect(await status(verify(`Bearer ${await sign(OLD)}`))).toBe(401);
  });

  it('forged tokens cost at most one Secrets Manager fetch per cooldown, whatever their number', async () => {
    let t = 0;
    const { state, loader } = rotatingLoader(OLD);
    const jwt = createJwtVerifier(config(), loader, () => t);
    const verify = createVerifier(config(), loader, jwt);
    const forged = await sign('forged-key-0123456789abcdef012345678');
    for (let i = 0; i < 20; i++) expect(await status(verify(`Bearer ${forged}`))).toBe(401);
    expect(state.calls).toEqual(['fetch', 'force']);
    t += SECRET_REFETCH_COOLDOWN_MS - 1;
    expect(await status(verify(`Bearer ${forged}`))).toBe(401);
    expect(state.calls).toHaveLength(2);
    t += 1;
    expect(await status(verify(`Bearer ${forged}`))).toBe(401);
    expect(state.calls).toEqual(['fetch', 'force', 'force']);
  });

  it('the kept key has a bounded age: after SECRET_MAX_AGE_SECONDS it is fetched again (through the loader cache)', async () => {
    let t = 0;
    const { state, loader } = rotatingLoader(OLD);
    const verify = createVerifier(config(60), loader, createJwtVerifier(config(60), loader, () => t));
    const old = await sign(OLD);
    expect(await status(verify(`Bearer ${old}`))).toBe(200);
    state.value = NEW;
    t += 59_999;
    expect(await status(verify(`Bearer ${old}`))).toBe(200); // still within the age: no fetch
    expect(state.calls).toEqual(['fetch']);
    t += 1;
    expect(await status(verify(`Bearer ${await sign(NEW)}`))).toBe(200); // aged out: a plain fetch, no force needed
    expect(state.calls).toEqual(['fetch', 'fetch']);
  });
});

describe('the production loader: Powertools Parameters over the Secrets Manager protocol', () => {
  let server: Server;
  let endpoint: string;
  const seen: { target: string; secretId: string }[] = [];
  let value = OLD;
  beforeAll(async () => {
    server = createServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        const target = String(req.headers['x-amz-target']);
        const secretId = (JSON.parse(body) as { SecretId: string }).SecretId;
        seen.push({ target, secretId });
        res.writeHead(200, { 'content-type': 'application/x-amz-json-1.1' });
        res.end(JSON.stringify({ ARN: secretId, Name: 'jwt-rotate', SecretString: value, VersionId: `v-${seen.length}` }));
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it('caches within its max age, and a forced fetch reaches Secrets Manager (GetSecretValue)', async () => {
    const load = secretsManagerLoader('us-east-1', 300, { endpoint, credentials: { accessKeyId: 'x', secretAccessKey: 'y' } });
    expect(await load(ARN)).toBe(OLD);
    expect(await load(ARN)).toBe(OLD);
    expect(seen).toEqual([{ target: 'secretsmanager.GetSecretValue', secretId: ARN }]);
    value = NEW;
    expect(await load(ARN)).toBe(OLD); // cached
    expect(await load(ARN, { forceFetch: true })).toBe(NEW);
    expect(seen).toHaveLength(2);
    expect(await load(ARN)).toBe(NEW); // the forced fetch refreshed the cache
    expect(seen).toHaveLength(2);
  });
});
