import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { startEmulators } from '../../local/emulators.js';
import { startLocalService } from '../../local/service.js';
import { Api, freshScope } from '../helpers/service.js';

/** The LocalStack / AWS mode of the local server: storage endpoints given only through its `env`. */
describe('local service against external endpoints (AWS_ENDPOINT_URL_*)', () => {
  it('uses the endpoints and credentials from the env it is given, not the embedded emulators', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'external-'));
    const emu = await startEmulators({ dataDir: dir, persistDynamo: false });
    expect(process.env['AWS_ENDPOINT_URL_S3']).toBeUndefined();
    const svc = await startLocalService({
      env: {
        AWS_REGION: 'us-east-1',
        AWS_ENDPOINT_URL_S3: emu.s3Endpoint,
        AWS_ENDPOINT_URL_DYNAMODB: emu.dynamodbEndpoint,
        AWS_ACCESS_KEY_ID: 'S3RVER',
        AWS_SECRET_ACCESS_KEY: 'S3RVER',
        BUCKET_NAME: 'external-bucket',
        TABLE_NAME: 'external-table',
        JWT_SECRET: 'external-mode-secret-external-mode-secret',
      },
    });
    try {
      expect(svc.emulators).toBeUndefined();
      const api = new Api(svc.url, (c) => svc.mintToken(c));
      const scope = freshScope();
      expect((await api.write(scope, 1, 'over there\n')).status).toBe(200);
      expect((await api.hydrate(scope))?.body.toString()).toBe('over there\n');
      const s3 = new S3Client({
        region: 'us-east-1',
        endpoint: emu.s3Endpoint,
        forcePathStyle: true,
        credentials: emu.credentials,
      });
      const listed = await s3.send(new ListObjectsV2Command({ Bucket: 'external-bucket' }));
      expect(listed.KeyCount).toBe(1);
      s3.destroy();
    } finally {
      await svc.stop();
      await emu.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
