import type { Context } from 'aws-lambda';
import type { HttpEvent } from '../../functions/lib/http.js';

/** A synthetic API Gateway HTTP API (payload v2) event, as the adapter or API Gateway would build it. */
export function apiEvent(
  method: string,
  path: string,
  opts: { headers?: Record<string, string>; body?: string; isBase64Encoded?: boolean } = {},
): HttpEvent {
  const now = Date.now();
  return {
    version: '2.0',
    routeKey: `${method} ${path}`,
    rawPath: path,
    rawQueryString: '',
    headers: opts.headers ?? {},
    requestContext: {
      accountId: 'test',
      apiId: 'test',
      domainName: 'test.local',
      domainPrefix: 'test',
      http: { method, path, protocol: 'HTTP/1.1', sourceIp: '127.0.0.1', userAgent: 'test' },
      requestId: `req-${now}`,
      routeKey: `${method} ${path}`,
      stage: '$default',
      time: new Date(now).toUTCString(),
      timeEpoch: now,
    },
    ...(opts.body !== undefined && { body: opts.body }),
    isBase64Encoded: opts.isBase64Encoded ?? false,
  };
}

/** A Lambda context whose remaining time is fixed (the deadline guard reads it). */
export function lambdaContext(remainingMs: number): Partial<Context> {
  return { awsRequestId: 'ctx-test', getRemainingTimeInMillis: () => remainingMs };
}
