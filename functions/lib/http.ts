import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2, Context } from 'aws-lambda';
import type { Logger } from '@aws-lambda-powertools/logger';
import { ERRORS, JSON_CONTENT_TYPE, errorBody, type ErrorSpec } from './contract.js';
import { HttpError, unavailable } from './errors.js';

export type HttpEvent = APIGatewayProxyEventV2;
export type HttpResult = APIGatewayProxyStructuredResultV2 & { statusCode: number; headers: Record<string, string> };
export type LambdaHttpHandler = (event: HttpEvent, context?: Partial<Context>) => Promise<HttpResult>;

export function json(statusCode: number, body: unknown, headers: Record<string, string> = {}): HttpResult {
  return { statusCode, headers: { 'content-type': JSON_CONTENT_TYPE, 'cache-control': 'no-store', ...headers }, body: JSON.stringify(body) };
}

export function errorResult(spec: ErrorSpec, headers: Record<string, string> = {}): HttpResult {
  return json(spec.status, errorBody(spec), headers);
}

/** Case-insensitive header lookup (API Gateway v2 lower-cases names, but be liberal in what we accept). */
export function header(event: HttpEvent, name: string): string | undefined {
  const headers = event.headers ?? {};
  const direct = headers[name];
  if (direct !== undefined) return direct;
  const lower = name.toLowerCase();
  for (const [k, v] of Object.entries(headers)) if (k.toLowerCase() === lower) return v;
  return undefined;
}

const RETRYABLE_NAMES = new Set([
  'ThrottlingException',
  'ProvisionedThroughputExceededException',
  'RequestLimitExceeded',
  'SlowDown',
  'ServiceUnavailable',
  'InternalServerError',
  'InternalError',
  'TimeoutError',
  'RequestTimeout',
  'RequestTimeoutException',
]);
const RETRYABLE_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'ETIMEDOUT', 'EPIPE', 'EAI_AGAIN', 'ENOTFOUND', 'ECONNABORTED']);

/**
 * Storage that is throttling, timing out or unreachable after the SDK's own retries is a transient
 * condition: answer 503 + Retry-After so workers back off and retry, instead of a 500 they give up on.
 */
export function isTransientStorageError(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false;
  const e = err as { name?: string; code?: string; $retryable?: unknown; $metadata?: { httpStatusCode?: number } };
  if (e.name === 'AbortError') return true;
  if (e.name !== undefined && RETRYABLE_NAMES.has(e.name)) return true;
  if (e.code !== undefined && RETRYABLE_CODES.has(e.code)) return true;
  if (e.$retryable) return true;
  const status = e.$metadata?.httpStatusCode;
  return status !== undefined && (status === 429 || status >= 500);
}

export interface RequestLog {
  route: string;
  /** Extra non-secret fields a route adds (ids, byte counts). Never tokens or bodies. */
  fields: Record<string, unknown>;
}

/**
 * The one top-level catch. HttpErrors become their documented response; transient storage failures a
 * 503; anything else a generic 500 whose details go to the log only. One structured log line per request.
 */
export function httpHandler(route: string, logger: Logger, fn: (event: HttpEvent, log: RequestLog) => Promise<HttpResult>): LambdaHttpHandler {
  return async (event, context) => {
    const started = performance.now();
    const log: RequestLog = { route, fields: {} };
    let result: HttpResult;
    let failure: unknown;
    try {
      result = await fn(event, log);
    } catch (err) {
      failure = err;
      if (err instanceof HttpError) result = errorResult(err.spec, err.headers);
      else if (isTransientStorageError(err)) result = errorResult(ERRORS.unavailable, unavailable().headers);
      else result = errorResult(ERRORS.internal);
    }
    const entry = {
      requestId: context?.awsRequestId ?? event.requestContext?.requestId,
      route,
      status: result.statusCode,
      latencyMs: Math.round((performance.now() - started) * 100) / 100,
      bytesIn: event.body?.length ?? 0,
      bytesOut: typeof result.body === 'string' ? result.body.length : 0,
      ...log.fields,
    };
    if (result.statusCode >= 500) logger.error('request failed', { ...entry, error: describe(failure) });
    else logger.info('request', failure instanceof HttpError ? { ...entry, code: failure.code } : entry);
    return result;
  };
}

/** Error details for logs: name, message, stack, SDK metadata — never request headers or bodies. */
function describe(err: unknown): Record<string, unknown> {
  if (!(err instanceof Error)) return { value: String(err) };
  const meta = (err as { $metadata?: unknown }).$metadata;
  return { name: err.name, message: err.message, stack: err.stack, ...(meta !== undefined && { awsMetadata: meta }) };
}
