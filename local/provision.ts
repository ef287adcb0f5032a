import {
  CreateTableCommand,
  DescribeTableCommand,
  ResourceNotFoundException,
  type DynamoDBClient,
} from '@aws-sdk/client-dynamodb';
import { CreateBucketCommand, HeadBucketCommand, type S3Client } from '@aws-sdk/client-s3';

/** The HTTP status and error name of an SDK error (either may be undefined). */
function describeError(err: unknown): { name: string | undefined; status: number | undefined } {
  const e = err as { name?: unknown; $metadata?: { httpStatusCode?: unknown } } | undefined;
  return {
    name: typeof e?.name === 'string' ? e.name : undefined,
    status: typeof e?.$metadata?.httpStatusCode === 'number' ? e.$metadata.httpStatusCode : undefined,
  };
}

/** HeadBucket's "there is no such bucket": a 404 (HEAD answers carry no body, so the SDK says NotFound). */
function isNoSuchBucket(err: unknown): boolean {
  const { name, status } = describeError(err);
  return status === 404 || name === 'NotFound' || name === 'NoSuchBucket';
}

/**
 * Creates the bucket if it does not exist (local emulators, LocalStack); the CDK stack does this on AWS.
 * Only a 404 (NotFound / NoSuchBucket) from HeadBucket means "missing"; any other HeadBucket error
 * (storage unreachable, 403, a 500 from an emulator) is rethrown as an Error naming the bucket, the
 * error and its status — never answered with a CreateBucket that would fail with "already exists".
 * Losing a creation race (BucketAlreadyOwnedByYou / BucketAlreadyExists after a 404) is success.
 */
export async function ensureBucket(s3: S3Client, bucket: string): Promise<void> {
  try {
    await s3.send(new HeadBucketCommand({ Bucket: bucket }));
    return;
  } catch (err) {
    if (!isNoSuchBucket(err)) {
      const { name, status } = describeError(err);
      throw new Error(`HeadBucket ${bucket} failed: ${name ?? 'error'}${status !== undefined ? ` (HTTP ${status})` : ''}`, { cause: err });
    }
  }
  try {
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  } catch (err) {
    const { name } = describeError(err);
    if (name !== 'BucketAlreadyOwnedByYou' && name !== 'BucketAlreadyExists') throw err;
  }
}

/**
 * Creates the table (pk/sk strings, on-demand) if DescribeTable says it does not exist, and waits up
 * to ~10 s for it to be ACTIVE. Other DescribeTable errors are rethrown; throws if it never activates.
 */
export async function ensureTable(ddb: DynamoDBClient, table: string): Promise<void> {
  try {
    await ddb.send(new DescribeTableCommand({ TableName: table }));
    return;
  } catch (err) {
    if (!(err instanceof ResourceNotFoundException)) throw err;
  }
  await ddb.send(
    new CreateTableCommand({
      TableName: table,
      BillingMode: 'PAY_PER_REQUEST',
      AttributeDefinitions: [
        { AttributeName: 'pk', AttributeType: 'S' },
        { AttributeName: 'sk', AttributeType: 'S' },
      ],
      KeySchema: [
        { AttributeName: 'pk', KeyType: 'HASH' },
        { AttributeName: 'sk', KeyType: 'RANGE' },
      ],
    }),
  );
  for (let i = 0; i < 100; i++) {
    const res = await ddb.send(new DescribeTableCommand({ TableName: table }));
    if (res.Table?.TableStatus === 'ACTIVE') return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`table ${table} did not become ACTIVE`);
}
