import {
  BatchWriteItemCommand,
  type BatchWriteItemCommandOutput,
  CreateTableCommand,
  DeleteTableCommand,
  DescribeTableCommand,
  paginateScan,
  ResourceNotFoundException,
  type AttributeDefinition,
  type DynamoDBClient,
  type GlobalSecondaryIndex,
  type WriteRequest,
} from '@aws-sdk/client-dynamodb';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { INDEX, INDEX_PROJECTION } from '../functions/lib/store/registry.js';
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

/** The table's key attributes and GSIs, as the CDK stack declares them (infra/stack.ts). */
export const TABLE_ATTRIBUTES: AttributeDefinition[] = [
  { AttributeName: 'pk', AttributeType: 'S' },
  { AttributeName: 'sk', AttributeType: 'S' },
  { AttributeName: INDEX.byOrganization.partitionKey, AttributeType: 'S' },
  { AttributeName: INDEX.byAgent.partitionKey, AttributeType: 'S' },
  { AttributeName: INDEX.byOrganization.sortKey, AttributeType: 'N' },
  { AttributeName: INDEX.byRetentionDue.partitionKey, AttributeType: 'S' },
  { AttributeName: INDEX.byRetentionDue.sortKey, AttributeType: 'N' },
];

export const TABLE_INDEXES: GlobalSecondaryIndex[] = Object.values(INDEX).map((index) => ({
  IndexName: index.name,
  KeySchema: [
    { AttributeName: index.partitionKey, KeyType: 'HASH' },
    { AttributeName: index.sortKey, KeyType: 'RANGE' },
  ],
  Projection: { ProjectionType: 'INCLUDE', NonKeyAttributes: [...INDEX_PROJECTION] },
}));

/**
 * Creates the table (pk/sk strings, on-demand, the GSIs of docs/DESIGN.md § Retention, erasure and the operator
 * API) if DescribeTable says it does not exist, and waits up to ~10 s for it to be ACTIVE. A table made before
 * the GSIs existed is migrated when `migrationDir` is given (see {@link migrateTable}); without it, throws an Error
 * naming the missing indexes. Other DescribeTable errors are rethrown; throws if the table never activates.
 */
export async function ensureTable(ddb: DynamoDBClient, table: string, migrationDir?: string): Promise<void> {
  if (migrationDir) await resumeMigration(ddb, table, migrationDir);
  try {
    const res = await ddb.send(new DescribeTableCommand({ TableName: table }));
    const present = new Set((res.Table?.GlobalSecondaryIndexes ?? []).map((i) => i.IndexName));
    const missing = TABLE_INDEXES.map((i) => i.IndexName!).filter((n) => !present.has(n));
    if (missing.length === 0) return;
    if (!migrationDir) throw new Error(`table ${table} lacks the indexes ${missing.join(', ')} (create it with local/provision.ts or deploy the stack)`);
    await migrateTable(ddb, table, migrationDir);
    return;
  } catch (err) {
    if (!(err instanceof ResourceNotFoundException)) throw err;
  }
  await createTable(ddb, table);
}

async function createTable(ddb: DynamoDBClient, table: string): Promise<void> {
  await ddb.send(
    new CreateTableCommand({
      TableName: table,
      BillingMode: 'PAY_PER_REQUEST',
      AttributeDefinitions: TABLE_ATTRIBUTES,
      KeySchema: [
        { AttributeName: 'pk', KeyType: 'HASH' },
        { AttributeName: 'sk', KeyType: 'RANGE' },
      ],
      GlobalSecondaryIndexes: TABLE_INDEXES,
    }),
  );
  for (let i = 0; i < 100; i++) {
    const res = await ddb.send(new DescribeTableCommand({ TableName: table }));
    if (res.Table?.TableStatus === 'ACTIVE') return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`table ${table} did not become ACTIVE`);
}

const MIGRATION_FILE = 'table-migration.json';

/**
 * Rebuilds a local table that predates the GSIs (dynalite cannot add a GSI to an existing table): every item
 * is saved to `<dir>/table-migration.json` (written to a temp file, then renamed) before the table is
 * deleted, re-created with the GSIs and refilled; the file is removed only after the last item is back. A
 * crash at any point is resumed by the next `ensureTable` ({@link resumeMigration}): nothing is lost.
 */
export async function migrateTable(ddb: DynamoDBClient, table: string, dir: string): Promise<void> {
  const items: Record<string, unknown>[] = [];
  for await (const page of paginateScan({ client: ddb }, { TableName: table, ConsistentRead: true })) items.push(...(page.Items ?? []));
  await mkdir(dir, { recursive: true });
  const file = join(dir, MIGRATION_FILE);
  await writeFile(`${file}.tmp`, JSON.stringify({ table, items }, binaryReplacer));
  await rename(`${file}.tmp`, file);
  await resumeMigration(ddb, table, dir);
}

async function waitUntilGone(ddb: DynamoDBClient, table: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    try {
      await ddb.send(new DescribeTableCommand({ TableName: table }));
    } catch (err) {
      if (err instanceof ResourceNotFoundException) return;
      throw err;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`table ${table} was not deleted`);
}

/** JSON for binary attribute values (`B`, `BS`): a Uint8Array becomes `{"$b64": "<base64>"}`. */
function binaryReplacer(this: Record<string, unknown>, key: string, value: unknown): unknown {
  const raw = this[key];
  return raw instanceof Uint8Array ? { $b64: Buffer.from(raw).toString('base64') } : value;
}

function binaryReviver(_key: string, value: unknown): unknown {
  if (value && typeof value === 'object' && !Array.isArray(value)) {
    const v = value as Record<string, unknown>;
    if (typeof v['$b64'] === 'string' && Object.keys(v).length === 1) return new Uint8Array(Buffer.from(v['$b64'], 'base64'));
  }
  return value;
}

/** Finishes a migration whose saved items exist (see {@link migrateTable}); does nothing otherwise. */
async function resumeMigration(ddb: DynamoDBClient, table: string, dir: string): Promise<void> {
  const file = join(dir, MIGRATION_FILE);
  let saved: { table: string; items: Record<string, never>[] };
  try {
    saved = JSON.parse(await readFile(file, 'utf8'), binaryReviver);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (saved.table !== table) return;
  try {
    const res = await ddb.send(new DescribeTableCommand({ TableName: table }));
    const present = new Set((res.Table?.GlobalSecondaryIndexes ?? []).map((i) => i.IndexName));
    if (!TABLE_INDEXES.every((i) => present.has(i.IndexName))) {
      await ddb.send(new DeleteTableCommand({ TableName: table }));
      // dynalite drops the table's metadata on a timer after answering: creating the table again before it
      // is gone lets that timer delete the new table's metadata. Wait until DescribeTable says it is gone.
      await waitUntilGone(ddb, table);
      await createTable(ddb, table);
    }
  } catch (err) {
    if (!(err instanceof ResourceNotFoundException)) throw err;
    await createTable(ddb, table);
  }
  for (let i = 0; i < saved.items.length; i += 25) {
    let pending: WriteRequest[] | undefined = saved.items.slice(i, i + 25).map((Item) => ({ PutRequest: { Item } }));
    while (pending?.length) {
      const res: BatchWriteItemCommandOutput = await ddb.send(new BatchWriteItemCommand({ RequestItems: { [table]: pending } }));
      pending = res.UnprocessedItems?.[table];
    }
  }
  await rm(file);
}
