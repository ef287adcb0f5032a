/**
 * The OpenAPI 3.1 document of every route (served at `GET /openapi.json`, docs/DESIGN.md § Health and API
 * description). Built from the contract's constants — paths, header names, `ERRORS` (status, code, message),
 * page limits, terminal statuses, the console's files and security headers — so a status, code or message
 * cannot drift from what the handlers answer; `test/integration/openapi.test.ts` validates real answers of
 * every route against it, and fails on any documented answer it never saw.
 *
 * Plain data over `contract.ts`, `console-files.ts` and `service-info.ts` only: no store, no AWS SDK, so the
 * function that serves it stays small.
 */
import {
  ADMIN_PAGE_LIMITS,
  ADMIN_PATHS,
  ERRORS,
  HEADER_BASE_RUN_ID,
  HEADER_BYTES,
  HEADER_GENERATION,
  HEADER_RUN_ID,
  HEADER_SHA256,
  HEALTH_PATH,
  IM_APPEND,
  LINES_PAGE_TEXT_BYTES,
  OPENAPI_PATH,
  SNAPSHOT_PATH,
  TERMINAL_STATUSES,
  UPLOADS_PATH,
  type ErrorName,
} from './contract.js';
import { CONSOLE_FILES, CONSOLE_PATH, CONSOLE_SECURITY_HEADERS } from './routes/console-files.js';
import { SERVICE_NAME, SERVICE_VERSION } from './service-info.js';

/** The OpenAPI version the document follows. */
export const OPENAPI_VERSION = '3.1.0';

/** A JSON value of the document (schemas, operations, …). */
export type Json = { [key: string]: JsonValue };
type JsonValue = string | number | boolean | null | JsonValue[] | Json;

/** `x-snapshot-terminal-status`: the run's terminal status on `GET /admin/run` answers (routes/admin-run.ts). */
export const HEADER_TERMINAL_STATUS = 'x-snapshot-terminal-status';

/** Why each contract error is answered (the table in docs/DESIGN.md § Errors): every error must have one. */
export const ERROR_WHEN = Object.freeze({
  invalidToken: 'Missing, malformed, forged, expired or unverifiable bearer token (header `www-authenticate: Bearer`).',
  missingScope:
    'A verified token without valid `organizationId`/`agentId`/`conversationId` (worker) or `organizationId` (admin), or with a malformed `runId` claim.',
  invalidJson: 'Body not a JSON object, not UTF-8, or falsely claiming gzip or br.',
  invalidTerminalStatus: `\`terminalStatus\` is not one of ${TERMINAL_STATUSES.map((s) => `\`${s}\``).join(', ')}.`,
  missingSnapshot: '`snapshotJsonl` is not a non-empty, well-formed (no lone surrogate) string.',
  tooLarge:
    'Snapshot larger than `MAX_SNAPSHOT_BYTES` (UTF-8 bytes), a compressed body that decodes past its bound, upload `bytes` or a decoded upload past `MAX_UPLOAD_BYTES`, or (locally) a request past the 6 MB Lambda payload limit.',
  invalidRunId: 'Body `runId` is not a positive safe integer (`7.0` is 7).',
  runOutOfScope: 'Body `runId` differs from the token\'s `runId` (or the token has none).',
  alreadyExists: 'The run was already claimed (by anyone, with any status).',
  resetFenced: 'The run is not in the conversation\'s current reset generation: the conversation was cleared after the run started.',
  noSnapshot: 'Nothing is published for the conversation.',
  invalidAppend: 'Append: `appendJsonl` not a well-formed string, `base` not exactly `{runId, bytes, sha256}`, or `sha256` not 64 lowercase hex.',
  baseMismatch: 'Append: `base` is not a stored completed run of the current generation with that length and sha256 (send the whole file).',
  digestMismatch: 'Append: the stored base plus `appendJsonl` do not hash to `sha256`.',
  invalidBaseRunId: `With \`A-IM: ${IM_APPEND}\`: \`${HEADER_BASE_RUN_ID}\` is not a positive decimal integer (no sign, no leading zero, ≤ 16 digits).`,
  invalidUploadSize: '`bytes` is not a positive integer.',
  invalidContentEncoding: '`contentEncoding` is not `gzip` or `identity`.',
  invalidUploadId: '`uploadId` is not a string of 1–4096 characters.',
  invalidParts: '`parts` is not 1–10,000 `{partNumber 1–10000, etag 1–256 chars}`.',
  invalidGeneration: `The echoed \`${HEADER_GENERATION}\` is not a non-negative decimal integer.`,
  uploadNotFound: 'Undecodable `uploadId`, or no uploaded object under the caller\'s scope.',
  uploadInvalid:
    'The upload is not gzip when declared gzip, empty, not of the announced size, or its multipart parts are not exactly 1..n as handed out (or refused by S3).',
  unsupportedEncoding: 'Request `content-encoding` other than identity, gzip, x-gzip or br.',
  notAcceptable: 'Too large to answer inline, stored as gzip, and the client refuses gzip.',
  notFound: 'No such conversation, run, receipt or console file (in the token\'s organization).',
  adminScopeRequired: 'A verified token without `transcripts:admin` among its `scope` values (every worker token).',
  invalidQuery: 'An unknown, repeated, missing or malformed query parameter (ids must be valid ids, numbers in range).',
  invalidCursor: 'A cursor this service did not hand out for this listing, organization, agent filter, conversation or run.',
  invalidErasureScope: 'Unknown fields, malformed ids, or `conversationId` without `agentId`.',
  badRequest: 'Local server only: a request that cannot become an API Gateway event.',
  headersTooLarge: 'Local server only: request headers over 16 KiB.',
  requestTimeout: 'Local server only: the request took too long to arrive.',
  methodNotAllowed: 'Defined but not answered by any route.',
  unavailable: 'Transient storage or key-source failure, or the request deadline passed: retry after `retry-after` seconds.',
  internal: 'Anything unexpected (details only in the log), including stored bytes that are missing or do not match their digest.',
} satisfies Record<ErrorName, string>);

// ------------------------------------------------------------------------------------------- helpers

const ref = (kind: 'schemas' | 'headers', name: string): Json => ({ $ref: `#/components/${kind}/${name}` });
const schemaRef = (name: string) => ref('schemas', name);
/** The component name of an error's schema: `Error.<code>`. */
export const errorSchemaName = (name: ErrorName) => `Error.${ERRORS[name].code}`;
const str = (extra: Json = {}): Json => ({ type: 'string', ...extra });
const int = (minimum: number, extra: Json = {}): Json => ({ type: 'integer', minimum, ...extra });
const SAFE_MAX = Number.MAX_SAFE_INTEGER;
const DECIMAL = '^(0|[1-9][0-9]*)$';
const POSITIVE_DECIMAL = '^[1-9][0-9]*$';
const SHA256 = '^[0-9a-f]{64}$';
const obj = (properties: Record<string, Json>, required: string[] = Object.keys(properties), extra: Json = {}): Json => ({
  type: 'object',
  additionalProperties: false,
  required,
  properties,
  ...extra,
});

/** A header of an answer (all our header values are strings; patterns say what they hold). */
function header(description: string, schema: Json, required = true): Json {
  return { description, required, schema };
}

/** `{name: $ref}` for component headers named like the header itself. */
const headers = (names: readonly string[]): Record<string, Json> => Object.fromEntries(names.map((n) => [n, ref('headers', n)]));
/** The optional `content-encoding: gzip` of an answer carrying snapshot bytes. */
const GZIP_HEADER = { 'content-encoding': ref('headers', 'content-encoding.gzip') };

// ------------------------------------------------------------------------------------------- components

const ID = str({ minLength: 1, maxLength: 1024, description: 'An id: non-empty, well-formed UTF-16 (no lone surrogates), at most 1,024 UTF-8 bytes; may contain `/`.' });
const RUN_ID = int(1, { maximum: SAFE_MAX, description: 'A run id: a positive safe integer. "Latest" is the highest published run id.' });
const SHA = str({ pattern: SHA256, description: 'Lowercase hex SHA-256 of the decoded (uncompressed) bytes.' });
const COUNT = int(0, { maximum: SAFE_MAX });
const TIME = str({ format: 'date-time', description: 'ISO 8601, UTC.' });
const CURSOR = { type: ['string', 'null'], description: 'Pass back as `cursor` for the next page; null on the last page. Opaque and signed: bound to this listing, organization and filter.' };

const RECEIPT = obj({
  receiptId: str({ pattern: '^[0-9]{8}T[0-9]{9}Z-[A-Za-z0-9_-]{1,64}$', description: '`<UTC yyyymmddThhmmssSSSZ of its start>-<uuid>`: sorts by start time.' }),
  scope: obj({ organizationId: ID, agentId: ID, conversationId: ID }, ['organizationId'], { description: 'What is erased: the organization, one agent, or one conversation.' }),
  state: { enum: ['running', 'completed'] },
  reason: { type: ['string', 'null'], description: '`expired` for the idle-conversation expiry (CONVERSATION_TTL_DAYS); null for an operator\'s erasure.' },
  actor: { type: ['string', 'null'], description: 'The admin token\'s `sub`, or null.' },
  conversations: { ...COUNT, description: 'Conversations from which something was removed (so far, while running).' },
  runs: { ...COUNT, description: 'Run records removed (any status, any generation).' },
  objects: { ...COUNT, description: 'S3 objects removed (snapshots, chain objects, uploads, materialized copies).' },
  bytes: { ...COUNT, description: 'Stored (compressed) bytes of those objects.' },
  startedAt: TIME,
  completedAt: { type: ['string', 'null'], format: 'date-time', description: 'ISO 8601 (UTC); null while running.' },
});

const SCHEMAS: Record<string, Json> = {
  Error: obj({ error: str({ description: 'The contract\'s message (what existing workers read).' }), code: str({ description: 'Stable machine-readable code.' }) }, ['error', 'code'], {
    description: 'Every error body. Each `Error.<code>` schema fixes one pair.',
  }),
  ...Object.fromEntries(
    (Object.keys(ERRORS) as ErrorName[]).map((name) => {
      const e = ERRORS[name];
      return [errorSchemaName(name), obj({ error: { const: e.message }, code: { const: e.code } }, ['error', 'code'], { description: `${e.status}: ${ERROR_WHEN[name]}` })];
    }),
  ),
  TerminalStatus: { enum: [...TERMINAL_STATUSES], description: 'Only `completed` runs are ever served; the others are stored (and listed) but never published.' },
  Snapshot: str({ contentMediaType: 'application/x-ndjson', description: 'The snapshot\'s bytes verbatim: JSON Lines (`session.jsonl`).' }),
  SnapshotPost: obj(
    { terminalStatus: schemaRef('TerminalStatus'), snapshotJsonl: str({ minLength: 1, description: 'The whole file, at most `MAX_SNAPSHOT_BYTES` (4 MiB) UTF-8 bytes.' }), runId: RUN_ID },
    undefined,
    { additionalProperties: true, description: 'A whole-file write (a body with `snapshotJsonl` is one, whatever else it carries; unknown fields are ignored).' },
  ),
  AppendPost: obj(
    {
      terminalStatus: schemaRef('TerminalStatus'),
      runId: RUN_ID,
      appendJsonl: str({ description: 'The bytes appended to the base run (well-formed UTF-16).' }),
      base: obj({ runId: RUN_ID, bytes: COUNT, sha256: SHA }, undefined, { description: 'The stored completed run this run extends.' }),
      sha256: { ...SHA, description: 'SHA-256 of the whole file: base + appended bytes.' },
    },
    undefined,
    { additionalProperties: true, description: 'Incremental sync: the run is the base run\'s bytes + `appendJsonl` (412 `base_mismatch`: send the whole file).' },
  ),
  UploadCommitPost: obj(
    {
      terminalStatus: schemaRef('TerminalStatus'),
      runId: RUN_ID,
      uploadId: str({ minLength: 1, maxLength: 4096, description: 'From the ticket (`POST …/uploads`).' }),
      parts: {
        type: 'array',
        minItems: 1,
        maxItems: 10_000,
        description: 'Multipart uploads only: every part handed out, with the ETag S3 answered its PUT.',
        items: obj({ partNumber: int(1, { maximum: 10_000 }), etag: str({ minLength: 1, maxLength: 256 }) }),
      },
    },
    ['terminalStatus', 'runId', 'uploadId'],
    { additionalProperties: true, description: 'Commits a presigned upload (no `snapshotJsonl`).' },
  ),
  WriteResult: obj(
    {
      id: { ...RUN_ID, description: 'The run id (what existing workers read).' },
      runId: RUN_ID,
      sha256: SHA,
      bytes: { ...COUNT, description: 'Decoded size of the stored snapshot.' },
      latest: { type: 'boolean', description: 'False when a higher run is already published, and for every non-completed run.' },
    },
  ),
  DeleteResult: obj({ deleted: { ...COUNT, description: 'Run records removed (0 the second time: idempotent).' } }),
  UploadRequest: obj(
    {
      runId: RUN_ID,
      bytes: int(1, { maximum: SAFE_MAX, description: 'Bytes the client will transfer (the compressed size for gzip), at most `MAX_UPLOAD_BYTES`.' }),
      contentEncoding: { enum: ['gzip', 'identity'], default: 'identity' },
    },
    ['runId', 'bytes'],
    { additionalProperties: true },
  ),
  UploadTicket: {
    oneOf: [
      obj(
        { uploadId: str({ minLength: 1 }), expiresAt: TIME, encoding: { enum: ['gzip', 'identity'] }, url: str({ format: 'uri', description: 'Presigned PUT of the whole body.' }) },
        undefined,
        { title: 'Single PUT' },
      ),
      obj(
        {
          uploadId: str({ minLength: 1 }),
          expiresAt: TIME,
          encoding: { enum: ['gzip', 'identity'] },
          partBytes: int(1, { description: 'Size of every part but the last.' }),
          parts: { type: 'array', minItems: 1, items: obj({ partNumber: int(1, { maximum: 10_000 }), url: str({ format: 'uri', description: 'Presigned UploadPart.' }) }) },
        },
        undefined,
        { title: 'Multipart (past MULTIPART_THRESHOLD_BYTES)' },
      ),
    ],
  },
  Conversation: obj({
    agentId: ID,
    conversationId: ID,
    lastActivityAt: { type: ['string', 'null'], format: 'date-time' },
    latestRunId: { type: ['integer', 'null'], minimum: 1, description: 'Null when nothing is published.' },
    latestBytes: { type: ['integer', 'null'], minimum: 0 },
    runs: { ...COUNT, description: 'HEAD\'s counter (approximate).' },
    bytes: { ...COUNT, description: 'HEAD\'s counter (approximate).' },
  }),
  ConversationsPage: obj({ conversations: { type: 'array', items: schemaRef('Conversation') }, nextCursor: CURSOR }),
  Run: obj({
    runId: RUN_ID,
    terminalStatus: schemaRef('TerminalStatus'),
    bytes: COUNT,
    storedBytes: COUNT,
    createdAt: { type: ['string', 'null'], format: 'date-time' },
    sha256: SHA,
    generation: COUNT,
    state: { enum: ['latest', 'fenced', 'superseded'], description: '`latest`: HEAD serves it; `fenced`: of a generation before HEAD\'s; `superseded`: any other.' },
  }),
  RunsPage: obj({ runs: { type: 'array', items: schemaRef('Run') }, nextCursor: CURSOR }),
  Line: obj({
    line: int(1, { description: '1-based line number.' }),
    offset: { ...COUNT, description: 'Byte offset of the line in the decoded run.' },
    bytes: { ...COUNT, description: 'The line\'s length (UTF-8 bytes, without its `\\n`).' },
    text: str({ description: 'The line as text (invalid UTF-8 → U+FFFD), cut when `truncated`.' }),
    truncated: { type: 'boolean' },
  }),
  LinesPage: obj({ runId: RUN_ID, bytes: COUNT, lines: { type: 'array', items: schemaRef('Line') }, nextCursor: CURSOR }),
  Agent: obj({ agentId: ID, conversations: COUNT, runs: COUNT, bytes: COUNT }),
  AgentsPage: obj({ agents: { type: 'array', items: schemaRef('Agent') }, nextCursor: CURSOR }),
  ErasureRequest: obj({ agentId: ID, conversationId: ID }, [], { description: '`{}` erases the whole organization; `agentId` one agent; both one conversation.' }),
  Receipt: RECEIPT,
  ReceiptsPage: obj({ erasures: { type: 'array', items: schemaRef('Receipt') }, nextCursor: CURSOR }),
  Health: obj({ status: { const: 'ok' }, service: { const: SERVICE_NAME }, version: str({ description: 'The deployed `package.json` version.' }) }),
  OpenApiDocument: {
    type: 'object',
    required: ['openapi', 'info', 'paths'],
    properties: { openapi: { const: OPENAPI_VERSION }, info: { type: 'object' }, paths: { type: 'object' } },
    description: 'This document.',
  },
};

const SNAPSHOT_ETAG = str({ pattern: '^"[0-9a-f]{64}"$' });
const HEADERS: Record<string, Json> = {
  [HEADER_GENERATION]: header('The conversation\'s reset generation; a writer may echo it on POST and uploads.', str({ pattern: DECIMAL })),
  [HEADER_RUN_ID]: header('The run answered.', str({ pattern: POSITIVE_DECIMAL })),
  [HEADER_SHA256]: header('SHA-256 (hex) of the decoded snapshot.', str({ pattern: SHA256 })),
  etag: header('`"<sha256>"` of the decoded snapshot; send it back in `If-None-Match`.', SNAPSHOT_ETAG),
  vary: header('Answers depend on `Accept-Encoding`.', { const: 'accept-encoding' }),
  'content-encoding.gzip': header('`gzip` when the stored gzip is sent as is (the client accepts gzip).', { const: 'gzip' }, false),
  [HEADER_TERMINAL_STATUS]: header('The run\'s terminal status.', schemaRef('TerminalStatus')),
  im: header('RFC 3229: the instance-manipulation applied.', { const: IM_APPEND }),
  'delta-base': header('RFC 3229: the entity tag of the run the delta applies to.', SNAPSHOT_ETAG),
  [HEADER_BYTES]: header('Decoded size of the whole new run (check before hashing).', str({ pattern: DECIMAL })),
  'www-authenticate': header('RFC 6750.', { const: 'Bearer' }),
  'retry-after': header('Seconds to wait before retrying.', str({ pattern: DECIMAL })),
  'location.presigned': header('Presigned S3 GET URL (valid `PRESIGN_TTL_SECONDS`, 300 s); S3 serves the stored encoding.', str({ format: 'uri' })),
  'location.receipt': header('The running receipt: `GET` it, or `POST` the same scope again to resume.', str({ pattern: `^${ADMIN_PATHS.erasures}/` })),
  'cache-control.no-store': header('Never cached.', { const: 'no-store' }),
  'cache-control.private-no-cache': header('Per token; revalidate with `If-None-Match`.', { const: 'private, no-cache' }),
  'cache-control.private-no-store': header('Per token; never stored (any run, audited).', { const: 'private, no-store' }),
  'cache-control.no-cache': header('Public; revalidate with `If-None-Match`.', { const: 'no-cache' }),
  'etag.console': header('Strong tag of the file (first 32 hex of its SHA-256).', str({ pattern: '^"[0-9a-f]{32}"$' })),
  'etag.document': header('Strong tag of this document (SHA-256 of its JSON).', SNAPSHOT_ETAG),
  ...Object.fromEntries(Object.entries(CONSOLE_SECURITY_HEADERS).map(([name, value]) => [name, header('On every console answer.', { const: value })])),
};

/** The `cache-control` header in one of its documented forms. */
const cacheControl = (form: 'no-store' | 'private-no-cache' | 'private-no-store' | 'no-cache') => ref('headers', `cache-control.${form}`);

const SNAPSHOT_HEADERS = (cache: 'private-no-cache' | 'private-no-store') => ({
  ...headers([HEADER_GENERATION, HEADER_RUN_ID, HEADER_SHA256, 'etag', 'vary']),
  'cache-control': cacheControl(cache),
});
const CONSOLE_HEADERS = headers(Object.keys(CONSOLE_SECURITY_HEADERS));

// ------------------------------------------------------------------------------------------- errors

/** An error an operation answers, with headers beyond the defaults (`cache-control: no-store`, and `www-authenticate` on 401, `retry-after` on 503). */
type ErrorUse = ErrorName | { readonly error: ErrorName; readonly headers: Record<string, Json> };

const WORKER_AUTH: ErrorUse[] = ['invalidToken', 'missingScope'];
const STORAGE: ErrorUse[] = ['internal', 'unavailable'];
const BODY: ErrorUse[] = ['unsupportedEncoding', 'tooLarge', 'invalidJson'];
const ADMIN_AUTH: ErrorUse[] = ['invalidToken', 'adminScopeRequired', 'missingScope', 'invalidQuery'];

function defaultErrorHeaders(name: ErrorName): Record<string, Json> {
  return {
    'cache-control': cacheControl('no-store'),
    ...(name === 'invalidToken' && headers(['www-authenticate'])),
    ...(name === 'unavailable' && headers(['retry-after'])),
  };
}

/** The error answers of an operation, one response per status: its schema is `oneOf` the codes of that status. */
function errorResponses(uses: readonly ErrorUse[]): Record<string, Json> {
  const byStatus = new Map<number, { name: ErrorName; headers: Record<string, Json> }[]>();
  for (const use of uses) {
    const name = typeof use === 'string' ? use : use.error;
    const hs = { ...defaultErrorHeaders(name), ...(typeof use === 'string' ? {} : use.headers) };
    const list = byStatus.get(ERRORS[name].status) ?? [];
    if (list.some((u) => u.name === name)) throw new Error(`openapi: ${name} listed twice`);
    list.push({ name, headers: hs });
    byStatus.set(ERRORS[name].status, list);
  }
  const out: Record<string, Json> = {};
  for (const [status, list] of [...byStatus].sort(([a], [b]) => a - b)) {
    // A header is documented when every code of the status sends it (same form).
    const common = Object.entries(list[0]!.headers).filter(([n, v]) => list.every((u) => JSON.stringify(u.headers[n]) === JSON.stringify(v)));
    const schemas = list.map((u) => schemaRef(errorSchemaName(u.name)));
    out[String(status)] = {
      description: list.map((u) => `\`${ERRORS[u.name].code}\`: ${ERROR_WHEN[u.name]}`).join(' '),
      headers: Object.fromEntries(common),
      content: { 'application/json': { schema: schemas.length === 1 ? schemas[0]! : { oneOf: schemas } } },
    };
  }
  return out;
}

// ------------------------------------------------------------------------------------------- operations

const json = (schema: Json): Json => ({ 'application/json': { schema } });
const queryParam = (name: string, required: boolean, schema: Json, description: string): Json => ({ name, in: 'query', required, schema, description });
const headerParam = (name: string, schema: Json, description: string): Json => ({ name, in: 'header', required: false, schema, description });

const PARAMS = {
  agentId: (required: boolean) => queryParam('agentId', required, ID, 'The agent id (raw; percent-encode it).'),
  conversationId: queryParam('conversationId', true, ID, 'The conversation id (raw; percent-encode it).'),
  runId: (required: boolean, description: string) => queryParam('runId', required, RUN_ID, description),
  limit: (l: { default: number; max: number }, what: string) => queryParam('limit', false, int(1, { maximum: l.max, default: l.default }), `${what} per page.`),
  cursor: queryParam('cursor', false, str({ minLength: 1, maxLength: 4096 }), 'The previous page\'s `nextCursor`.'),
  ifNoneMatch: headerParam('if-none-match', str(), '`"<sha256>"` of the copy held (strong or `W/`, in a list, or `*`): `304` when it is the one answered.'),
  acceptEncoding: headerParam('accept-encoding', str(), 'With gzip acceptable the stored gzip is sent as is; without the header an inline body is identity.'),
  contentEncoding: headerParam('content-encoding', { enum: ['identity', 'gzip', 'x-gzip', 'br'] }, 'The body\'s coding (anything else: `415`).'),
  generation: headerParam(HEADER_GENERATION, str({ pattern: DECIMAL }), 'The generation the worker hydrated at: fences the write by order instead of by the token\'s `iat`.'),
};

const WORKER_SECURITY = [{ workerToken: [] }];
const ADMIN_SECURITY = [{ adminToken: [] }];

function operation(op: {
  id: string;
  tag: string;
  summary: string;
  description: string;
  security: Json[];
  parameters?: Json[];
  requestBody?: Json;
  responses: Record<string, Json>;
  errors?: readonly ErrorUse[];
}): Json {
  return {
    operationId: op.id,
    tags: [op.tag],
    summary: op.summary,
    description: op.description,
    security: op.security,
    ...(op.parameters && { parameters: op.parameters }),
    ...(op.requestBody && { requestBody: op.requestBody }),
    responses: { ...op.responses, ...errorResponses(op.errors ?? []) },
  };
}

const NDJSON_CONTENT = { 'application/x-ndjson': { schema: schemaRef('Snapshot') } };

function hydrateResponses(cache: 'private-no-cache' | 'private-no-store', extra: Record<string, Json> = {}): Record<string, Json> {
  const base = { ...SNAPSHOT_HEADERS(cache), ...extra };
  return {
    '200': { description: 'The snapshot, inline (≤ `INLINE_RESPONSE_MAX_BYTES` to send).', headers: { ...base, ...GZIP_HEADER }, content: NDJSON_CONTENT },
    '304': { description: '`If-None-Match` names the run answered (one DynamoDB read, no S3 read).', headers: base },
    '307': { description: 'Too large to answer inline: `location` is a presigned S3 GET (follow it; it needs no token).', headers: { ...base, location: ref('headers', 'location.presigned') } },
  };
}

const PATHS: Record<string, Json> = {
  [SNAPSHOT_PATH]: {
    get: operation({
      id: 'getSnapshot',
      tag: 'worker',
      summary: 'Hydrate: the latest completed snapshot of the token\'s conversation',
      description:
        'Answers the highest published (completed) run. Every answer about a run carries its id, sha256, `etag` and the conversation\'s generation. ' +
        `A client that holds a run may ask for only the missing bytes (RFC 3229): \`A-IM: ${IM_APPEND}\`, \`If-None-Match: "<held sha256>"\` and \`${HEADER_BASE_RUN_ID}\`; ` +
        'when the latest run extends that run and the missing bytes fit inline, the answer is `226` with only those bytes; otherwise whatever a plain GET gets.',
      security: WORKER_SECURITY,
      parameters: [
        PARAMS.ifNoneMatch,
        PARAMS.acceptEncoding,
        headerParam('a-im', str(), `\`${IM_APPEND}\` asks for a delta (with \`If-None-Match\` and \`${HEADER_BASE_RUN_ID}\`).`),
        headerParam(HEADER_BASE_RUN_ID, str({ pattern: '^[1-9][0-9]{0,15}$' }), 'The run id of the copy held (delta hydrate).'),
      ],
      responses: {
        ...hydrateResponses('private-no-cache'),
        '226': {
          description: `IM Used (RFC 3229): only the bytes to append to the held run (\`im: ${IM_APPEND}\`); \`etag\` is the new whole file\'s.`,
          headers: { ...SNAPSHOT_HEADERS('private-no-cache'), ...headers(['im', 'delta-base', HEADER_BYTES]), ...GZIP_HEADER },
          content: NDJSON_CONTENT,
        },
      },
      errors: [
        ...WORKER_AUTH,
        'invalidBaseRunId',
        { error: 'noSnapshot', headers: { ...headers([HEADER_GENERATION]), 'cache-control': cacheControl('private-no-cache') } },
        { error: 'notAcceptable', headers: headers([HEADER_GENERATION]) },
        ...STORAGE,
      ],
    }),
    post: operation({
      id: 'postSnapshot',
      tag: 'worker',
      summary: 'Store a finished run\'s snapshot: whole, as an append, or by committing a presigned upload',
      description:
        'Checks in order (first failure wins): token, scope, echoed generation; content coding, decoded size, JSON; `terminalStatus`; the body\'s form and its fields; ' +
        'size before `runId`; `runId` = the token\'s; then storage (`409`, `412`, upload checks). Runs that did not complete are stored but never published.',
      security: WORKER_SECURITY,
      parameters: [PARAMS.contentEncoding, PARAMS.generation],
      requestBody: {
        required: true,
        description: 'JSON, optionally gzip or br encoded (`content-encoding`).',
        content: json({ anyOf: [schemaRef('SnapshotPost'), schemaRef('AppendPost'), schemaRef('UploadCommitPost')] }),
      },
      responses: { '200': { description: 'Stored (and published when it is the highest completed run).', headers: { 'cache-control': cacheControl('no-store') }, content: json(schemaRef('WriteResult')) } },
      errors: [
        ...WORKER_AUTH,
        'invalidGeneration',
        ...BODY,
        'invalidTerminalStatus',
        'invalidUploadId',
        'invalidRunId',
        'invalidParts',
        'invalidAppend',
        'missingSnapshot',
        'runOutOfScope',
        'alreadyExists',
        'resetFenced',
        'baseMismatch',
        'digestMismatch',
        'uploadNotFound',
        'uploadInvalid',
        ...STORAGE,
      ],
    }),
    delete: operation({
      id: 'deleteSnapshot',
      tag: 'worker',
      summary: 'Clear the conversation: fence older runs, delete every record and object',
      description: 'Idempotent. A conversation or per-run token of the conversation may clear it.',
      security: WORKER_SECURITY,
      responses: { '200': { description: 'Cleared.', headers: { 'cache-control': cacheControl('no-store') }, content: json(schemaRef('DeleteResult')) } },
      errors: [...WORKER_AUTH, ...STORAGE],
    }),
  },
  [UPLOADS_PATH]: {
    post: operation({
      id: 'createUpload',
      tag: 'worker',
      summary: 'Presigned upload URL(s) for a snapshot past the direct-POST limit',
      description:
        'PUT the bytes to `url` (or each part to its URL, collecting the ETags), then commit with `POST ' +
        `${SNAPSHOT_PATH}\` \`{terminalStatus, runId, uploadId, parts?}\`. The commit measures what was stored; it never trusts the client.`,
      security: WORKER_SECURITY,
      parameters: [PARAMS.contentEncoding, PARAMS.generation],
      requestBody: { required: true, content: json(schemaRef('UploadRequest')) },
      responses: { '200': { description: 'The upload ticket.', headers: { 'cache-control': cacheControl('no-store') }, content: json(schemaRef('UploadTicket')) } },
      errors: [...WORKER_AUTH, 'invalidGeneration', ...BODY, 'invalidRunId', 'invalidUploadSize', 'invalidContentEncoding', 'runOutOfScope', ...STORAGE],
    }),
  },
  [ADMIN_PATHS.conversations]: {
    get: operation({
      id: 'adminListConversations',
      tag: 'operator',
      summary: 'The organization\'s conversations (or one agent\'s), newest activity first',
      description: 'One Query of a GSI per page (eventually consistent).',
      security: ADMIN_SECURITY,
      parameters: [PARAMS.agentId(false), PARAMS.limit(ADMIN_PAGE_LIMITS.conversations, 'Conversations'), PARAMS.cursor],
      responses: { '200': { description: 'A page.', headers: { 'cache-control': cacheControl('no-store') }, content: json(schemaRef('ConversationsPage')) } },
      errors: [...ADMIN_AUTH, 'invalidCursor', ...STORAGE],
    }),
  },
  [ADMIN_PATHS.runs]: {
    get: operation({
      id: 'adminListRuns',
      tag: 'operator',
      summary: 'A conversation\'s stored runs, highest run id first, with their state',
      description: '`404` only when the conversation is neither listed nor has a run (never written, or erased).',
      security: ADMIN_SECURITY,
      parameters: [PARAMS.agentId(true), PARAMS.conversationId, PARAMS.limit(ADMIN_PAGE_LIMITS.runs, 'Runs'), PARAMS.cursor],
      responses: { '200': { description: 'A page.', headers: { 'cache-control': cacheControl('no-store') }, content: json(schemaRef('RunsPage')) } },
      errors: [...ADMIN_AUTH, 'invalidCursor', 'notFound', ...STORAGE],
    }),
  },
  [ADMIN_PATHS.run]: {
    get: operation({
      id: 'adminReadRun',
      tag: 'operator',
      summary: 'One stored run\'s bytes, whatever its status or generation (audited)',
      description: 'Answered as hydrate answers the latest run (gzip, inline limit, presigned redirect), never as a delta. Every `200`/`307` writes an audit log line.',
      security: ADMIN_SECURITY,
      parameters: [PARAMS.agentId(true), PARAMS.conversationId, PARAMS.runId(true, 'The run to read.'), PARAMS.ifNoneMatch, PARAMS.acceptEncoding],
      responses: hydrateResponses('private-no-store', headers([HEADER_TERMINAL_STATUS])),
      errors: [...ADMIN_AUTH, 'notFound', 'notAcceptable', ...STORAGE],
    }),
  },
  [ADMIN_PATHS.lines]: {
    get: operation({
      id: 'adminReadLines',
      tag: 'operator',
      summary: 'A run\'s JSONL lines by range (streamed; stops after the page)',
      description: `\`runId\` defaults to the run HEAD serves. A page holds at most \`limit\` lines and ${LINES_PAGE_TEXT_BYTES / 1024 / 1024} MiB of text; a longer line is cut and marked \`truncated\`.`,
      security: ADMIN_SECURITY,
      parameters: [PARAMS.agentId(true), PARAMS.conversationId, PARAMS.runId(false, 'The run (default: the latest).'), PARAMS.limit(ADMIN_PAGE_LIMITS.lines, 'Lines'), PARAMS.cursor],
      responses: { '200': { description: 'A page.', headers: { 'cache-control': cacheControl('no-store') }, content: json(schemaRef('LinesPage')) } },
      errors: [...ADMIN_AUTH, 'invalidCursor', 'notFound', ...STORAGE],
    }),
  },
  [ADMIN_PATHS.agents]: {
    get: operation({
      id: 'adminListAgents',
      tag: 'operator',
      summary: 'The organization\'s agents with conversation, run and byte counts',
      description: 'In registry order (by encoded agent id). Counts are sums of approximate counters.',
      security: ADMIN_SECURITY,
      parameters: [PARAMS.limit(ADMIN_PAGE_LIMITS.agents, 'Agents'), PARAMS.cursor],
      responses: { '200': { description: 'A page.', headers: { 'cache-control': cacheControl('no-store') }, content: json(schemaRef('AgentsPage')) } },
      errors: [...ADMIN_AUTH, 'invalidCursor', ...STORAGE],
    }),
  },
  [ADMIN_PATHS.erasures]: {
    post: operation({
      id: 'adminErase',
      tag: 'operator',
      summary: 'Erase a conversation, an agent or the organization, with a receipt',
      description: 'Works until shortly before the request deadline; `202` with the running receipt when not done (POST the same scope again to resume). No query parameters.',
      security: ADMIN_SECURITY,
      parameters: [PARAMS.contentEncoding],
      requestBody: { required: true, content: json(schemaRef('ErasureRequest')) },
      responses: {
        '200': { description: 'Completed.', headers: { 'cache-control': cacheControl('no-store') }, content: json(schemaRef('Receipt')) },
        '202': { description: 'Still running.', headers: { 'cache-control': cacheControl('no-store'), location: ref('headers', 'location.receipt') }, content: json(schemaRef('Receipt')) },
      },
      errors: [...ADMIN_AUTH, ...BODY, 'invalidErasureScope', ...STORAGE],
    }),
    get: operation({
      id: 'adminListReceipts',
      tag: 'operator',
      summary: 'The organization\'s erasure receipts, newest first',
      description: 'One Query per page.',
      security: ADMIN_SECURITY,
      parameters: [PARAMS.limit(ADMIN_PAGE_LIMITS.erasures, 'Receipts'), PARAMS.cursor],
      responses: { '200': { description: 'A page.', headers: { 'cache-control': cacheControl('no-store') }, content: json(schemaRef('ReceiptsPage')) } },
      errors: [...ADMIN_AUTH, 'invalidCursor', ...STORAGE],
    }),
  },
  [ADMIN_PATHS.erasure]: {
    get: operation({
      id: 'adminGetReceipt',
      tag: 'operator',
      summary: 'One erasure receipt',
      description: 'A running receipt\'s counts are the sums so far. No query parameters.',
      security: ADMIN_SECURITY,
      parameters: [{ name: 'receiptId', in: 'path', required: true, schema: str({ minLength: 1 }), description: 'From `POST /admin/erasures` or the listing.' }],
      responses: { '200': { description: 'The receipt.', headers: { 'cache-control': cacheControl('no-store') }, content: json(schemaRef('Receipt')) } },
      errors: [...ADMIN_AUTH, 'notFound', ...STORAGE],
    }),
  },
  [CONSOLE_PATH]: {
    get: operation({
      id: 'console',
      tag: 'console',
      summary: 'The operator console (a static page; no token, no data)',
      description: 'The page signs in with an admin token and calls the operator API with it. Strict CSP; revalidate with `If-None-Match`.',
      security: [],
      parameters: [headerParam('if-none-match', str(), 'The page\'s `etag`: `304` when unchanged.')],
      responses: {
        '200': { description: 'The page.', headers: { ...CONSOLE_HEADERS, 'cache-control': cacheControl('no-cache'), etag: ref('headers', 'etag.console') }, content: { 'text/html': { schema: str() } } },
        '304': { description: 'Unchanged.', headers: { ...CONSOLE_HEADERS, 'cache-control': cacheControl('no-cache'), etag: ref('headers', 'etag.console') } },
      },
      errors: ['internal'],
    }),
  },
  [`${CONSOLE_PATH}/{asset}`]: {
    get: operation({
      id: 'consoleAsset',
      tag: 'console',
      summary: 'The console\'s script and stylesheet',
      description: 'No token, no data.',
      security: [],
      parameters: [
        {
          name: 'asset',
          in: 'path',
          required: true,
          schema: str(),
          description: `One of ${Object.keys(CONSOLE_FILES)
            .filter((f) => f !== 'index.html')
            .map((f) => `\`${f}\``)
            .join(', ')}; anything else is \`404\`.`,
        },
        headerParam('if-none-match', str(), 'The file\'s `etag`: `304` when unchanged.'),
      ],
      responses: {
        '200': {
          description: 'The file.',
          headers: { ...CONSOLE_HEADERS, 'cache-control': cacheControl('no-cache'), etag: ref('headers', 'etag.console') },
          content: Object.fromEntries(
            Object.entries(CONSOLE_FILES)
              .filter(([f]) => f !== 'index.html')
              .map(([, type]) => [type.split(';')[0]!, { schema: str() }]),
          ),
        },
        '304': { description: 'Unchanged.', headers: { ...CONSOLE_HEADERS, 'cache-control': cacheControl('no-cache'), etag: ref('headers', 'etag.console') } },
      },
      errors: [{ error: 'notFound', headers: CONSOLE_HEADERS }, 'internal'],
    }),
  },
  [HEALTH_PATH]: {
    get: operation({
      id: 'health',
      tag: 'service',
      summary: 'Liveness: no token, no storage call',
      description: 'Says the API and its functions answer; storage health is what the alarms watch.',
      security: [],
      responses: { '200': { description: 'Up.', headers: { 'cache-control': cacheControl('no-store') }, content: json(schemaRef('Health')) } },
    }),
  },
  [OPENAPI_PATH]: {
    get: operation({
      id: 'openApi',
      tag: 'service',
      summary: 'This document (OpenAPI 3.1)',
      description: 'No token, no storage call.',
      security: [],
      parameters: [headerParam('if-none-match', str(), 'The document\'s `etag`: `304` when unchanged.')],
      responses: {
        '200': { description: 'The document.', headers: { 'cache-control': cacheControl('no-cache'), etag: ref('headers', 'etag.document') }, content: json(schemaRef('OpenApiDocument')) },
        '304': { description: 'Unchanged.', headers: { 'cache-control': cacheControl('no-cache'), etag: ref('headers', 'etag.document') } },
      },
    }),
  },
};

const TOKEN_RULES =
  'HS256 (shared secret) or RS/PS/ES/EdDSA (JWKS), as configured; `exp` and `iat` required (`iat` not in the future), `iss`/`aud` when configured. ' +
  'Send `Authorization: Bearer <JWT>`; never in a URL.';

/**
 * The OpenAPI 3.1 document of every route (a fresh object each call). Errors are listed per operation by
 * status, each status's body `oneOf` its `Error.<code>` schemas (fixed `error` and `code` from `ERRORS`).
 */
export function openApiDocument(): Json {
  const doc: Json = {
    openapi: OPENAPI_VERSION,
    info: {
      title: SERVICE_NAME,
      version: SERVICE_VERSION,
      summary: 'S3 + DynamoDB store for AI-agent session.jsonl transcripts',
      description:
        'Workers hydrate, store and clear one conversation\'s transcript snapshots with a worker token; operators list, read and erase with an admin token. ' +
        'Every error body is `{"error", "code"}` with `content-type: application/json; charset=utf-8`. New fields and headers may be added: clients ignore what they do not know. ' +
        'Paths and methods not listed here are answered by API Gateway itself (`404`); the local server answers them `404 not_found`, and requests it cannot parse `400 bad_request`, `408 request_timeout` or `431 headers_too_large`.',
      license: { name: 'MIT', identifier: 'MIT' },
    },
    tags: [
      { name: 'worker', description: 'Worker API: worker tokens (conversation or per-run).' },
      { name: 'operator', description: 'Operator API: admin tokens (`scope` contains `transcripts:admin`), one organization each.' },
      { name: 'console', description: 'The operator console: public static files.' },
      { name: 'service', description: 'Health and this document: public, no storage.' },
    ],
    paths: PATHS,
    components: {
      securitySchemes: {
        workerToken: {
          type: 'http',
          scheme: 'bearer',
          bearerFormat: 'JWT',
          description:
            'A worker token: claims `organizationId`, `agentId`, `conversationId` (the conversation it may read and clear) and, for writes, `runId` (the run it may store). ' +
            TOKEN_RULES,
        },
        adminToken: {
          type: 'http',
          scheme: 'bearer',
          bearerFormat: 'JWT',
          description:
            'An admin token: `scope` (space-delimited) containing `transcripts:admin`, `organizationId` (the only organization it reaches), optional `sub` (the actor in audit lines and receipts). ' +
            `Verified like worker tokens; a worker token on an operator route is \`403 ${ERRORS.adminScopeRequired.code}\`. ${TOKEN_RULES}`,
        },
      },
      schemas: SCHEMAS,
      headers: HEADERS,
    },
  };
  return structuredClone(doc);
}
