import { promisify } from 'node:util';
import { brotliDecompress as brotliDecompressCb, gunzip as gunzipCb } from 'node:zlib';
// zod/mini: the same validators as `zod`, tree-shakable (the full build was 444 KiB of each 1 MiB bundle).
import * as z from 'zod/mini';
import { ERRORS, TERMINAL_STATUSES, type TerminalStatus } from './contract.js';
import { HttpError } from './errors.js';
import { isValidId } from './ids.js';

const gunzip = promisify(gunzipCb);
const brotliDecompress = promisify(brotliDecompressCb);

export interface SnapshotPost {
  readonly terminalStatus: TerminalStatus;
  readonly snapshot: Buffer;
  readonly runId: number;
}

/** A POST that commits a presigned upload instead of carrying the snapshot inline. */
export interface UploadCommitPost {
  readonly terminalStatus: TerminalStatus;
  readonly runId: number;
  readonly uploadId: string;
  readonly parts: { partNumber: number; etag: string }[] | undefined;
}

/** A POST that carries only the bytes appended to a stored run (incremental sync). */
export interface AppendPost {
  readonly terminalStatus: TerminalStatus;
  readonly runId: number;
  readonly append: Buffer;
  readonly base: { readonly runId: number; readonly bytes: number; readonly sha256: string };
  /** sha256 (hex) of the whole file: base + append. */
  readonly sha256: string;
}

export type PostBody = { kind: 'inline'; post: SnapshotPost } | { kind: 'upload'; commit: UploadCommitPost } | { kind: 'append'; append: AppendPost };

export interface UploadRequest {
  readonly runId: number;
  /** Bytes the client will transfer (compressed size when gzip). */
  readonly bytes: number;
  readonly contentEncoding: 'gzip' | 'identity';
}

const terminalStatus = z.enum(TERMINAL_STATUSES);
// A JSON string can carry lone surrogates ("\ud800"); they have no UTF-8 form, so the bytes we stored
// would not be the bytes the worker had. Rejected as "not a valid snapshotJsonl".
const snapshotJsonl = z.string().check(
  z.minLength(1),
  z.refine((s) => s.isWellFormed()),
);
const runId = z.int().check(z.positive(), z.maximum(Number.MAX_SAFE_INTEGER));
const uploadId = z.string().check(z.minLength(1), z.maxLength(4096));
const parts = z
  .array(
    z.strictObject({
      partNumber: z.int().check(z.minimum(1), z.maximum(10_000)),
      etag: z.string().check(z.minLength(1), z.maxLength(256)),
    }),
  )
  .check(z.minLength(1), z.maxLength(10_000));
const uploadBytes = z.int().check(z.positive(), z.maximum(Number.MAX_SAFE_INTEGER));
const contentEncoding = z.enum(['gzip', 'identity']);
const sha256Hex = z.string().check(z.regex(/^[0-9a-f]{64}$/));
const appendJsonl = z.string().check(z.refine((s) => s.isWellFormed()));
const appendBase = z.strictObject({
  runId,
  bytes: z.int().check(z.minimum(0), z.maximum(Number.MAX_SAFE_INTEGER)),
  sha256: sha256Hex,
});

const fatalUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** The raw request body as text, or undefined if it is not valid UTF-8. */
export function bodyText(body: string | undefined, isBase64Encoded: boolean): string | undefined {
  if (body === undefined) return undefined;
  if (!isBase64Encoded) return body;
  return utf8OrUndefined(Buffer.from(body, 'base64'));
}

function utf8OrUndefined(buf: Buffer): string | undefined {
  try {
    return fatalUtf8.decode(buf);
  } catch {
    return undefined;
  }
}

/**
 * The request body as text, undoing `Content-Encoding: gzip` (RFC 1952) or `br` (RFC 7932).
 * Decompression is bounded (a small body must not expand into gigabytes): past `maxDecodedBytes` it
 * is 413 Snapshot too large. Any other coding is 415.
 */
export async function decodeRequestBody(
  body: string | undefined,
  isBase64Encoded: boolean,
  contentEncodingHeader: string | undefined,
  maxDecodedBytes: number,
): Promise<string | undefined> {
  const coding = (contentEncodingHeader ?? 'identity').trim().toLowerCase();
  if (coding === 'identity' || coding === '') return bodyText(body, isBase64Encoded);
  const brotli = coding === 'br';
  if (coding !== 'gzip' && coding !== 'x-gzip' && !brotli) throw new HttpError(ERRORS.unsupportedEncoding);
  if (body === undefined) return undefined;
  let raw: Buffer;
  try {
    const encoded = Buffer.from(body, isBase64Encoded ? 'base64' : 'latin1');
    raw = brotli ? await brotliDecompress(encoded, { maxOutputLength: maxDecodedBytes }) : await gunzip(encoded, { maxOutputLength: maxDecodedBytes });
  } catch (err) {
    if (err instanceof RangeError || (err as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') throw new HttpError(ERRORS.tooLarge);
    return undefined; // not gzip/brotli at all: reported as Invalid JSON body
  }
  return utf8OrUndefined(raw);
}

function parseObject(text: string | undefined): (name: string) => unknown {
  let parsed: unknown;
  try {
    parsed = text === undefined ? undefined : JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new HttpError(ERRORS.invalidJson);
  // Own properties only: "__proto__" or inherited names must not satisfy a check.
  return (name) => (Object.hasOwn(parsed, name) ? (parsed as Record<string, unknown>)[name] : undefined);
}

/**
 * Parses a POST body, running the contract's checks in the contract's order (docs/DESIGN.md § HTTP contract, Check order):
 * JSON → terminalStatus → snapshotJsonl → size → runId. The runId-vs-token check comes after, in the handler.
 * A body with `uploadId` and no `snapshotJsonl` commits a presigned upload instead; a body with
 * `appendJsonl` and no `snapshotJsonl` carries an append: JSON → terminalStatus → appendJsonl → size →
 * runId → base and sha256 (400 invalid_append).
 */
export function parsePostBody(text: string | undefined, maxSnapshotBytes: number): PostBody {
  const field = parseObject(text);

  const status = terminalStatus.safeParse(field('terminalStatus'));
  if (!status.success) throw new HttpError(ERRORS.invalidTerminalStatus);

  if (field('snapshotJsonl') === undefined && field('uploadId') !== undefined) {
    const id = uploadId.safeParse(field('uploadId'));
    if (!id.success) throw new HttpError(ERRORS.invalidUploadId);
    const run = runId.safeParse(field('runId'));
    if (!run.success) throw new HttpError(ERRORS.invalidRunId);
    const rawParts = field('parts');
    const p = rawParts === undefined ? undefined : parts.safeParse(rawParts);
    if (p !== undefined && !p.success) throw new HttpError(ERRORS.invalidParts);
    return { kind: 'upload', commit: { terminalStatus: status.data, runId: run.data, uploadId: id.data, parts: p?.data } };
  }

  if (field('snapshotJsonl') === undefined && field('appendJsonl') !== undefined) {
    const appended = appendJsonl.safeParse(field('appendJsonl'));
    if (!appended.success) throw new HttpError(ERRORS.invalidAppend);
    if (Buffer.byteLength(appended.data, 'utf8') > maxSnapshotBytes) throw new HttpError(ERRORS.tooLarge);
    const run = runId.safeParse(field('runId'));
    if (!run.success) throw new HttpError(ERRORS.invalidRunId);
    const base = appendBase.safeParse(field('base'));
    const whole = sha256Hex.safeParse(field('sha256'));
    if (!base.success || !whole.success) throw new HttpError(ERRORS.invalidAppend);
    return {
      kind: 'append',
      append: { terminalStatus: status.data, runId: run.data, append: Buffer.from(appended.data, 'utf8'), base: base.data, sha256: whole.data },
    };
  }

  const snapshot = snapshotJsonl.safeParse(field('snapshotJsonl'));
  if (!snapshot.success) throw new HttpError(ERRORS.missingSnapshot);
  // Byte length without allocating a copy; the limit is on the bytes we store.
  if (Buffer.byteLength(snapshot.data, 'utf8') > maxSnapshotBytes) throw new HttpError(ERRORS.tooLarge);

  const run = runId.safeParse(field('runId'));
  if (!run.success) throw new HttpError(ERRORS.invalidRunId);

  return { kind: 'inline', post: { terminalStatus: status.data, snapshot: Buffer.from(snapshot.data, 'utf8'), runId: run.data } };
}

/** The inline form only: a body that commits an upload has no snapshotJsonl. */
export function parseSnapshotPost(text: string | undefined, maxSnapshotBytes: number): SnapshotPost {
  const body = parsePostBody(text, maxSnapshotBytes);
  if (body.kind !== 'inline') throw new HttpError(ERRORS.missingSnapshot);
  return body.post;
}

/** `POST …/uploads` body: JSON → runId → bytes → contentEncoding (default identity). */
export function parseUploadRequest(text: string | undefined, maxUploadBytes: number): UploadRequest {
  const field = parseObject(text);
  const run = runId.safeParse(field('runId'));
  if (!run.success) throw new HttpError(ERRORS.invalidRunId);
  const bytes = uploadBytes.safeParse(field('bytes'));
  if (!bytes.success) throw new HttpError(ERRORS.invalidUploadSize);
  if (bytes.data > maxUploadBytes) throw new HttpError(ERRORS.tooLarge);
  const rawEncoding = field('contentEncoding');
  const encoding = rawEncoding === undefined ? undefined : contentEncoding.safeParse(rawEncoding);
  if (encoding !== undefined && !encoding.success) throw new HttpError(ERRORS.invalidContentEncoding);
  return { runId: run.data, bytes: bytes.data, contentEncoding: encoding?.data ?? 'identity' };
}

/** An erasure's scope as `POST /admin/erasures` takes it: none (the organization), an agent, or a conversation. */
export interface ErasureScopeBody {
  readonly agentId?: string | undefined;
  readonly conversationId?: string | undefined;
}

const erasureScope = z.strictObject({
  agentId: z.optional(z.string().check(z.refine(isValidId))),
  conversationId: z.optional(z.string().check(z.refine(isValidId))),
});

/**
 * `POST /admin/erasures` body: a JSON object (else 400 invalid_json) with at most `agentId` and
 * `conversationId`, valid ids, and `conversationId` only with `agentId` (else 400 invalid_erasure_scope).
 * `{}` is the whole organization.
 */
export function parseErasureScope(text: string | undefined): ErasureScopeBody {
  parseObject(text);
  const parsed = erasureScope.safeParse(JSON.parse(text!));
  if (!parsed.success) throw new HttpError(ERRORS.invalidErasureScope);
  if (parsed.data.conversationId !== undefined && parsed.data.agentId === undefined) throw new HttpError(ERRORS.invalidErasureScope);
  return parsed.data;
}
