import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ERRORS, errorBody, JSON_CONTENT_TYPE } from '../functions/lib/contract.js';
import type { HttpEvent, LambdaHttpHandler } from '../functions/lib/http.js';

/**
 * A small HTTP → API Gateway HTTP API (payload v2) adapter: local development and tests only.
 * It mimics what API Gateway and Lambda do to a request before the handler sees it: lower-cased
 * headers joined with ",", text bodies passed as strings and anything else base64-encoded, and the
 * 6 MB Lambda request payload limit.
 */
export type RouteTable = Readonly<Record<string, LambdaHttpHandler>>;

/** Lambda's synchronous invocation payload limit (the whole event, headers included). */
export const LAMBDA_PAYLOAD_LIMIT = 6 * 1024 * 1024;

const TEXT_TYPES = /^(text\/|application\/(json|x-ndjson|xml|javascript|x-www-form-urlencoded)\b|application\/[\w.+-]*\+json\b)/i;
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

export interface AdapterOptions {
  host?: string;
  port?: number;
  /** Called with each response's status for request logging in the dev server (optional). */
  onResponse?: (method: string, path: string, status: number) => void;
}

export async function startAdapter(routes: RouteTable, opts: AdapterOptions = {}): Promise<{ server: Server; url: string; close(): Promise<void> }> {
  const server = createServer((req, res) => {
    void handle(routes, req, res, opts).catch((err: unknown) => {
      // The handlers catch their own errors; this is a bug in the adapter itself.
      console.error('adapter error', err);
      if (!res.headersSent) send(res, 500, { 'content-type': JSON_CONTENT_TYPE }, JSON.stringify(errorBody(ERRORS.internal)));
      else res.destroy();
    });
  });
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => resolve());
  });
  const { address, port } = server.address() as AddressInfo;
  const url = `http://${address.includes(':') ? `[${address}]` : address}:${port}`;
  return {
    server,
    url,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

async function handle(routes: RouteTable, req: IncomingMessage, res: ServerResponse, opts: AdapterOptions): Promise<void> {
  const method = req.method ?? 'GET';
  const url = new URL(req.url ?? '/', 'http://localhost');
  const routeKey = `${method} ${url.pathname}`;
  const handler = routes[routeKey];
  if (!handler) {
    req.resume();
    send(res, 404, { 'content-type': JSON_CONTENT_TYPE }, JSON.stringify(errorBody(ERRORS.notFound)));
    opts.onResponse?.(method, url.pathname, 404);
    return;
  }

  const raw = await readBody(req, LAMBDA_PAYLOAD_LIMIT);
  if (raw === undefined) {
    // Lambda rejects such an invocation before the handler runs; answer with the contract's 413.
    send(res, 413, { 'content-type': JSON_CONTENT_TYPE, connection: 'close' }, JSON.stringify(errorBody(ERRORS.tooLarge)));
    opts.onResponse?.(method, url.pathname, 413);
    return;
  }

  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (value !== undefined) headers[name.toLowerCase()] = Array.isArray(value) ? value.join(',') : value;
  }
  let body: string | undefined;
  let isBase64Encoded = false;
  if (raw.length > 0) {
    const textual = TEXT_TYPES.test(headers['content-type'] ?? '') && !headers['content-encoding'];
    let text: string | undefined;
    if (textual) {
      try {
        text = utf8.decode(raw);
      } catch {
        text = undefined;
      }
    }
    if (text !== undefined) body = text;
    else {
      body = raw.toString('base64');
      isBase64Encoded = true;
    }
  }

  const now = new Date();
  const requestId = randomUUID();
  const event: HttpEvent = {
    version: '2.0',
    routeKey,
    rawPath: url.pathname,
    rawQueryString: url.search.slice(1),
    headers,
    ...(url.search && { queryStringParameters: Object.fromEntries(url.searchParams) }),
    requestContext: {
      accountId: 'local',
      apiId: 'local',
      domainName: headers['host'] ?? 'localhost',
      domainPrefix: 'local',
      http: {
        method,
        path: url.pathname,
        protocol: `HTTP/${req.httpVersion}`,
        sourceIp: req.socket.remoteAddress ?? '127.0.0.1',
        userAgent: headers['user-agent'] ?? '',
      },
      requestId,
      routeKey,
      stage: '$default',
      time: now.toUTCString(),
      timeEpoch: now.getTime(),
    },
    ...(body !== undefined && { body }),
    isBase64Encoded,
  };

  const result = await handler(event, { awsRequestId: requestId });
  const payload = result.body === undefined ? undefined : Buffer.from(result.body, result.isBase64Encoded ? 'base64' : 'utf8');
  send(res, result.statusCode, { ...result.headers, 'x-request-id': requestId }, payload);
  opts.onResponse?.(method, url.pathname, result.statusCode);
}

function send(res: ServerResponse, status: number, headers: Record<string, string | number | boolean>, body?: string | Buffer): void {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) out[k] = String(v);
  if (body !== undefined && status !== 304 && status !== 204) {
    out['content-length'] = String(Buffer.byteLength(body));
    res.writeHead(status, out);
    res.end(body);
  } else {
    res.writeHead(status, out);
    res.end();
  }
}

/** Reads the whole body, or returns undefined (and drains) once it exceeds `limit` bytes. */
async function readBody(req: IncomingMessage, limit: number): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  let tooLarge = false;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) tooLarge = true;
    if (!tooLarge) chunks.push(chunk);
  }
  return tooLarge ? undefined : Buffer.concat(chunks, size);
}
