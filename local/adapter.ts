import { randomUUID } from 'node:crypto';
import { createServer, STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { AddressInfo } from 'node:net';
import { ERRORS, errorBody, JSON_CONTENT_TYPE, type ErrorSpec } from '../functions/lib/contract.js';
import type { HttpEvent, LambdaHttpHandler } from '../functions/lib/http.js';

/**
 * A small HTTP → API Gateway HTTP API (payload v2) adapter: local development and tests only.
 * It mimics what API Gateway and Lambda do to a request before the handler sees it: lower-cased
 * headers joined with ",", text bodies passed as strings and anything else base64-encoded, and the
 * 6 MB Lambda request payload limit.
 */
export type RouteTable = Readonly<Record<string, LambdaHttpHandler>>;

/**
 * Lambda's synchronous invocation payload limit, in bytes (6,291,456): it applies to the serialized
 * event (`JSON.stringify(event)`, headers included), in which API Gateway has JSON-escaped a text body
 * once more or base64-encoded a binary one — not to the raw HTTP body.
 */
export const LAMBDA_PAYLOAD_LIMIT = 6 * 1024 * 1024;

/** The adapter's answers to requests it cannot turn into an event (defined in the contract). */
export const BAD_REQUEST: ErrorSpec = ERRORS.badRequest;
/** Headers larger than Node's limit (16 KiB by default). */
export const HEADERS_TOO_LARGE: ErrorSpec = ERRORS.headersTooLarge;
/** The client took longer than `requestTimeout` / `headersTimeout` to send its request. */
export const REQUEST_TIMEOUT: ErrorSpec = ERRORS.requestTimeout;

/**
 * Server timeouts, in milliseconds. A client reuses an idle keep-alive connection for up to its own
 * idle timeout (undici, i.e. Node's fetch: 4 s; browsers and SDKs up to 60 s). If the server closes
 * an idle connection first, a request already on its way meets a closing socket: ECONNRESET. So the
 * server keeps idle connections longer than any such client (65 s, as AWS load balancers recommend
 * for backends behind a 60 s idle timeout), and `headersTimeout` must exceed `keepAliveTimeout` (else
 * the server may cut a reused connection whose next request's headers are slow to arrive).
 * `requestTimeout` bounds a whole request (6 MB at most) and must be ≥ `headersTimeout`.
 */
export const SERVER_TIMEOUTS = Object.freeze({ keepAliveTimeout: 65_000, headersTimeout: 66_000, requestTimeout: 120_000 });

/**
 * Gives an already created server (the emulators' own) the keep-alive timeouts of
 * {@link SERVER_TIMEOUTS}: idle connections kept 65 s, headers 66 s. Its requestTimeout is left alone
 * (Node's 300 s default; presigned uploads of up to 1 GiB go to s3rver).
 */
export function applyKeepAliveTimeouts(server: Server): void {
  server.keepAliveTimeout = SERVER_TIMEOUTS.keepAliveTimeout;
  server.headersTimeout = SERVER_TIMEOUTS.headersTimeout;
}

const TEXT_TYPES = /^(text\/|application\/(json|x-ndjson|xml|javascript|x-www-form-urlencoded)\b|application\/[\w.+-]*\+json\b)/i;
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

export interface AdapterOptions {
  host?: string;
  port?: number;
  /** Called with each response's status for request logging in the dev server (optional). */
  onResponse?: (method: string, path: string, status: number) => void;
}

/**
 * Starts the adapter: an HTTP/1.1 server on `opts.host` (default 127.0.0.1) and `opts.port` (default
 * 0 = any free port) that turns each request into an API Gateway v2 event for the handler of its
 * route (`"<METHOD> <path>"` in `routes`). Requests no handler can see get the contract's JSON errors:
 * unknown route 404, event over Lambda's 6 MB limit 413, unparsable request 400 ({@link BAD_REQUEST}).
 * Resolves once listening, with the server, its base URL (`http://host:port`, no trailing slash) and
 * `close()` (stops accepting and drops open connections). Rejects if the address cannot be bound.
 */
export async function startAdapter(routes: RouteTable, opts: AdapterOptions = {}): Promise<{ server: Server; url: string; close(): Promise<void> }> {
  const server = createServer({ requestTimeout: SERVER_TIMEOUTS.requestTimeout, headersTimeout: SERVER_TIMEOUTS.headersTimeout }, (req, res) => {
    void handle(routes, req, res, opts).catch((err: unknown) => {
      // The handlers catch their own errors; this is a bug in the adapter itself.
      console.error('adapter error', err);
      if (!res.headersSent) send(res, 500, { 'content-type': JSON_CONTENT_TYPE }, JSON.stringify(errorBody(ERRORS.internal)));
      else res.destroy();
    });
  });
  server.keepAliveTimeout = SERVER_TIMEOUTS.keepAliveTimeout;
  // Requests Node's parser refuses before any handler runs: answer in the contract's JSON shape
  // instead of Node's bare "400 Bad Request", then close (the connection's framing is unknown).
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const spec =
      err.code === 'HPE_HEADER_OVERFLOW' ? HEADERS_TOO_LARGE : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? REQUEST_TIMEOUT : BAD_REQUEST;
    const body = JSON.stringify(errorBody(spec));
    socket.end(
      `HTTP/1.1 ${spec.status} ${STATUS_CODES[spec.status] ?? ''}\r\ncontent-type: ${JSON_CONTENT_TYPE}\r\n` +
        `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
    );
  });
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
  const url = parseTarget(req.url);
  if (url === undefined) {
    // API Gateway refuses such a request itself; no handler ever sees it.
    req.resume();
    send(res, BAD_REQUEST.status, { 'content-type': JSON_CONTENT_TYPE }, JSON.stringify(errorBody(BAD_REQUEST)));
    opts.onResponse?.(method, '(unparsable)', BAD_REQUEST.status);
    return;
  }
  const matched = matchRoute(routes, method, url.pathname);
  if (!matched) {
    req.resume();
    send(res, 404, { 'content-type': JSON_CONTENT_TYPE }, JSON.stringify(errorBody(ERRORS.notFound)));
    opts.onResponse?.(method, url.pathname, 404);
    return;
  }

  const { handler, routeKey, pathParameters } = matched;
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
    ...(url.search && { queryStringParameters: queryParameters(url.searchParams) }),
    ...(pathParameters && { pathParameters }),
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

  // Lambda counts the serialized event, in which a text body is JSON-escaped once more (a quote-heavy
  // transcript can double) and a binary one is base64 (4/3): the raw body size says too little.
  if (Buffer.byteLength(JSON.stringify(event)) > LAMBDA_PAYLOAD_LIMIT) {
    send(res, 413, { 'content-type': JSON_CONTENT_TYPE }, JSON.stringify(errorBody(ERRORS.tooLarge)));
    opts.onResponse?.(method, url.pathname, 413);
    return;
  }

  const result = await handler(event, { awsRequestId: requestId });
  const payload = result.body === undefined ? undefined : Buffer.from(result.body, result.isBase64Encoded ? 'base64' : 'utf8');
  send(res, result.statusCode, { ...result.headers, 'x-request-id': requestId }, payload);
  opts.onResponse?.(method, url.pathname, result.statusCode);
}

/**
 * The handler for `method` and `path`: the route table entry `"<METHOD> <path>"`, or one whose path has
 * `{name}` segments (API Gateway path parameters: each matches one non-empty segment, percent-decoded).
 * An exact entry wins over a parameterised one. Undefined when no route matches.
 */
export function matchRoute(
  routes: RouteTable,
  method: string,
  path: string,
): { handler: LambdaHttpHandler; routeKey: string; pathParameters: Record<string, string> | undefined } | undefined {
  const exact = `${method} ${path}`;
  const direct = routes[exact];
  if (direct) return { handler: direct, routeKey: exact, pathParameters: undefined };
  const segments = path.split('/');
  for (const [routeKey, handler] of Object.entries(routes)) {
    const space = routeKey.indexOf(' ');
    if (routeKey.slice(0, space) !== method || !routeKey.includes('{')) continue;
    const template = routeKey.slice(space + 1).split('/');
    if (template.length !== segments.length) continue;
    const params: Record<string, string> = {};
    const ok = template.every((t, i) => {
      const seg = segments[i]!;
      const name = /^\{([A-Za-z0-9_]+)\}$/.exec(t)?.[1];
      if (name === undefined) return t === seg;
      if (seg === '') return false;
      try {
        params[name] = decodeURIComponent(seg);
      } catch {
        params[name] = seg;
      }
      return true;
    });
    if (ok) return { handler, routeKey, pathParameters: params };
  }
  return undefined;
}

/** API Gateway's `queryStringParameters`: a name given more than once has its values joined with `,`. */
function queryParameters(params: URLSearchParams): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of params) out[k] = Object.hasOwn(out, k) ? `${out[k]},${v}` : v;
  return out;
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

/**
 * The request target as a URL, or undefined when it cannot be parsed (`//%zz`, `http://[bad/`, …).
 * Origin-form targets are resolved against a fixed base; only the path and query are used.
 */
function parseTarget(target: string | undefined): URL | undefined {
  try {
    return new URL(target ?? '/', 'http://localhost');
  } catch {
    return undefined;
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
