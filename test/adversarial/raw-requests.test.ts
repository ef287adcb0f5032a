import { connect } from 'node:net';
import { describe, expect, it } from 'vitest';
import { HEADER_GENERATION } from '../../functions/lib/contract.js';
import { freshScope, useLocalService } from '../helpers/service.js';

/**
 * Adversarial: raw requests to the real local service (`npm start`'s stack). No request may crash it
 * or get a 5xx for what is a client error; after every request the service still answers normally.
 */
const ctx = useLocalService();

/** Sends raw bytes, resolves with the status of the first response (0 if the server closed without one). */
function raw(request: string | Buffer): Promise<{ status: number; text: string }> {
  const { hostname, port } = new URL(ctx.svc.url);
  return new Promise((resolve) => {
    const s = connect(Number(port), hostname, () => s.write(request));
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString('latin1');
    });
    const done = () => resolve({ status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(buf)?.[1] ?? 0), text: buf });
    s.on('end', done);
    s.on('error', done);
    s.setTimeout(5_000, () => s.destroy());
    s.on('close', done);
  });
}

const P = '/worker/transcript/snapshot';

describe('odd request targets, methods and framing', () => {
  const cases: [string, string | Buffer][] = [
    ['asterisk', 'OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'],
    ['CONNECT', 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nConnection: close\r\n\r\n'],
    ['absolute-form', `GET http://x${P} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`],
    ['bad percent in query', `GET ${P}?a=%ZZ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`],
    ['percent-encoded path', `GET /worker%2Ftranscript%2Fsnapshot HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`],
    ['NUL in path', `GET ${P}%00 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`],
    ['dot segments', `GET /a/../worker/./transcript/snapshot HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`],
    ['unknown method', `FROB ${P} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`],
    ['HTTP/1.0 no host', `GET ${P} HTTP/1.0\r\n\r\n`],
    ['bad chunk', `POST ${P} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nabc\r\n0\r\n\r\n`],
    ['CL and TE', `POST ${P} HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n`],
    ['short body', `POST ${P} HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{}`],
    ['two generation headers', `POST ${P} HTTP/1.1\r\nHost: x\r\n${HEADER_GENERATION}: 0\r\n${HEADER_GENERATION}: 1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}`],
    ['latin1 header', Buffer.concat([Buffer.from(`GET ${P} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n`, 'latin1')])],
    ['huge target', `GET ${P}?${'a'.repeat(70_000)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`],
    ['gzip lie', `POST ${P} HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nContent-Type: application/json\r\nContent-Length: 4\r\nConnection: close\r\n\r\n{\x00}\x01`],
  ];
  for (const [name, request] of cases) {
    it(`${name}: no 5xx, and the service still answers afterwards`, async () => {
      const res = await raw(request);
      expect(res.status, res.text.slice(0, 300)).toBeLessThan(500);
      const after = await fetch(ctx.api.url);
      expect(after.status).toBe(401);
      await after.body?.cancel();
    });
  }

  it('a valid request with two x-snapshot-generation headers is refused (400 invalid_generation), nothing stored', async () => {
    const { api } = ctx;
    const scope = freshScope('two-gen');
    const token = await api.token(scope, { runId: 1 });
    const body = JSON.stringify({ terminalStatus: 'completed', snapshotJsonl: 'x\n', runId: 1 });
    const res = await raw(
      `POST ${P} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\n${HEADER_GENERATION}: 0\r\n${HEADER_GENERATION}: 0\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
    );
    expect(res.status).toBe(400);
    expect(res.text).toContain('invalid_generation');
    expect(await api.hydrate(scope)).toBeUndefined();
  });
});
