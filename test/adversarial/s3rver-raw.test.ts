import { connect } from 'node:net';
import { describe, expect, it } from 'vitest';
import { freshScope, useLocalService } from '../helpers/service.js';

/**
 * Adversarial: hostile requests straight at the embedded S3 emulator (in-process with `npm start`:
 * an uncaught error there kills the whole service). After each, the service must still answer.
 */
const ctx = useLocalService();

function raw(request: string): Promise<string> {
  const { hostname, port } = new URL(ctx.svc.emulators!.s3Endpoint);
  return new Promise((resolve) => {
    const s = connect(Number(port), hostname, () => s.write(request));
    let buf = '';
    s.on('data', (d) => (buf += d.toString('latin1')));
    s.setTimeout(5_000, () => s.destroy());
    s.on('close', () => resolve(buf));
    s.on('error', () => resolve(buf));
  });
}

describe('raw requests to the S3 emulator', () => {
  const B = () => ctx.svc.config.bucketName;
  const cases: [string, () => string][] = [
    ['bad range', () => `GET /${B()}/snapshots/x HTTP/1.1\r\nHost: x\r\nRange: bytes=zz-1\r\nConnection: close\r\n\r\n`],
    ['huge part number', () => `PUT /${B()}/uploads/x?partNumber=99999999999999999999&uploadId=abc HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx`],
    ['negative part number', () => `PUT /${B()}/uploads/x?partNumber=-1&uploadId=abc HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx`],
    ['bad complete xml', () => `POST /${B()}/uploads/x?uploadId=abc HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\nConnection: close\r\n\r\n<<<>>>!!!`],
    ['complete with traversal part', () => `POST /${B()}/uploads/x?uploadId=..%2F..%2F HTTP/1.1\r\nHost: x\r\nContent-Length: 96\r\nConnection: close\r\n\r\n<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>"a"</ETag></Part></CompleteMultipartUpload>`.slice(0)],
    ['copy from missing', () => `PUT /${B()}/snapshots/y HTTP/1.1\r\nHost: x\r\nx-amz-copy-source: /${B()}/nope%ZZ\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`],
    ['copy from traversal', () => `PUT /${B()}/snapshots/y HTTP/1.1\r\nHost: x\r\nx-amz-copy-source: /${B()}/../../etc/passwd\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`],
    ['multi-delete bad xml', () => `POST /${B()}?delete HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\n<Dele`],
    ['key with NUL', () => `PUT /${B()}/uploads/a%00b HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx`],
    ['key traversal', () => `PUT /${B()}/..%2F..%2Fescape HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx`],
    ['list with bad max-keys', () => `GET /${B()}?list-type=2&max-keys=-5&start-after=%ZZ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`],
    ['bad auth header', () => `GET /${B()}/snapshots/x HTTP/1.1\r\nHost: x\r\nAuthorization: AWS4-HMAC-SHA256 garbage\r\nConnection: close\r\n\r\n`],
    ['presign garbage', () => `GET /${B()}/snapshots/x?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=%ZZ&X-Amz-Date=x&X-Amz-Expires=-1&X-Amz-SignedHeaders=host&X-Amz-Signature=00 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`],
  ];
  for (const [name, request] of cases) {
    it(`${name}: the service survives`, async () => {
      await raw(request());
      const { api } = ctx;
      const scope = freshScope('s3raw');
      expect((await api.write(scope, 1, 'alive\n')).status).toBe(200);
      expect((await api.hydrate(scope))?.body.toString()).toBe('alive\n');
    });
  }
});
