/**
 * A byte-level TCP proxy for the link between the service's SDK clients and storage. Unlike the HTTP
 * fault proxy (fault-proxy.ts) it never parses or rewrites a request, so SigV4 signatures (which cover
 * the Host header) stay valid. Faults:
 *   latencyMs          every chunk, both directions, is delayed (order preserved);
 *   stall(match)       requests whose bytes match are black-holed: the connection stays open, no answer;
 *   resetBefore(n)     the next n matching requests are answered with a TCP RST before storage sees them;
 *   resetAfter(n)      the next n matching requests reach storage, then the client connection is RST
 *                      when the response arrives: storage acted, the caller never learns the outcome.
 *   refuse(true)       storage is down: every new connection and every request on an open one is RST
 *                      before storage sees it, until refuse(false).
 * `match` is tested against the first chunk of each request (request line + headers), e.g.
 * /x-amz-target: DynamoDB_20120810\.PutItem/i. Loopback only; close() destroys every socket.
 */
import { createConnection, createServer, type Socket } from 'node:net';

type Matcher = RegExp | undefined;

export interface TcpFaultProxy {
  readonly url: string;
  latencyMs: number;
  stall(match?: RegExp): void;
  unstall(): void;
  resetBefore(n: number, match?: RegExp): void;
  resetAfter(n: number, match?: RegExp): void;
  /** While on, storage looks down: connections and requests are reset before reaching it. */
  refuse(on: boolean): void;
  /** Requests (first chunks) seen, as their first line plus the x-amz-target if any. */
  readonly seen: string[];
  readonly stats: { connections: number; resets: number; stalled: number };
  close(): Promise<void>;
}

export async function startTcpFaultProxy(upstream: string): Promise<TcpFaultProxy> {
  const target = new URL(upstream);
  const sockets = new Set<Socket>();
  const stalledSockets = new Set<Socket>();
  const stats = { connections: 0, resets: 0, stalled: 0 };
  const seen: string[] = [];
  let stallMatch: Matcher | null = null;
  const resetsBefore: { left: number; match: Matcher }[] = [];
  const resetsAfter: { left: number; match: Matcher }[] = [];
  const state = { latencyMs: 0, refusing: false };

  const take = (list: { left: number; match: Matcher }[], text: string): boolean => {
    const rule = list.find((r) => r.left > 0 && (r.match === undefined || r.match.test(text)));
    if (!rule) return false;
    rule.left -= 1;
    return true;
  };

  const server = createServer((client) => {
    stats.connections += 1;
    if (state.refusing) {
      stats.resets += 1;
      client.on('error', () => {});
      client.resetAndDestroy();
      return;
    }
    const up = createConnection({ host: target.hostname, port: Number(target.port) });
    sockets.add(client);
    sockets.add(up);
    let dropNextResponse = false;
    let blackHoled = false;
    // Delayed, ordered forwarding in each direction.
    const pipe = (from: Socket, to: Socket, inspect: (chunk: Buffer) => boolean) => {
      let chain = Promise.resolve();
      from.on('data', (chunk: Buffer) => {
        if (!inspect(chunk)) return;
        const ms = state.latencyMs;
        chain = chain.then(() => (ms > 0 ? new Promise((r) => setTimeout(r, ms)) : undefined)).then(() => {
          if (!to.destroyed) to.write(chunk);
        });
      });
    };
    pipe(client, up, (chunk) => {
      if (blackHoled) return false;
      const text = chunk.toString('latin1');
      const isRequestStart = /^[A-Z]+ \S+ HTTP\/1\.[01]\r\n/.test(text);
      if (!isRequestStart) return true; // continuation of a body
      const target = /x-amz-target: *(\S+)/i.exec(text)?.[1];
      seen.push(text.slice(0, text.indexOf('\r\n')) + (target ? ` ${target}` : ''));
      if (stallMatch !== null && (stallMatch === undefined || stallMatch.test(text))) {
        stats.stalled += 1;
        blackHoled = true;
        stalledSockets.add(client);
        return false;
      }
      if (state.refusing || take(resetsBefore, text)) {
        stats.resets += 1;
        client.resetAndDestroy();
        up.destroy();
        return false;
      }
      if (take(resetsAfter, text)) dropNextResponse = true;
      return true;
    });
    pipe(up, client, () => {
      if (!dropNextResponse) return true;
      stats.resets += 1;
      client.resetAndDestroy();
      up.destroy();
      return false;
    });
    const cleanup = () => {
      client.destroy();
      up.destroy();
      sockets.delete(client);
      sockets.delete(up);
      stalledSockets.delete(client);
    };
    client.on('error', cleanup).on('close', cleanup);
    up.on('error', cleanup).on('close', cleanup);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;

  return {
    url: `http://127.0.0.1:${port}`,
    get latencyMs() {
      return state.latencyMs;
    },
    set latencyMs(ms: number) {
      state.latencyMs = ms;
    },
    stall(match) {
      stallMatch = match;
    },
    unstall() {
      stallMatch = null;
      // Connections already black-holed would never answer: end them so clients reconnect.
      for (const s of stalledSockets) s.destroy();
      stalledSockets.clear();
    },
    resetBefore(n, match) {
      resetsBefore.push({ left: n, match });
    },
    resetAfter(n, match) {
      resetsAfter.push({ left: n, match });
    },
    refuse(on) {
      state.refusing = on;
    },
    seen,
    stats,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
