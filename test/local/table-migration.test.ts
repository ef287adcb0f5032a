/**
 * A DATA_DIR made before the listing GSIs existed: dynalite cannot add a GSI to a table, so `ensureTable`
 * rebuilds the table around a saved copy of its items (local/provision.ts migrateTable). Nothing is lost,
 * also when the rebuild dies half-way.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateTableCommand, DeleteTableCommand, DescribeTableCommand, DynamoDBClient, PutItemCommand, ScanCommand } from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startEmulators, type Emulators } from '../../local/emulators.js';
import { ensureTable, TABLE_INDEXES } from '../../local/provision.js';

const TABLE = 'migrate-me';
let dataDir: string;
let emulators: Emulators;
let ddb: DynamoDBClient;

beforeEach(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'table-migration-'));
  emulators = await startEmulators({ dataDir, persistDynamo: true });
  ddb = new DynamoDBClient({ region: 'us-east-1', endpoint: emulators.dynamodbEndpoint, credentials: emulators.credentials });
});
afterEach(async () => {
  ddb.destroy();
  await emulators.stop();
  await rm(dataDir, { recursive: true, force: true });
});

/** A table as the first versions created it (pk/sk only), holding `n` items. */
async function oldTable(n: number): Promise<void> {
  await ddb.send(
    new CreateTableCommand({
      TableName: TABLE,
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
  // dynalite creates tables asynchronously: wait until it is ACTIVE before writing.
  for (let i = 0; i < 100 && (await ddb.send(new DescribeTableCommand({ TableName: TABLE }))).Table?.TableStatus !== 'ACTIVE'; i++) {
    await new Promise((r) => setTimeout(r, 50));
  }
  for (let i = 0; i < n; i++) {
    await ddb.send(new PutItemCommand({ TableName: TABLE, Item: marshall({ pk: `o/a/c${i % 7}`, sk: `RUN#${String(i).padStart(16, '0')}`, payload: Buffer.from([i % 256, 1, 2]), n: i }) }));
  }
}

async function items(): Promise<Record<string, unknown>[]> {
  const res = await ddb.send(new ScanCommand({ TableName: TABLE, ConsistentRead: true }));
  return (res.Items ?? []).map((i) => unmarshall(i)).sort((a, b) => (a['n'] as number) - (b['n'] as number));
}

async function indexNames(): Promise<string[]> {
  const res = await ddb.send(new DescribeTableCommand({ TableName: TABLE }));
  return (res.Table?.GlobalSecondaryIndexes ?? []).map((i) => i.IndexName!).sort();
}

describe('local table migration (dynalite cannot add GSIs)', () => {
  it('rebuilds an old table with the GSIs and keeps every item, byte for byte; a second start does nothing', async () => {
    await oldTable(60);
    const before = await items();
    expect(await indexNames()).toEqual([]);
    await ensureTable(ddb, TABLE, dataDir);
    expect(await indexNames()).toEqual(TABLE_INDEXES.map((i) => i.IndexName!).sort());
    expect(await items()).toEqual(before);
    await ensureTable(ddb, TABLE, dataDir);
    expect(await items()).toEqual(before);
  });

  it('refuses, naming the indexes, when it may not rebuild (an external table)', async () => {
    await oldTable(1);
    await expect(ensureTable(ddb, TABLE)).rejects.toThrow(/lacks the indexes ByOrganization, ByAgent, ByRetentionDue/);
    expect(await items()).toHaveLength(1);
  });

  it('a rebuild that died after deleting the table is finished by the next start from the saved copy', async () => {
    await oldTable(30);
    const before = await items();
    // What migrateTable saves before it deletes anything; then "the process dies" after the DeleteTable.
    const saved = (await ddb.send(new ScanCommand({ TableName: TABLE, ConsistentRead: true }))).Items;
    const b64 = function (this: Record<string, unknown>, key: string, value: unknown) {
      const raw = this[key];
      return raw instanceof Uint8Array ? { $b64: Buffer.from(raw).toString('base64') } : value;
    };
    await writeFile(join(dataDir, 'table-migration.json'), JSON.stringify({ table: TABLE, items: saved }, b64));
    await ddb.send(new DeleteTableCommand({ TableName: TABLE }));
    await ensureTable(ddb, TABLE, dataDir);
    expect(await items()).toEqual(before);
    expect(await indexNames()).toHaveLength(TABLE_INDEXES.length);
    await expect(readFile(join(dataDir, 'table-migration.json'))).rejects.toThrow(/ENOENT/);
  });
});
