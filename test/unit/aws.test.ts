import { PutObjectCommand, UploadPartCommand } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { describe, expect, it } from 'vitest';
import { createClients } from '../../functions/lib/aws.js';

const config = { region: 'us-east-1', s3ForcePathStyle: false };
const credentials = { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'secret' };

describe('createClients', () => {
  it('keeps the SDK default checksum behaviour on the production S3 client', async () => {
    const { s3 } = createClients(config, { credentials });
    expect(await s3.config.requestChecksumCalculation()).toBe('WHEN_SUPPORTED');
    expect(await s3.config.responseChecksumValidation()).toBe('WHEN_SUPPORTED');
  });

  it('signs presigned PUT and UploadPart URLs without a checksum of an empty body (they would fail on AWS)', async () => {
    const { s3, presigner } = createClients(config, { credentials });
    const put = new URL(await getSignedUrl(presigner, new PutObjectCommand({ Bucket: 'b', Key: 'k' }), { expiresIn: 60 }));
    const part = new URL(await getSignedUrl(presigner, new UploadPartCommand({ Bucket: 'b', Key: 'k', UploadId: 'u', PartNumber: 1 }), { expiresIn: 60 }));
    for (const url of [put, part]) {
      expect([...url.searchParams.keys()].filter((k) => k.toLowerCase().startsWith('x-amz-checksum') || k.toLowerCase() === 'x-amz-sdk-checksum-algorithm')).toEqual([]);
    }
    // The trap this guards against: the default client pins CRC32 of an empty body into the URL.
    const trap = new URL(await getSignedUrl(s3, new PutObjectCommand({ Bucket: 'b', Key: 'k' }), { expiresIn: 60 }));
    expect(trap.searchParams.get('x-amz-checksum-crc32')).toBe('AAAAAA==');
  });

  it('applies S3 overrides from local code only when given', async () => {
    const { s3 } = createClients(config, { credentials, s3: { requestChecksumCalculation: 'WHEN_REQUIRED' } });
    expect(await s3.config.requestChecksumCalculation()).toBe('WHEN_REQUIRED');
  });
});
