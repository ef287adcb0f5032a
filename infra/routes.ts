/**
 * The route table: one entry per Lambda function. Adding a route (e.g. the presigned-upload route,
 * `POST /worker/transcript/snapshot/uploads` → `functions/create-upload.ts` with
 * `objects: [{ prefix: UPLOADS_PREFIX, actions: ['s3:PutObject'] }]`) is one entry here; the stack
 * derives the function, its role, its least-privilege policy, its alarms and dashboard widgets from it.
 *
 * Plain data (no aws-cdk-lib import) so `scripts/bench-coldstart.ts` can read the entries cheaply.
 */
import { HEALTH_PATH, OPENAPI_PATH } from '../functions/lib/contract.js';
import { INDEX } from '../functions/lib/store/registry.js';

/** Committed snapshot objects: `snapshots/<org>/<agent>/<conv>/<runId>/<...>`. Never age-expired. */
export const SNAPSHOTS_PREFIX = 'snapshots/';
/** Presigned uploads not yet committed; a lifecycle rule expires them after a day. */
export const UPLOADS_PREFIX = 'uploads/';
/**
 * Chain prefixes copied into one object for a presigned redirect (functions/lib/store/chain.ts): caches.
 * The reconciler deletes them past its grace; a lifecycle rule expires them after a day as a backstop.
 */
export const MATERIALIZED_PREFIX = 'materialized/';

export type TableAction =
  | 'dynamodb:GetItem'
  | 'dynamodb:BatchGetItem'
  | 'dynamodb:PutItem'
  | 'dynamodb:UpdateItem'
  | 'dynamodb:DeleteItem'
  | 'dynamodb:BatchWriteItem'
  | 'dynamodb:Query';

export type ObjectAction = 's3:GetObject' | 's3:PutObject' | 's3:DeleteObject';

export interface ObjectAccess {
  /** Key prefix, ending in `/`; the grant covers `<prefix>*` only. */
  readonly prefix: typeof SNAPSHOTS_PREFIX | typeof UPLOADS_PREFIX | typeof MATERIALIZED_PREFIX;
  readonly actions: readonly ObjectAction[];
}

/** DynamoDB actions on one global secondary index of the table (granted on its own ARN, `<table>/index/<name>`). */
export interface IndexAccess {
  /** Index name (functions/lib/store/registry.ts `INDEX`). */
  readonly index: string;
  readonly actions: readonly 'dynamodb:Query'[];
}

export interface RouteAccess {
  /** DynamoDB actions on the table itself (they do not reach its indexes). */
  readonly table: readonly TableAction[];
  /** DynamoDB actions on the table's indexes, each on that index's ARN only. */
  readonly indexes?: readonly IndexAccess[];
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
  /** Signs or checks upload ids (needs the upload-id key: derived from the HS256 secret, or its own secret with a JWKS). */
  readonly signsUploadIds?: boolean;
  /** Signs or checks operator-API cursors (needs the same signing secret as upload ids, see `signsUploadIds`). */
  readonly signsCursors?: boolean;
}

export const SNAPSHOT_PATH = '/worker/transcript/snapshot';
/** The operator API (admin tokens): functions/lib/contract.ts ADMIN_PATHS. */
export const ADMIN_PREFIX = '/admin';

export const ROUTES: readonly RouteSpec[] = [
  {
    id: 'GetSnapshot',
    method: 'GET',
    path: SNAPSHOT_PATH,
    entry: 'functions/get-snapshot.ts',
    description: 'Hydrate: serve the latest completed snapshot of the conversation',
    timeoutSeconds: 15,
    access: {
      // GetItem: HEAD, and a CHAIN record when HEAD's cached layout is stale; BatchGetItem: HEAD and the
      // client's base run of a delta (A-IM: append).
      table: ['dynamodb:GetItem', 'dynamodb:BatchGetItem'],
      objects: [
        // GetObject also signs the presigned URL of a 307 (the URL carries this role's authority).
        { prefix: SNAPSHOTS_PREFIX, actions: ['s3:GetObject'] },
        // A 307 for a chain of several objects names a copy of its prefix, made once (materialize).
        { prefix: MATERIALIZED_PREFIX, actions: ['s3:GetObject', 's3:PutObject'] },
      ],
      // Not used to list: without s3:ListBucket, S3 answers a GetObject for a missing key with 403
      // AccessDenied instead of 404 NoSuchKey, and a read racing a clear must be a 404, not a 500.
      listPrefixes: [SNAPSHOTS_PREFIX, MATERIALIZED_PREFIX],
    },
  },
  {
    id: 'PostSnapshot',
    method: 'POST',
    path: SNAPSHOT_PATH,
    entry: 'functions/post-snapshot.ts',
    description: 'Store the snapshot of a finished run and commit it',
    timeoutSeconds: 28,
    signsUploadIds: true,
    access: {
      // BatchGetItem: admission (HEAD, the run, an append's base); GetItem: a CHAIN record; DeleteItem: what a
      // fenced writer removes again (its claim, the chain it created, the registry item it put).
      table: ['dynamodb:GetItem', 'dynamodb:BatchGetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem'],
      objects: [
        // GetObject: compaction and forks read chain objects, an append on a one-object run reads it once.
        // DeleteObject: a writer that loses the commit race removes the object it uploaded; compaction
        // deletes the objects it merged (DeleteObjects).
        { prefix: SNAPSHOTS_PREFIX, actions: ['s3:GetObject', 's3:PutObject', 's3:DeleteObject'] },
        // Committing a presigned upload: complete the multipart upload (PutObject), stream it to measure
        // size and sha256 (GetObject), copy it under snapshots/ (Get on source), then remove it.
        { prefix: UPLOADS_PREFIX, actions: ['s3:GetObject', 's3:PutObject', 's3:DeleteObject'] },
      ],
      // A missing upload must read as 404 NoSuchKey (→ 400 upload_not_found), not 403 (see GET); so
      // must a chain object a concurrent compaction deleted.
      listPrefixes: [SNAPSHOTS_PREFIX, UPLOADS_PREFIX],
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
      objects: [
        { prefix: SNAPSHOTS_PREFIX, actions: ['s3:DeleteObject'] },
        { prefix: UPLOADS_PREFIX, actions: ['s3:DeleteObject'] },
        { prefix: MATERIALIZED_PREFIX, actions: ['s3:DeleteObject'] },
      ],
      // The sweep lists the conversation's prefixes to also remove orphans (uploaded, never committed)
      // and materialized copies.
      listPrefixes: [SNAPSHOTS_PREFIX, UPLOADS_PREFIX, MATERIALIZED_PREFIX],
    },
  },
  {
    id: 'CreateUpload',
    method: 'POST',
    path: `${SNAPSHOT_PATH}/uploads`,
    entry: 'functions/create-upload.ts',
    description: 'Hand out presigned (multipart) upload URLs for snapshots past the direct-POST limit',
    timeoutSeconds: 10,
    signsUploadIds: true,
    access: {
      table: [],
      // Signs the presigned PUT / UploadPart URLs and starts multipart uploads, under uploads/ only.
      objects: [{ prefix: UPLOADS_PREFIX, actions: ['s3:PutObject'] }],
    },
  },
  // ---------------------------------------------------------------- operator API (admin tokens)
  {
    id: 'AdminListConversations',
    method: 'GET',
    path: `${ADMIN_PREFIX}/conversations`,
    entry: 'functions/admin-conversations.ts',
    description: 'Operator API: list an organization\'s conversations (newest first), or one agent\'s',
    timeoutSeconds: 15,
    signsCursors: true,
    // One Query of ByOrganization or ByAgent per page; nothing else.
    access: {
      table: [],
      indexes: [
        { index: INDEX.byOrganization.name, actions: ['dynamodb:Query'] },
        { index: INDEX.byAgent.name, actions: ['dynamodb:Query'] },
      ],
      objects: [],
    },
  },
  {
    id: 'AdminListRuns',
    method: 'GET',
    path: `${ADMIN_PREFIX}/runs`,
    entry: 'functions/admin-runs.ts',
    description: 'Operator API: list a conversation\'s stored runs with their state',
    timeoutSeconds: 15,
    signsCursors: true,
    // GetItem: HEAD; Query: the conversation's RUN records.
    access: { table: ['dynamodb:GetItem', 'dynamodb:Query'], objects: [] },
  },
  {
    id: 'AdminReadRun',
    method: 'GET',
    path: `${ADMIN_PREFIX}/run`,
    entry: 'functions/admin-run.ts',
    description: 'Operator API: one stored run\'s bytes, any status (audited)',
    timeoutSeconds: 28,
    access: {
      // GetItem: the RUN record, and its CHAIN record for a chain run.
      table: ['dynamodb:GetItem'],
      objects: [
        { prefix: SNAPSHOTS_PREFIX, actions: ['s3:GetObject'] },
        // A 307 for a chain run names a materialized copy of it, made once (as GET does).
        { prefix: MATERIALIZED_PREFIX, actions: ['s3:GetObject', 's3:PutObject'] },
      ],
      // So that a missing object is 404 NoSuchKey (a run deleted under the read), not 403 (see GET).
      listPrefixes: [SNAPSHOTS_PREFIX, MATERIALIZED_PREFIX],
    },
  },
  {
    id: 'AdminReadLines',
    method: 'GET',
    path: `${ADMIN_PREFIX}/lines`,
    entry: 'functions/admin-lines.ts',
    description: 'Operator API: a run\'s JSONL lines by range (streamed, stops after the page)',
    timeoutSeconds: 28,
    signsCursors: true,
    access: {
      // GetItem: HEAD (the default run), the RUN and CHAIN records; Query: the chain's run boundaries.
      table: ['dynamodb:GetItem', 'dynamodb:Query'],
      objects: [{ prefix: SNAPSHOTS_PREFIX, actions: ['s3:GetObject'] }],
      listPrefixes: [SNAPSHOTS_PREFIX],
    },
  },
  {
    id: 'AdminListAgents',
    method: 'GET',
    path: `${ADMIN_PREFIX}/agents`,
    entry: 'functions/admin-agents.ts',
    description: 'Operator API: an organization\'s agents with conversation, run and byte counts',
    timeoutSeconds: 28,
    signsCursors: true,
    // Query: the registry in the organization's partition (the agents), ByAgent (their counters).
    access: { table: ['dynamodb:Query'], indexes: [{ index: INDEX.byAgent.name, actions: ['dynamodb:Query'] }], objects: [] },
  },
  {
    id: 'AdminErase',
    method: 'POST',
    path: `${ADMIN_PREFIX}/erasures`,
    entry: 'functions/admin-erase.ts',
    description: 'Operator API: erase a conversation, an agent or the organization, with a receipt',
    timeoutSeconds: 28,
    access: {
      // store/erasure.ts: the receipt, its running pointer, progress items and marks (Put, BatchWrite), the
      // scope fences and HEAD fences (Update), the registry and the conversations' partitions (Query), then
      // the records (Delete). GetItem: the receipt, HEAD, and a conditional write's fallback read.
      table: ['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem', 'dynamodb:BatchWriteItem', 'dynamodb:Query'],
      // DeleteObjects needs s3:DeleteObject on every key it names.
      objects: [
        { prefix: SNAPSHOTS_PREFIX, actions: ['s3:DeleteObject'] },
        { prefix: UPLOADS_PREFIX, actions: ['s3:DeleteObject'] },
        { prefix: MATERIALIZED_PREFIX, actions: ['s3:DeleteObject'] },
      ],
      // Every object of an erased conversation is found by listing its prefixes (and sized for the receipt).
      listPrefixes: [SNAPSHOTS_PREFIX, UPLOADS_PREFIX, MATERIALIZED_PREFIX],
    },
  },
  {
    id: 'AdminGetReceipt',
    method: 'GET',
    path: `${ADMIN_PREFIX}/erasures/{receiptId}`,
    entry: 'functions/admin-receipt.ts',
    description: 'Operator API: one erasure receipt',
    timeoutSeconds: 15,
    // GetItem: the receipt; Query: a running erasure's progress items (its counts so far).
    access: { table: ['dynamodb:GetItem', 'dynamodb:Query'], objects: [] },
  },
  {
    id: 'AdminListReceipts',
    method: 'GET',
    path: `${ADMIN_PREFIX}/erasures`,
    entry: 'functions/admin-receipts.ts',
    description: 'Operator API: the organization\'s erasure receipts, newest first',
    timeoutSeconds: 15,
    signsCursors: true,
    // Query: the receipts, and running ones' progress items.
    access: { table: ['dynamodb:Query'], objects: [] },
  },
];

/** A scheduled function (not behind the API). */
export interface JobSpec {
  readonly id: string;
  readonly entry: string;
  readonly description: string;
  readonly timeoutSeconds: number;
  /** EventBridge schedule: every this many minutes. */
  readonly everyMinutes: number;
  readonly access: RouteAccess;
}

/**
 * The orphan reconciler (functions/reconcile.ts): lists snapshots/, reads (BatchGetItem) the RUN and CHAIN
 * records old objects would belong to, deletes (DeleteObjects) those no record refers to, and materialized
 * copies past its grace; keeps its cursor in the table.
 */
export const RECONCILER: JobSpec = {
  id: 'Reconciler',
  entry: 'functions/reconcile.ts',
  description: 'Delete snapshot objects no record refers to (uploads whose commit never happened), past the grace period',
  timeoutSeconds: 300,
  everyMinutes: 360,
  access: {
    // GetItem/PutItem/DeleteItem: its cursor; BatchGetItem: the RUN and HEAD records of old objects;
    // UpdateItem: publishing a completed run whose writer died between claim and publish (roll-forward).
    table: ['dynamodb:GetItem', 'dynamodb:BatchGetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem'],
    // DeleteObjects needs s3:DeleteObject on every key it names.
    objects: [
      { prefix: SNAPSHOTS_PREFIX, actions: ['s3:DeleteObject'] },
      { prefix: MATERIALIZED_PREFIX, actions: ['s3:DeleteObject'] },
    ],
    listPrefixes: [SNAPSHOTS_PREFIX, MATERIALIZED_PREFIX],
  },
};

/**
 * The operator console (docs/DESIGN.md § Operator console): a static web app, served by one function at
 * `GET /console` (the page) and `GET /console/{asset}` (its script and stylesheet). It holds no data and
 * checks no token (the app sends the operator's admin token to the operator API), so its function gets
 * no storage access, no secret and no configuration. Its bundling hook (infra/bundling.ts
 * `consoleAfterBundling`) builds the files into {@link CONSOLE_ASSETS_DIR} next to the bundle.
 */
export const CONSOLE_ROUTE = {
  id: 'Console',
  method: 'GET',
  path: '/console',
  /** The assets' route (API Gateway, and the local route table: local/service.ts `consoleRouteTable`). */
  assetPath: '/console/{asset}',
  entry: 'functions/console.ts',
  description: 'Serve the operator console (static page, script and stylesheet; no data)',
  timeoutSeconds: 5,
  access: { table: [], objects: [] },
} as const satisfies RouteSpec & { assetPath: string };

/**
 * Public routes with no token, no storage, no secret and no configuration (docs/DESIGN.md § Health and API
 * description): each function's role may only write its own log group, like the console's.
 */
export const HEALTH_ROUTE = {
  id: 'Health',
  method: 'GET',
  path: HEALTH_PATH,
  entry: 'functions/health.ts',
  description: 'Liveness: status, service name and version (no token, no storage call)',
  timeoutSeconds: 5,
  access: { table: [], objects: [] },
} as const satisfies RouteSpec;

/** `GET /openapi.json`: the OpenAPI 3.1 document of every route (functions/lib/openapi.ts). */
export const OPENAPI_ROUTE = {
  id: 'OpenApi',
  method: 'GET',
  path: OPENAPI_PATH,
  entry: 'functions/openapi.ts',
  description: 'Serve the OpenAPI 3.1 document of every route (no token, no storage call)',
  timeoutSeconds: 5,
  access: { table: [], objects: [] },
} as const satisfies RouteSpec;

/** The public routes: health and the API description. */
export const PUBLIC_ROUTES: readonly RouteSpec[] = [HEALTH_ROUTE, OPENAPI_ROUTE];

/** Directory, next to the console function's `index.mjs`, holding the built console files. */
export const CONSOLE_ASSETS_DIR = 'console';

/**
 * What an erasure (functions/lib/store/erasure.ts) does to storage, for the retention job (expiry, resumed
 * erasures) and the erasure route:
 * - GetItem/PutItem/UpdateItem/DeleteItem/Query/BatchWriteItem: receipts, progress items and marks (BatchWriteItem
 *   puts marks), fences, HEAD, the registry, RUN and CHAIN records; the retention pass's own Query, DeleteItem
 *   and UpdateItem are among them.
 * - s3:ListBucket on the three prefixes: a conversation's objects, including ones no record names (uploads never
 *   committed, materialized copies, data from before the registry); DeleteObjects needs s3:DeleteObject on each key.
 */
export const ERASURE_ACCESS = {
  table: ['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem', 'dynamodb:Query', 'dynamodb:BatchWriteItem'],
  objects: [
    { prefix: SNAPSHOTS_PREFIX, actions: ['s3:DeleteObject'] },
    { prefix: UPLOADS_PREFIX, actions: ['s3:DeleteObject'] },
    { prefix: MATERIALIZED_PREFIX, actions: ['s3:DeleteObject'] },
  ],
  listPrefixes: [SNAPSHOTS_PREFIX, UPLOADS_PREFIX, MATERIALIZED_PREFIX],
} as const satisfies RouteAccess;

/**
 * The retention pass (functions/retention.ts, docs/DESIGN.md § Retention): Queries the `ByRetentionDue` index
 * for conversations due, Queries each one's partition, deletes RUN and CHAIN records (DeleteItem) and the
 * objects only they referred to (DeleteObjects, under snapshots/ only: RUN records and chains name nothing
 * else), stamps chains and writes HEAD's counters and next due time back (UpdateItem). Runs every
 * RETENTION_INTERVAL_MINUTES (the stack sets `everyMinutes` from the setting; this is the default).
 * The expiry of idle conversations (CONVERSATION_TTL_DAYS) is an erasure (erasure.ts), and the pass also
 * resumes erasures whose caller died: it has erasure's access ({@link ERASURE_ACCESS}).
 */
export const RETENTION: JobSpec = {
  id: 'Retention',
  entry: 'functions/retention.ts',
  description: 'Delete runs and chains the retention settings no longer keep (RETAIN_COMPLETED_RUNS, RETAIN_FAILED_DAYS)',
  timeoutSeconds: 300,
  everyMinutes: 60,
  access: {
    ...ERASURE_ACCESS,
    // The work queue: conversations whose retentionDueAtMs has passed, per shard.
    indexes: [{ index: INDEX.byRetentionDue.name, actions: ['dynamodb:Query'] }],
  },
};
