/**
 * The route table: one entry per Lambda function. Adding a route (e.g. the presigned-upload route,
 * `POST /worker/transcript/snapshot/uploads` → `functions/create-upload.ts` with
 * `objects: [{ prefix: UPLOADS_PREFIX, actions: ['s3:PutObject'] }]`) is one entry here; the stack
 * derives the function, its role, its least-privilege policy, its alarms and dashboard widgets from it.
 *
 * Plain data (no aws-cdk-lib import) so `scripts/bench-coldstart.ts` can read the entries cheaply.
 */

/** Committed snapshot objects: `snapshots/<org>/<agent>/<conv>/<runId>/<...>`. Never age-expired. */
export const SNAPSHOTS_PREFIX = 'snapshots/';
/** Presigned uploads not yet committed; a lifecycle rule expires them after a day. */
export const UPLOADS_PREFIX = 'uploads/';

export type TableAction =
  | 'dynamodb:GetItem'
  | 'dynamodb:PutItem'
  | 'dynamodb:UpdateItem'
  | 'dynamodb:DeleteItem'
  | 'dynamodb:Query';

export type ObjectAction = 's3:GetObject' | 's3:PutObject' | 's3:DeleteObject';

export interface ObjectAccess {
  /** Key prefix, ending in `/`; the grant covers `<prefix>*` only. */
  readonly prefix: typeof SNAPSHOTS_PREFIX | typeof UPLOADS_PREFIX;
  readonly actions: readonly ObjectAction[];
}

export interface RouteAccess {
  /** DynamoDB actions on the table (no indexes exist). */
  readonly table: readonly TableAction[];
  /** S3 object actions, each scoped to a key prefix. */
  readonly objects: readonly ObjectAccess[];
  /** `s3:ListBucket`, restricted by an `s3:prefix` condition to `<prefix>*`. */
  readonly listPrefixes?: readonly string[];
}

export interface RouteSpec {
  /** Construct id and short name (bench, alarms, dashboard). */
  readonly id: string;
  readonly method: 'GET' | 'POST' | 'DELETE';
  readonly path: string;
  /** Handler entry, relative to the repository root; must export `handler`. */
  readonly entry: string;
  readonly description: string;
  /** Lambda timeout. HTTP API integrations give up after 30 s, so keep this below. */
  readonly timeoutSeconds: number;
  readonly access: RouteAccess;
}

export const SNAPSHOT_PATH = '/worker/transcript/snapshot';

export const ROUTES: readonly RouteSpec[] = [
  {
    id: 'GetSnapshot',
    method: 'GET',
    path: SNAPSHOT_PATH,
    entry: 'functions/get-snapshot.ts',
    description: 'Hydrate: serve the latest completed snapshot of the conversation',
    timeoutSeconds: 15,
    access: {
      table: ['dynamodb:GetItem'],
      // No s3:ListBucket: listing would reveal other conversations' ids. Consequence: S3 answers a
      // GetObject for a missing key with 403 AccessDenied, not 404 NoSuchKey (the clear race).
      objects: [{ prefix: SNAPSHOTS_PREFIX, actions: ['s3:GetObject'] }],
    },
  },
  {
    id: 'PostSnapshot',
    method: 'POST',
    path: SNAPSHOT_PATH,
    entry: 'functions/post-snapshot.ts',
    description: 'Store the snapshot of a finished run and commit it',
    timeoutSeconds: 28,
    access: {
      table: ['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem'],
      // DeleteObject: a writer that loses the commit race removes the object it uploaded.
      objects: [{ prefix: SNAPSHOTS_PREFIX, actions: ['s3:PutObject', 's3:DeleteObject'] }],
    },
  },
  {
    id: 'DeleteSnapshot',
    method: 'DELETE',
    path: SNAPSHOT_PATH,
    entry: 'functions/delete-snapshot.ts',
    description: 'Clear the conversation: fence older runs, delete records and every snapshot object',
    timeoutSeconds: 28,
    access: {
      table: ['dynamodb:GetItem', 'dynamodb:Query', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem'],
      objects: [{ prefix: SNAPSHOTS_PREFIX, actions: ['s3:DeleteObject'] }],
      // The sweep lists the conversation's prefix to also remove orphans (uploaded, never committed).
      listPrefixes: [SNAPSHOTS_PREFIX],
    },
  },
];
