/**
 * A loopback HTTP proxy that injects faults between a client and a real service, one decision per
 * request. Faults are queued (`enqueue`) or decided by a `plan` callback; with neither, requests
 * pass through untouched.
 *
 * Everything is bounded: request/response bodies are capped, stalls end after `maxStallMs`, and
 * `close()` destroys every socket and timer it created. It listens on 127.0.0.1 only.
 */
import { createServer, request as httpRequest, Agent, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

export type Fault =
  /** Forward to the service and relay its answer unchanged. */
  | { kind: 'pass' }
  /** Forward after waiting `ms`. */
  | { kind: 'delay'; ms: number }
  /** Answer immediately without contacting the service (e.g. 503 + Retry-After). */
  | { kind: 'status'; status: number; headers?: Record<string, string>; body?: string }
  /** Destroy the client connection as soon as the request arrives; the service never sees it. */
  | { kind: 'drop' }
  /** Accept the request and never answer; the socket is destroyed after `ms` (≤ maxStallMs). */
  | { kind: 'stall'; ms?: number }
  /** Forward (the service commits), then destroy the client connection instead of answering. */
  | { kind: 'drop-after-upstream' }
  /**
   * Forward, then send the status line, headers and only part of the body before closing.
   * `at`: a fraction in (0,1) of the body, or a byte count ≥ 1 (default 0.5).
   * `framing`: 'content-length' keeps the original length header (the client can detect the cut);
   * 'close' drops it and ends the connection, so the cut looks like a clean end of body.
   */
  | { kind: 'cut-body'; at?: number; framing?: 'content-length' | 'close' }
  /** Forward, then relay the body with one byte flipped and every header unchanged. */
  | { kind: 'corrupt-body' };

export interface ProxiedRequest {
  n: number;
  method: string;
  path: string;
  fault: Fault['kind'];
  upstreamStatus?: number;
}

export interface FaultProxyOptions {
  /** Base URL of the real service, e.g. 'http://127.0.0.1:1234'. */
  upstream: string;
  /** Decides the fault for a request when the queue is empty. */
  plan?: (req: { n: number; method: string; path: string }) => Fault | undefined;
  maxStallMs?: number;
  maxBodyBytes?: number;
}

export interface FaultProxy {
  readonly url: string;
  /** Faults for the next requests, in order (one per request). */
  enqueue(...faults: Fault[]): void;
  /** Every request seen, in arrival order. */
  readonly requests: readonly ProxiedRequest[];
  close(): Promise<void>;
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'proxy-connection', 'upgrade', 'te', 'trailer']);

function endToEnd(headers: IncomingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(headers)) {
    if (v !== undefined && !HOP_BY_HOP.has(k)) out[k] = v;
  }
  return out;
}

async function readBounded(stream: IncomingMessage, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new Error(`body larger than ${limit} bytes`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

export async function startFaultProxy(opts: FaultProxyOptions): Promise<FaultProxy> {
  const maxStallMs = opts.maxStallMs ?? 10_000;
  const maxBodyBytes = opts.maxBodyBytes ?? 64 * 1024 * 1024;
  const upstream = new URL(opts.upstream);
  const agent = new Agent({ keepAlive: false });
  const queue: Fault[] = [];
  const requests: ProxiedRequest[] = [];
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  let n = 0;

  function later(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
  }

  async function forward(req: IncomingMessage, body: Buffer): Promise<{ status: number; headers: IncomingHttpHeaders; body: Buffer }> {
    return new Promise((resolve, reject) => {
      const up = httpRequest(
        {
          host: upstream.hostname,
          port: upstream.port,
          method: req.method,
          path: req.url,
          agent,
          headers: { ...endToEnd(req.headers), host: upstream.host, 'content-length': String(body.length) },
        },
        (res) => {
          readBounded(res, maxBodyBytes).then(
            (b) => resolve({ status: res.statusCode ?? 502, headers: res.headers, body: b }),
            reject,
          );
        },
      );
      up.on('error', reject);
      up.end(body);
    });
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const socket = req.socket;
    const info = { n: ++n, method: req.method ?? 'GET', path: req.url ?? '/' };
    const fault: Fault = queue.shift() ?? opts.plan?.(info) ?? { kind: 'pass' };
    const record: ProxiedRequest = { ...info, fault: fault.kind };
    requests.push(record);

    const body = await readBounded(req, maxBodyBytes);

    switch (fault.kind) {
      case 'drop':
        socket.destroy();
        return;
      case 'stall':
        later(Math.min(fault.ms ?? maxStallMs, maxStallMs), () => socket.destroy());
        return;
      case 'status':
        res.writeHead(fault.status, { 'content-type': 'application/json', ...fault.headers });
        res.end(fault.body ?? JSON.stringify({ error: 'Injected fault', code: 'injected' }));
        return;
      case 'delay':
        await new Promise<void>((r) => later(fault.ms, r));
        break;
      default:
        break;
    }

    const up = await forward(req, body);
    record.upstreamStatus = up.status;
    const headers = endToEnd(up.headers);

    switch (fault.kind) {
      case 'drop-after-upstream':
        socket.destroy();
        return;
      case 'cut-body': {
        const at = fault.at ?? 0.5;
        const cut = Math.max(0, Math.min(up.body.length - 1, at < 1 ? Math.floor(up.body.length * at) : Math.floor(at)));
        const part = up.body.subarray(0, cut);
        if ((fault.framing ?? 'content-length') === 'content-length') {
          res.writeHead(up.status, { ...headers, 'content-length': String(up.body.length) });
          res.write(part, () => socket.destroy());
        } else {
          // Raw bytes on the socket: no length, no chunking — the body ends when the connection does.
          const lines = [`HTTP/1.1 ${up.status} X`];
          for (const [k, v] of Object.entries(headers)) {
            if (k === 'content-length') continue;
            for (const one of Array.isArray(v) ? v : [v]) lines.push(`${k}: ${one}`);
          }
          lines.push('connection: close', '', '');
          socket.write(lines.join('\r\n'));
          socket.end(part);
        }
        return;
      }
      case 'corrupt-body': {
        const copy = Buffer.from(up.body);
        if (copy.length > 0) {
          const i = Math.floor(copy.length / 2);
          copy[i] = copy[i]! ^ 0x20;
        }
        res.writeHead(up.status, { ...headers, 'content-length': String(copy.length) });
        res.end(copy);
        return;
      }
      default:
        res.writeHead(up.status, { ...headers, 'content-length': String(up.body.length) });
        res.end(up.body);
    }
  }

  const server = createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) {
        res.writeHead(502, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: 'Proxy error', code: 'proxy_error' }));
      } else {
        req.socket.destroy();
      }
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  if (!addr || typeof addr === 'string') throw new Error('proxy did not bind');

  return {
    url: `http://127.0.0.1:${addr.port}`,
    enqueue: (...faults) => {
      queue.push(...faults);
    },
    requests,
    close: async () => {
      for (const t of timers) clearTimeout(t);
      timers.clear();
      for (const s of sockets) s.destroy();
      agent.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
