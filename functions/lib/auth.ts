import { createRemoteJWKSet, customFetch, jwtVerify, errors as joseErrors, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import * as z from 'zod/mini';
import type { Config } from './config.js';
import { ERRORS } from './contract.js';
import { HttpError, invalidToken, unavailable } from './errors.js';
import { isValidId, isValidRunId, type ConversationScope } from './ids.js';

/** What a verified token grants. Storage keys are derived from this and nothing else (docs/DESIGN.md § Tokens). */
export interface TokenScope extends ConversationScope {
  /** Present only on per-run tokens. */
  readonly runId: number | undefined;
  /** Token issue time (seconds): orders the run against conversation resets (I4). */
  readonly issuedAt: number;
}

export type Verifier = (authorization: string | undefined) => Promise<TokenScope>;

/**
 * Loads the HS256 secret. Production passes a Secrets Manager fetch cached with a bounded age (Powertools
 * Parameters, `SECRET_MAX_AGE_SECONDS`, aws.ts); `forceFetch` bypasses that cache (a rotated key).
 */
export type SecretLoader = (arn: string, opts?: { readonly forceFetch?: boolean }) => Promise<string>;

/**
 * A signature that does not verify with the cached HS256 key makes the verifier fetch the key again at most
 * once per this many ms (per instance): a rotated secret takes effect on the first token signed with it,
 * while forged tokens cannot turn into a Secrets Manager request storm.
 */
export const SECRET_REFETCH_COOLDOWN_MS = 30_000;

const id = () => z.string().check(z.refine(isValidId));
const scopeClaims = z.object({ organizationId: id(), agentId: id(), conversationId: id() });

/**
 * Earliest `iat` accepted, in seconds since the epoch: 2000-01-01T00:00:00Z. An older issue time is
 * not a real token of this service (it would also sort before every reset, I4).
 */
export const MIN_ISSUED_AT_SECONDS = 946_684_800;

/** The registered NumericDate claims checked for sanity (RFC 7519 §4.1.4–4.1.6). */
const TIME_CLAIMS = ['iat', 'exp', 'nbf'] as const;

/**
 * True when a NumericDate claim is usable: a finite number of seconds in [0, 2^53) (a fraction is
 * allowed, as RFC 7519 permits; `iat` is floored). Anything else — ±1e200, a string, NaN — could
 * overflow a DynamoDB number or a Date and turn a bad token into a 500.
 */
function saneNumericDate(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0 && v <= Number.MAX_SAFE_INTEGER;
}

/** Throws 401 Invalid token unless every present time claim is sane and `iat` is present and not absurdly old. */
function checkTimeClaims(payload: JWTPayload): number {
  for (const name of TIME_CLAIMS) {
    const v = payload[name];
    if (v !== undefined && !saneNumericDate(v)) throw invalidToken();
  }
  const iat = payload.iat;
  if (!saneNumericDate(iat) || iat < MIN_ISSUED_AT_SECONDS) throw invalidToken();
  return Math.floor(iat);
}

const BEARER = /^Bearer[ \t]+([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*)[ \t]*$/i;

/**
 * Verifies the `Authorization` header's JWT and resolves with its claims: the one verify path every
 * token kind shares (worker and admin). Rejects with `HttpError` 401 Invalid token (no Bearer token,
 * malformed, bad signature, wrong algorithm, expired, not yet valid, `iat` in the future) or 503 when
 * the key source (JWKS / Secrets Manager) is unavailable. Claims beyond the registered ones are not
 * looked at: {@link scopeFrom} / {@link adminScopeFrom} do that.
 */
export type JwtVerifier = (authorization: string | undefined) => Promise<JWTPayload>;

/** Builds the shared verify path for `config` (one key resolver: one JWKS cache, one secret fetch). */
export function createJwtVerifier(config: Config, loadSecret?: SecretLoader, now: () => number = Date.now): JwtVerifier {
  const key = keyResolver(config, loadSecret, now);
  const options = {
    algorithms: [...config.algorithms],
    requiredClaims: ['exp', 'iat'],
    clockTolerance: config.clockToleranceSeconds,
    ...(config.issuer !== undefined && { issuer: config.issuer }),
    ...(config.audience !== undefined && { audience: config.audience }),
  };

  return async (authorization) => {
    const token = BEARER.exec(authorization ?? '')?.[1];
    if (token === undefined) throw invalidToken();
    let payload: JWTPayload;
    try {
      try {
        ({ payload } = await jwtVerify(token, await key(), options));
      } catch (err) {
        // The secret may have been rotated since it was cached: fetch it once more (rate-limited) and retry.
        const fresh = err instanceof joseErrors.JWSSignatureVerificationFailed ? await key.refresh?.() : undefined;
        if (fresh === undefined) throw err;
        ({ payload } = await jwtVerify(token, fresh, options));
      }
    } catch (err) {
      // A key source that is down or broken is our failure, not the caller's: 503, so clients retry.
      if (isKeySourceFailure(err)) throw unavailable(err);
      if (err instanceof joseErrors.JOSEError || err instanceof TypeError) throw invalidToken(err);
      throw err;
    }
    // jose checks `iat` against the clock only when `maxTokenAge` is set. A token issued in the
    // future would sort after a reset that happened before it was really issued (I4), so reject it
    // with the same tolerance jose applies to `nbf`.
    if (typeof payload.iat === 'number' && payload.iat > Date.now() / 1000 + config.clockToleranceSeconds) throw invalidToken();
    return payload;
  };
}

/**
 * Builds the request verifier: takes the `Authorization` header value and resolves with the token's
 * scope, or rejects with `HttpError` 401 Invalid token (malformed, bad signature, wrong algorithm,
 * expired, not yet valid, issued in the future or with insane time claims), 400 missing scope, or 503
 * when the key source (JWKS / Secrets Manager) is unavailable. `jwt`: a shared verify path (so the
 * worker and admin verifiers of one process share their key source); built from `config` when omitted.
 */
export function createVerifier(config: Config, loadSecret?: SecretLoader, jwt: JwtVerifier = createJwtVerifier(config, loadSecret)): Verifier {
  return async (authorization) => scopeFrom(await jwt(authorization));
}

/** The scope value (RFC 8693 §4.2) an admin token must carry among its space-delimited `scope` values. */
export const ADMIN_SCOPE = 'transcripts:admin';

/** What a verified admin token grants: one organization, read and erase (docs/DESIGN.md § Operator API). */
export interface AdminScope {
  readonly organizationId: string;
  /** The token's `sub`, recorded as the actor in audit log lines; undefined when the token has none. */
  readonly actor: string | undefined;
  /** Token issue time (seconds, floored). */
  readonly issuedAt: number;
}

export type AdminVerifier = (authorization: string | undefined) => Promise<AdminScope>;

/**
 * The admin routes' verifier: the same verify path as worker tokens ({@link createJwtVerifier}), then
 * {@link adminScopeFrom}. Rejects with 401, 403 admin_scope_required, 400 missing_scope or 503.
 */
export function createAdminVerifier(config: Config, loadSecret?: SecretLoader, jwt: JwtVerifier = createJwtVerifier(config, loadSecret)): AdminVerifier {
  return async (authorization) => adminScopeFrom(await jwt(authorization));
}

/** True when `scope` (RFC 8693 §4.2: a string of space-delimited values) contains {@link ADMIN_SCOPE}. */
export function hasAdminScope(scope: unknown): boolean {
  return typeof scope === 'string' && scope.split(' ').includes(ADMIN_SCOPE);
}

/**
 * Turns verified claims into an admin scope (exported for tests). In order: time claims as for worker
 * tokens (401); no {@link ADMIN_SCOPE} among the `scope` values → 403 admin_scope_required (a worker
 * token on an admin route); a `sub` that is present but not a valid id (non-empty, well-formed, ≤ 1,024
 * UTF-8 bytes) → 401 Invalid token; `organizationId` not a valid id → 400 Token missing required scope.
 * Worker claims (`agentId`, `conversationId`, `runId`) are ignored: an admin token always reaches its
 * whole organization through the admin routes, and nothing else.
 */
export function adminScopeFrom(payload: JWTPayload): AdminScope {
  const issuedAt = checkTimeClaims(payload);
  if (!hasAdminScope(payload['scope'])) throw new HttpError(ERRORS.adminScopeRequired);
  const sub = payload.sub;
  if (sub !== undefined && !isValidId(sub)) throw invalidToken();
  const org = payload['organizationId'];
  if (!isValidId(org)) throw new HttpError(ERRORS.missingScope);
  return { organizationId: org, actor: sub, issuedAt };
}

/**
 * Turns verified claims into a scope (exported for tests). Throws `HttpError` 401 Invalid token when
 * `iat` is missing, or `iat`/`exp`/`nbf` is not a finite number of seconds in [0, 2^53), or `iat` is
 * before {@link MIN_ISSUED_AT_SECONDS}; 400 Token missing required scope for a missing or malformed
 * scope claim or `runId`. `issuedAt` is `iat` floored to whole seconds.
 */
export function scopeFrom(payload: JWTPayload): TokenScope {
  // jose has checked exp/iat are present and numeric, not that they are sane numbers.
  const issuedAt = checkTimeClaims(payload);
  const parsed = scopeClaims.safeParse(payload);
  if (!parsed.success) throw new HttpError(ERRORS.missingScope);
  const rawRun = payload['runId'];
  // A runId claim of the wrong type is a malformed per-run scope, not a conversation token.
  if (rawRun !== undefined && !isValidRunId(rawRun)) throw new HttpError(ERRORS.missingScope);
  return {
    organizationId: parsed.data.organizationId,
    agentId: parsed.data.agentId,
    conversationId: parsed.data.conversationId,
    runId: rawRun,
    issuedAt,
  };
}

/** A network failure while fetching the JWKS (marked by our fetch wrapper below). */
class KeySourceUnavailable extends Error {
  override name = 'KeySourceUnavailable';
}

function isKeySourceFailure(err: unknown): boolean {
  return (
    err instanceof KeySourceUnavailable ||
    err instanceof joseErrors.JWKSTimeout ||
    err instanceof joseErrors.JWKSInvalid ||
    // jose's generic error is only thrown for a non-200 or non-JSON JWKS response.
    (err instanceof joseErrors.JOSEError && err.code === 'ERR_JOSE_GENERIC')
  );
}

/**
 * The verification key. `refresh` (HS256 keys from Secrets Manager only): fetches the secret again, bypassing
 * the loader's cache, and resolves with the new key — or undefined when it is unchanged, or when the last
 * refresh was less than {@link SECRET_REFETCH_COOLDOWN_MS} ago.
 */
type KeyResolver = (() => Promise<Uint8Array | JWTVerifyGetKey>) & { refresh?: () => Promise<Uint8Array | undefined> };

function keyResolver(config: Config, loadSecret?: SecretLoader, now: () => number = Date.now): KeyResolver {
  const source = config.keySource;
  switch (source.kind) {
    case 'secret': {
      const key = new TextEncoder().encode(source.secret);
      return async () => key;
    }
    case 'secretArn': {
      if (!loadSecret) throw new Error('JWT_SECRET_ARN is set but no secret loader was provided');
      // Kept for at most secretMaxAgeSeconds (a rotated secret takes effect within it; the production loader
      // caches for the same age: Powertools Parameters), and concurrent first requests share one fetch. A failed
      // fetch is not kept: the next request retries.
      const maxAgeMs = config.secretMaxAgeSeconds * 1000;
      let pending: Promise<Uint8Array> | undefined;
      let current: { key: Uint8Array; at: number } | undefined;
      let refreshedAt = Number.NEGATIVE_INFINITY;
      const fetchKey = async (forceFetch: boolean): Promise<Uint8Array> => {
        const at = now();
        const key = new TextEncoder().encode(await loadSecret(source.arn, forceFetch ? { forceFetch } : undefined));
        current = { key, at };
        return key;
      };
      const resolver: KeyResolver = async () => {
        if (current && now() - current.at < maxAgeMs) return current.key;
        return (pending ??= fetchKey(false).finally(() => (pending = undefined)));
      };
      resolver.refresh = async () => {
        if (now() - refreshedAt < SECRET_REFETCH_COOLDOWN_MS) return undefined;
        refreshedAt = now();
        const before = current?.key;
        const fresh = await fetchKey(true);
        return before !== undefined && Buffer.compare(before, fresh) === 0 ? undefined : fresh;
      };
      return resolver;
    }
    case 'jwks': {
      // jose caches the key set, refetches on an unknown `kid` at most once per cooldown (no refetch
      // storm from forged kids), and rotates keys when the endpoint does.
      const jwks = createRemoteJWKSet(source.url, {
        cooldownDuration: 30_000,
        cacheMaxAge: 600_000,
        timeoutDuration: 3_000,
        [customFetch]: async (url: string, init: RequestInit) => {
          try {
            return await fetch(url, init);
          } catch (err) {
            if (init.signal?.aborted) throw err; // jose turns this into JWKSTimeout
            throw new KeySourceUnavailable('JWKS fetch failed', { cause: err });
          }
        },
      });
      return async () => jwks;
    }
  }
}
