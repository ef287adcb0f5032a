import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DynamoDBClient, ListTablesCommand, ScanCommand } from '@aws-sdk/client-dynamodb';
import { ListBucketsCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { startEmulators } from '../../local/emulators.js';
import { startLocalService, storeLocations, type LocalService } from '../../local/service.js';
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

/**
 * Endpoints one by one: an endpoint for one store replaces only that store; the other stays embedded
 * (before, it silently went to the SDK's default endpoint, i.e. real AWS).
 */
describe('one external store, the other embedded', () => {
  const common = {
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: 'S3RVER',
    AWS_SECRET_ACCESS_KEY: 'S3RVER',
    BUCKET_NAME: 'one-by-one-bucket',
    TABLE_NAME: 'one-by-one-table',
    JWT_SECRET: 'one-by-one-secret-one-by-one-secret',
  };

  it('chooses each store from its own variable', () => {
    expect(storeLocations({})).toEqual({ s3: 'embedded', dynamodb: 'embedded' });
    expect(storeLocations({ AWS_ENDPOINT_URL_DYNAMODB: 'http://x' })).toEqual({ s3: 'embedded', dynamodb: 'external' });
    expect(storeLocations({ AWS_ENDPOINT_URL_S3: 'http://x' })).toEqual({ s3: 'external', dynamodb: 'embedded' });
    expect(storeLocations({ AWS_ENDPOINT_URL: 'http://x' })).toEqual({ s3: 'external', dynamodb: 'external' });
  });

  /** Writes and hydrates one snapshot through `svc`; returns nothing, throws on failure. */
  async function roundTrip(svc: LocalService): Promise<void> {
    const api = new Api(svc.url, (c) => svc.mintToken(c));
    const scope = freshScope('one-by-one');
    expect((await api.write(scope, 1, 'split\n')).status).toBe(200);
    expect((await api.hydrate(scope))?.body.toString()).toBe('split\n');
  }

  const s3At = (endpoint: string) => new S3Client({ region: 'us-east-1', endpoint, forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
  const ddbAt = (endpoint: string) => new DynamoDBClient({ region: 'us-east-1', endpoint, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });

  it('AWS_ENDPOINT_URL_DYNAMODB alone: records go there, objects to the embedded s3rver', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'external-ddb-'));
    const outside = await startEmulators({ dataDir: dir, persistDynamo: false });
    const svc = await startLocalService({ env: { ...common, AWS_ENDPOINT_URL_DYNAMODB: outside.dynamodbEndpoint } });
    const [outS3, outDdb, inS3] = [s3At(outside.s3Endpoint), ddbAt(outside.dynamodbEndpoint), s3At(svc.emulators!.s3Endpoint)];
    try {
      expect(svc.storage).toEqual({ s3: 'embedded', dynamodb: 'external' });
      expect(svc.endpoints).toEqual({ s3: svc.emulators!.s3Endpoint, dynamodb: outside.dynamodbEndpoint });
      await roundTrip(svc);
      // The run and HEAD records are in the external DynamoDB …
      expect((await outDdb.send(new ScanCommand({ TableName: 'one-by-one-table' }))).Count).toBe(4); // HEAD, RUN, CHAIN, and the conversation's registry item
      // … the object in the embedded S3, and nothing in the external S3.
      expect((await inS3.send(new ListObjectsV2Command({ Bucket: 'one-by-one-bucket' }))).KeyCount).toBe(1);
      expect((await outS3.send(new ListBucketsCommand({}))).Buckets ?? []).toEqual([]);
    } finally {
      [outS3, outDdb, inS3].forEach((c) => c.destroy());
      await svc.stop();
      await outside.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('AWS_ENDPOINT_URL_S3 alone: objects go there, records to the embedded dynalite', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'external-s3-'));
    const outside = await startEmulators({ dataDir: dir, persistDynamo: false });
    const svc = await startLocalService({ env: { ...common, AWS_ENDPOINT_URL_S3: outside.s3Endpoint } });
    const [outS3, outDdb, inDdb] = [s3At(outside.s3Endpoint), ddbAt(outside.dynamodbEndpoint), ddbAt(svc.emulators!.dynamodbEndpoint)];
    try {
      expect(svc.storage).toEqual({ s3: 'external', dynamodb: 'embedded' });
      expect(svc.endpoints).toEqual({ s3: outside.s3Endpoint, dynamodb: svc.emulators!.dynamodbEndpoint });
      await roundTrip(svc);
      expect((await outS3.send(new ListObjectsV2Command({ Bucket: 'one-by-one-bucket' }))).KeyCount).toBe(1);
      expect((await inDdb.send(new ScanCommand({ TableName: 'one-by-one-table' }))).Count).toBe(4); // HEAD, RUN, CHAIN, and the conversation's registry item
      expect((await outDdb.send(new ListTablesCommand({}))).TableNames).toEqual([]);
    } finally {
      [outS3, outDdb, inDdb].forEach((c) => c.destroy());
      await svc.stop();
      await outside.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
