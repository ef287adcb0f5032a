/**
 * The HTTP contract, defined once. Handlers, the local adapter, the worker-client tests and the
 * contract tests all import from here, so a status code or message cannot drift between them.
 * docs/DESIGN.md § HTTP contract: shapes must stay drop-in compatible with existing workers — extras allowed, removals not.
 */

export const SNAPSHOT_PATH = '/worker/transcript/snapshot';
/** Presigned uploads for snapshots past the direct-POST limit (docs/DESIGN.md § Presigned uploads). */
export const UPLOADS_PATH = '/worker/transcript/snapshot/uploads';

/**
 * The operator API (docs/DESIGN.md § Operator API): admin tokens only. Ids travel as query parameters
 * (they may contain `/`); the receipt id is the only path parameter.
 */
export const ADMIN_PATHS = Object.freeze({
  conversations: '/admin/conversations',
  runs: '/admin/runs',
  run: '/admin/run',
  lines: '/admin/lines',
  agents: '/admin/agents',
  erasures: '/admin/erasures',
  /** API Gateway route path (`{receiptId}` is a path parameter). */
  erasure: '/admin/erasures/{receiptId}',
});

/**
 * Page sizes of the operator API's listings (docs/DESIGN.md § Operator API): `limit` query parameter bounds
 * and the default when it is absent. Shared by the routes and the OpenAPI document (openapi.ts).
 */
export const ADMIN_PAGE_LIMITS = Object.freeze({
  conversations: Object.freeze({ default: 50, max: 100 }),
  runs: Object.freeze({ default: 50, max: 100 }),
  /** Lines per page; a page also carries at most {@link LINES_PAGE_TEXT_BYTES} of text. */
  lines: Object.freeze({ default: 200, max: 1000 }),
  /** Each agent costs a registry Query and its counters' Queries, hence the smaller default. */
  agents: Object.freeze({ default: 20, max: 100 }),
  erasures: Object.freeze({ default: 50, max: 100 }),
});
/** Most text per `GET /admin/lines` page (JSON-encoded bytes of the lines' `text`): 1 MiB; a longer line is cut. */
export const LINES_PAGE_TEXT_BYTES = 1024 * 1024;

/**
 * Public routes: no token, no storage (docs/DESIGN.md § Health and API description). `GET /health` answers
 * `200 {"status": "ok", "service", "version"}`; `GET /openapi.json` the OpenAPI 3.1 document of every route.
 */
export const HEALTH_PATH = '/health';
export const OPENAPI_PATH = '/openapi.json';

export const NDJSON_CONTENT_TYPE = 'application/x-ndjson; charset=utf-8';
export const JSON_CONTENT_TYPE = 'application/json; charset=utf-8';

export const HEADER_RUN_ID = 'x-snapshot-run-id';
export const HEADER_SHA256 = 'x-snapshot-sha256';
/**
 * The conversation's reset generation: on every hydrate answer (200, 304, 307, 404); a worker echoes it
 * on its write (POST, upload, commit) so that a reset in between fences the write without any clock.
 */
export const HEADER_GENERATION = 'x-snapshot-generation';
/**
 * Delta hydrate (RFC 3229): a client that holds a stored run sends `A-IM: append`, its sha256 in
 * If-None-Match and the run's id in this header; the answer may be 226 IM Used with only the bytes
 * to append (`IM: append`, `Delta-Base`, and the whole length in `x-snapshot-bytes`).
 */
export const HEADER_BASE_RUN_ID = 'x-snapshot-base-run-id';
export const HEADER_BYTES = 'x-snapshot-bytes';
/** The instance-manipulation name of an append delta (RFC 3229 §5.2 allows registered or private names). */
export const IM_APPEND = 'append';

export const TERMINAL_STATUSES = ['completed', 'failed', 'timeout', 'cancelled'] as const;
export type TerminalStatus = (typeof TERMINAL_STATUSES)[number];

export interface ErrorSpec {
  readonly status: number;
  /** Stable machine-readable code (an extra field; `error` is what existing workers read). */
  readonly code: string;
  /** Exact `error` string from the contract. */
  readonly message: string;
}

function spec(status: number, code: string, message: string): ErrorSpec {
  return Object.freeze({ status, code, message });
}

export const ERRORS = Object.freeze({
  invalidToken: spec(401, 'invalid_token', 'Invalid token'),
  missingScope: spec(400, 'missing_scope', 'Token missing required scope'),
  invalidJson: spec(400, 'invalid_json', 'Invalid JSON body'),
  invalidTerminalStatus: spec(400, 'invalid_terminal_status', 'Invalid terminalStatus'),
  missingSnapshot: spec(400, 'missing_snapshot', 'Missing snapshotJsonl'),
  tooLarge: spec(413, 'snapshot_too_large', 'Snapshot too large'),
  invalidRunId: spec(400, 'invalid_run_id', 'Missing or invalid runId'),
  runOutOfScope: spec(403, 'run_out_of_scope', 'runId out of scope'),
  alreadyExists: spec(409, 'snapshot_exists', 'Snapshot already exists for run'),
  /**
   * Not in the original contract (which had no reset fence): a run whose token was issued before
   * the conversation was cleared may not publish its snapshot (I4). 409 because it conflicts with
   * the current state; a distinct code so clients can tell it from a duplicate.
   */
  resetFenced: spec(409, 'reset_fenced', 'Conversation was reset after this run started'),
  noSnapshot: spec(404, 'no_snapshot', 'No snapshot found'),
  // Incremental sync (extensions; existing workers never send appends).
  /** An append (`appendJsonl`) without a well-formed `base` {runId, bytes, sha256} and `sha256`. */
  invalidAppend: spec(400, 'invalid_append', 'Invalid append: base {runId, bytes, sha256} and sha256 must be well-formed'),
  /**
   * The append's base is not a stored completed run of the current generation with that length and
   * sha256 (RFC 9110 §15.5.13: a precondition of the request is false). The client sends the whole file.
   */
  baseMismatch: spec(412, 'base_mismatch', 'Append base does not match a stored run'),
  /** The stored base plus the appended bytes do not have the announced sha256. */
  digestMismatch: spec(400, 'sha256_mismatch', 'sha256 does not match base and appended bytes'),
  invalidBaseRunId: spec(400, 'invalid_base_run_id', 'Invalid x-snapshot-base-run-id'),
  // Presigned uploads and content negotiation (extensions; existing workers never see these).
  invalidUploadSize: spec(400, 'invalid_upload_size', 'Missing or invalid bytes'),
  invalidContentEncoding: spec(400, 'invalid_content_encoding', 'Invalid contentEncoding'),
  invalidUploadId: spec(400, 'invalid_upload_id', 'Missing or invalid uploadId'),
  invalidParts: spec(400, 'invalid_parts', 'Invalid parts'),
  invalidGeneration: spec(400, 'invalid_generation', 'Invalid x-snapshot-generation'),
  uploadNotFound: spec(400, 'upload_not_found', 'Upload not found'),
  uploadInvalid: spec(400, 'upload_invalid', 'Upload is not a valid snapshot'),
  unsupportedEncoding: spec(415, 'unsupported_content_encoding', 'Unsupported Content-Encoding'),
  notAcceptable: spec(406, 'not_acceptable', 'Snapshot too large to send without gzip'),
  notFound: spec(404, 'not_found', 'Not found'),
  // Operator API (admin tokens; docs/DESIGN.md § Operator API).
  /** A verified token without `transcripts:admin` among its `scope` values, on an admin route. */
  adminScopeRequired: spec(403, 'admin_scope_required', 'Token lacks the transcripts:admin scope'),
  /** An unknown, repeated, missing or malformed query parameter (ids must be valid ids, numbers in range). */
  invalidQuery: spec(400, 'invalid_query', 'Invalid query parameters'),
  /** A cursor that was not handed out by this service for this listing, organization and partition. */
  invalidCursor: spec(400, 'invalid_cursor', 'Invalid cursor'),
  /** `POST /admin/erasures`: `conversationId` without `agentId`, a malformed id, or an unknown field. */
  invalidErasureScope: spec(400, 'invalid_erasure_scope', 'Invalid erasure scope'),
  /** A request that cannot be turned into an API Gateway event (unparsable target, malformed request line or headers). */
  badRequest: spec(400, 'bad_request', 'Bad request'),
  headersTooLarge: spec(431, 'headers_too_large', 'Request headers too large'),
  requestTimeout: spec(408, 'request_timeout', 'Request timeout'),
  methodNotAllowed: spec(405, 'method_not_allowed', 'Method not allowed'),
  unavailable: spec(503, 'unavailable', 'Service temporarily unavailable'),
  internal: spec(500, 'internal_error', 'Internal error'),
} satisfies Record<string, ErrorSpec>);

export type ErrorName = keyof typeof ERRORS;

export interface ErrorBody {
  error: string;
  code: string;
}

export function errorBody(e: ErrorSpec): ErrorBody {
  return { error: e.message, code: e.code };
}
