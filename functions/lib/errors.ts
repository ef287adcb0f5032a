import { ERRORS, type ErrorSpec } from './contract.js';

/**
 * The one error family handlers throw. Anything that is not an HttpError is mapped to a generic
 * 500 by the top-level wrapper (http.ts) and only logged — never echoed to the caller.
 */
export class HttpError extends Error {
  readonly statusCode: number;
  readonly code: string;
  readonly headers: Readonly<Record<string, string>>;

  constructor(readonly spec: ErrorSpec, options: { headers?: Record<string, string>; cause?: unknown } = {}) {
    super(spec.message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'HttpError';
    this.statusCode = spec.status;
    this.code = spec.code;
    this.headers = options.headers ?? {};
  }
}

export const invalidToken = (cause?: unknown) =>
  new HttpError(ERRORS.invalidToken, { headers: { 'www-authenticate': 'Bearer' }, cause });

/** Storage is slow or throttling; the caller should retry (worker clients back off on 503). */
export const unavailable = (cause?: unknown, retryAfterSeconds = 1) =>
  new HttpError(ERRORS.unavailable, { headers: { 'retry-after': String(retryAfterSeconds) }, cause });
