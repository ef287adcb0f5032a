import { createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';
import type { SecretLoader } from './auth.js';
import { ConfigError, type Config } from './config.js';

/**
 * Upload ids are signed by the service (HMAC-SHA256): a client can echo one back but not alter it, so
 * the announced size, part count, encoding and multipart id it carries are the service's own.
 *
 *   uploadId = base64url(JSON payload) "." base64url(HMAC-SHA256(key, "upload-id.v1." + payload))
 *
 * The key is derived with HKDF-SHA256 (RFC 5869) from UPLOAD_ID_SECRET / UPLOAD_ID_SECRET_ARN when set,
 * otherwise from the HS256 JWT key the service already holds (JWT_SECRET or JWT_SECRET_ARN). With a
 * JWKS key source there is no shared secret, so UPLOAD_ID_SECRET(_ARN) is required for the upload
 * routes (the stack creates one). Rotating the key only invalidates upload ids in flight (they live
 * as long as their presigned URLs, PRESIGN_TTL_SECONDS).
 */
export interface UploadIdCodec {
  /** Signs `payload` (any JSON value) into an opaque upload id. */
  seal(payload: unknown): Promise<string>;
  /** The payload of a genuine upload id, or undefined for anything altered, truncated or foreign. */
  open(uploadId: string): Promise<unknown>;
}

const CONTEXT = 'upload-id.v1.';

/**
 * A sealer over a key resolved on first use: `base64url(JSON payload) "." base64url(HMAC-SHA256(key,
 * context + payload))`. `context` separates the uses of one key (upload ids, cursors): a value sealed
 * for one never opens as the other.
 */
export function createSealer(key: () => Promise<Uint8Array>, context: string): UploadIdCodec {
  const mac = async (payload: string) => createHmac('sha256', await key()).update(context + payload).digest();
  return {
    async seal(payload) {
      const body = Buffer.from(JSON.stringify(payload), 'utf8').toString('base64url');
      return `${body}.${(await mac(body)).toString('base64url')}`;
    },
    async open(sealed) {
      const dot = sealed.lastIndexOf('.');
      if (dot <= 0) return undefined;
      const body = sealed.slice(0, dot);
      const given = Buffer.from(sealed.slice(dot + 1), 'base64url');
      const expected = await mac(body);
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined;
      try {
        return JSON.parse(Buffer.from(body, 'base64url').toString('utf8')) as unknown;
      } catch {
        return undefined;
      }
    },
  };
}

/** A codec over a key that is resolved on first use (and cached). */
export function createUploadIdCodec(key: () => Promise<Uint8Array>): UploadIdCodec {
  return createSealer(key, CONTEXT);
}

/** A codec with a random key: valid only within this process (tests, single-process tools). */
export function ephemeralUploadIdCodec(): UploadIdCodec {
  const key = randomBytes(32);
  return createUploadIdCodec(async () => key);
}

function derive(secret: string, info: string): Uint8Array {
  return new Uint8Array(hkdfSync('sha256', secret, 'transcript-store', info, 32));
}

/**
 * The service's signing key for one use (`info`, the HKDF info label), resolved on first use and cached (a
 * failed fetch is retried by the next call): HKDF-SHA256 of UPLOAD_ID_SECRET / UPLOAD_ID_SECRET_ARN when
 * set, else of the HS256 JWT key (JWT_SECRET / JWT_SECRET_ARN). Rejects with ConfigError on first use when
 * there is no such secret (JWKS without UPLOAD_ID_SECRET(_ARN)).
 */
export function signingKeyFor(config: Pick<Config, 'keySource' | 'uploadIdSecret'>, info: string, loadSecret?: SecretLoader): () => Promise<Uint8Array> {
  let pending: Promise<Uint8Array> | undefined;
  const resolve = async (): Promise<Uint8Array> => {
    const own = config.uploadIdSecret;
    if (own?.kind === 'secret') return derive(own.secret, info);
    const arn = own?.kind === 'secretArn' ? own.arn : config.keySource.kind === 'secretArn' ? config.keySource.arn : undefined;
    if (arn !== undefined) {
      if (!loadSecret) throw new ConfigError(own ? 'UPLOAD_ID_SECRET_ARN' : 'JWT_SECRET_ARN', 'is set but no secret loader was provided');
      return derive(await loadSecret(arn), info);
    }
    if (config.keySource.kind === 'secret') return derive(config.keySource.secret, info);
    throw new ConfigError('UPLOAD_ID_SECRET', 'is required with JWKS_URL for presigned uploads and admin cursors (or set UPLOAD_ID_SECRET_ARN)');
  };
  return () => {
    pending ??= resolve().catch((err: unknown) => {
      pending = undefined; // a failed fetch is retried by the next request
      throw err;
    });
    return pending;
  };
}

/**
 * The codec for a deployment's config. `loadSecret` fetches Secrets Manager values (shared with the
 * verifier, so a secret is fetched once per cold start). Throws ConfigError on first use when no key
 * source exists (JWKS without UPLOAD_ID_SECRET / UPLOAD_ID_SECRET_ARN).
 */
export function uploadIdCodecFor(config: Pick<Config, 'keySource' | 'uploadIdSecret'>, loadSecret?: SecretLoader): UploadIdCodec {
  return createUploadIdCodec(signingKeyFor(config, 'upload-id signing key', loadSecret));
}

/**
 * Signs the operator API's listing cursors (functions/lib/routes/admin-cursor.ts) with a key derived like
 * the upload-id key but with its own HKDF label and MAC context, so neither kind opens as the other.
 */
export function cursorCodecFor(config: Pick<Config, 'keySource' | 'uploadIdSecret'>, loadSecret?: SecretLoader): UploadIdCodec {
  return createSealer(signingKeyFor(config, 'admin cursor signing key', loadSecret), 'admin-cursor.v1.');
}
