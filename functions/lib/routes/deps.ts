import type { Logger } from '@aws-lambda-powertools/logger';
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { S3Client } from '@aws-sdk/client-s3';
import { createAdminVerifier, createJwtVerifier, createVerifier, type AdminVerifier, type SecretLoader, type TokenScope, type Verifier } from '../auth.js';
import { retentionSettings, type Config } from '../config.js';
import { ERRORS, HEADER_GENERATION } from '../contract.js';
import { HttpError } from '../errors.js';
import { header, type HandlerOptions, type HttpEvent } from '../http.js';
import type { Telemetry } from '../telemetry.js';
import { createStoreContext, type StoreContext, type StoreLimits } from '../store/context.js';
import { cursorCodecFor, uploadIdCodecFor, type UploadIdCodec } from '../upload-id.js';

/** Everything a route handler needs; built once per cold start (runtime.ts) or per local service. */
export interface RouteDeps {
  readonly store: StoreContext;
  readonly verify: Verifier;
  /** Verifies admin tokens (operator API); shares the worker verifier's key source. */
  readonly verifyAdmin: AdminVerifier;
  /** Seals and opens the operator API's listing cursors (HMAC, upload-id.ts `cursorCodecFor`). */
  readonly cursors: UploadIdCodec;
  readonly logger: Logger;
  /** Largest decoded `snapshotJsonl` a direct POST accepts (bytes). */
  readonly maxSnapshotBytes: number;
  /** Storage deadline per request in ms (default 25,000; API Gateway cuts at 30 s). */
  readonly requestDeadlineMs?: number | undefined;
  /** Custom metrics (Lambda: Powertools Metrics, EMF); none locally. */
  readonly telemetry?: Telemetry | undefined;
}

/** The store's size and transfer limits, from the config. */
export function storeLimits(config: Config): StoreLimits {
  return {
    inlineMaxBytes: config.inlineMaxBytes,
    presignTtlSeconds: config.presignTtlSeconds,
    maxUploadBytes: config.maxUploadBytes,
    multipartThresholdBytes: config.multipartThresholdBytes,
    partBytes: config.multipartPartBytes,
    chainMaxExtents: config.chainMaxExtents,
    chainMergeRatio: config.chainMergeRatio,
  };
}

/** Route dependencies from a config and SDK clients: used by the Lambda runtime and the local server alike. */
export function createRouteDeps(
  config: Config,
  clients: { s3: S3Client; ddb: DynamoDBClient; presigner?: S3Client },
  logger: Logger,
  loadSecret?: SecretLoader,
): RouteDeps {
  // Concurrent fetches of one secret share one request (the verifier and the upload-id key at a cold start);
  // the loader itself caches with a bounded age (production: Powertools Parameters, SECRET_MAX_AGE_SECONDS).
  const inFlight = new Map<string, Promise<string>>();
  const load: SecretLoader | undefined =
    loadSecret &&
    ((arn, opts) => {
      if (opts?.forceFetch) return loadSecret(arn, opts);
      let p = inFlight.get(arn);
      if (!p) {
        p = loadSecret(arn).finally(() => inFlight.delete(arn));
        inFlight.set(arn, p);
      }
      return p;
    });
  // One verify path (one JWKS cache, one secret fetch) for worker and admin tokens.
  const jwt = createJwtVerifier(config, load);
  return {
    store: createStoreContext({
      ...clients,
      bucket: config.bucketName,
      table: config.tableName,
      limits: storeLimits(config),
      onCleanupError: (what, err) => logger.warn('cleanup failed', { what, error: String(err) }),
      legacyFenceWindowSeconds: config.legacyFenceWindowSeconds,
      uploadIds: uploadIdCodecFor(config, load),
      retention: retentionSettings(config),
    }),
    verify: createVerifier(config, load, jwt),
    verifyAdmin: createAdminVerifier(config, load, jwt),
    cursors: cursorCodecFor(config, load),
    logger,
    maxSnapshotBytes: config.maxSnapshotBytes,
    requestDeadlineMs: config.requestDeadlineMs,
  };
}

/** Non-secret token fields for the request log line. */
export function scopeFields(scope: TokenScope): Record<string, unknown> {
  return { organizationId: scope.organizationId, agentId: scope.agentId, conversationId: scope.conversationId, runId: scope.runId };
}

/**
 * The reset generation a writer echoes (`x-snapshot-generation`), or undefined when it sends none.
 * Throws the contract's 400 for anything but a non-negative safe integer in decimal.
 */
export function echoedGeneration(event: HttpEvent): number | undefined {
  const raw = header(event, HEADER_GENERATION);
  if (raw === undefined) return undefined;
  const value = raw.trim();
  const n = Number(value);
  if (!/^\d{1,16}$/.test(value) || !Number.isSafeInteger(n)) throw new HttpError(ERRORS.invalidGeneration);
  return n;
}

/** Handler options derived from the deps. */
export function handlerOptions(deps: RouteDeps): HandlerOptions {
  return { deadlineMs: deps.requestDeadlineMs ?? 25_000, telemetry: deps.telemetry };
}
