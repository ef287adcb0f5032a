import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2, Context } from 'aws-lambda';
import type { Logger } from '@aws-lambda-powertools/logger';
import { ERRORS, JSON_CONTENT_TYPE, errorBody, type ErrorSpec } from './contract.js';
import { HttpError, unavailable } from './errors.js';
import { isStoreError } from './store/errors.js';
import { requestMetrics, type Telemetry } from './telemetry.js';

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
  if (e.name === 'StoreError' && e.code === 'CONTENDED') return true;
  if (e.name !== undefined && RETRYABLE_NAMES.has(e.name)) return true;
  if (e.code !== undefined && RETRYABLE_CODES.has(e.code)) return true;
  if (e.$retryable) return true;
  const status = e.$metadata?.httpStatusCode;
  return status !== undefined && (status === 429 || status >= 500);
}

/** After the deadline aborts storage calls, how long the route gets to turn that into its own answer. */
const HARD_STOP_GRACE_MS = 250;

export interface RequestContext {
  route: string;
  /** Extra non-secret fields a route adds (ids, byte counts). Never tokens, bodies or URLs. */
  fields: Record<string, unknown>;
  /** Aborts storage calls at the request deadline, so we answer 503 before API Gateway gives up. */
  signal: AbortSignal;
  /** Milliseconds left until that deadline (≤ 0 once it passed): for work that stops early on its own (erasure). */
  remainingMs: () => number;
}

export interface HandlerOptions {
  /** Upper bound for one request's storage work (API Gateway's own limit is 30 s). */
  deadlineMs: number;
  /** Custom metrics of each request (telemetry.ts `requestMetrics`); none when absent (local service, tests). */
  telemetry?: Telemetry | undefined;
}

/**
 * The one top-level catch. HttpErrors become their documented response; transient storage failures a
 * 503; anything else a generic 500 whose details go to the log only. One structured log line per request.
 */
export function httpHandler(
  route: string,
  logger: Logger,
  fn: (event: HttpEvent, ctx: RequestContext) => Promise<HttpResult>,
  options: HandlerOptions = { deadlineMs: 25_000 },
): LambdaHttpHandler {
  return async (event, context) => {
    const started = performance.now();
    // The Lambda context (function name, version, request id, cold start) on every log line of this invocation.
    if (context?.awsRequestId !== undefined && context.functionName !== undefined) logger.addContext(context as Context);
    // Leave a second for answering; never wait longer than the Lambda itself has left.
    const remaining = context?.getRemainingTimeInMillis?.() ?? Number.POSITIVE_INFINITY;
    const budget = Math.max(1, Math.min(options.deadlineMs, remaining - 1_000));
    const deadline = new AbortController();
    const timer = setTimeout(() => deadline.abort(new DeadlineExceeded(budget)), budget);
    // The hard stop: storage calls abort at the deadline, but anything that ignores the signal must
    // not hold the answer past API Gateway's limit either. The abandoned work may settle later.
    let hardStop: NodeJS.Timeout | undefined;
    const abandoned = new Promise<never>((_, reject) => {
      hardStop = setTimeout(() => reject(new DeadlineExceeded(budget)), budget + HARD_STOP_GRACE_MS);
    });
    const log: RequestContext = { route, fields: {}, signal: deadline.signal, remainingMs: () => budget - (performance.now() - started) };
    let result: HttpResult;
    let failure: unknown;
    try {
      const work = fn(event, log);
      work.catch(() => {}); // settles after the hard stop → no unhandled rejection
      result = await Promise.race([work, abandoned]);
    } catch (err) {
      failure = err;
      if (err instanceof HttpError) result = errorResult(err.spec, err.headers);
      else if (deadline.signal.aborted || isTransientStorageError(err)) result = errorResult(ERRORS.unavailable, unavailable().headers);
      else result = errorResult(ERRORS.internal);
    } finally {
      clearTimeout(timer);
      clearTimeout(hardStop);
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
    try {
      options.telemetry?.emit(
        requestMetrics({
          route,
          status: result.statusCode,
          code: failure instanceof HttpError ? failure.code : undefined,
          bytesIn: entry.bytesIn,
          bytesOut: entry.bytesOut,
          integrityFailure: isStoreError(failure, 'INTEGRITY'),
        }),
      );
    } catch (err) {
      logger.warn('metrics failed', { error: String(err) }); // never fails an answer
    }
    if (result.statusCode >= 500) logger.error('request failed', { ...entry, error: describe(failure) });
    else logger.info('request', failure instanceof HttpError ? { ...entry, code: failure.code } : entry);
    return result;
  };
}

export class DeadlineExceeded extends Error {
  override name = 'DeadlineExceeded';
  constructor(ms: number) {
    super(`request deadline of ${ms} ms exceeded`);
  }
}

/** Error details for logs: name, message, stack, SDK metadata — never request headers or bodies. */
function describe(err: unknown): Record<string, unknown> {
  if (!(err instanceof Error)) return { value: String(err) };
  const meta = (err as { $metadata?: unknown }).$metadata;
  return { name: err.name, message: err.message, stack: err.stack, ...(meta !== undefined && { awsMetadata: meta }) };
}
