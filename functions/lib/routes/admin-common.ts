import * as z from 'zod/mini';
import type { AdminScope } from '../auth.js';
import { ERRORS } from '../contract.js';
import { HttpError } from '../errors.js';
import { header, type HttpEvent, type RequestContext } from '../http.js';
import { isValidId } from '../ids.js';
import type { RouteDeps } from './deps.js';

/**
 * What every operator-API route shares (docs/DESIGN.md § Operator API): the admin token check, strict query
 * parsing and signed cursors. Check order on every admin route: token (401) → admin scope (403) →
 * `organizationId` claim (400 missing_scope) → query (400 invalid_query) → cursor (400 invalid_cursor) →
 * storage (404 not_found, …).
 */

/** Verifies the admin token and records its non-secret fields (organization, actor) for the request log line. */
export async function verifyAdmin(deps: RouteDeps, event: HttpEvent, ctx: RequestContext): Promise<AdminScope> {
  const admin = await deps.verifyAdmin(header(event, 'authorization'));
  ctx.fields = { organizationId: admin.organizationId, ...(admin.actor !== undefined && { actor: admin.actor }) };
  return admin;
}

/** A valid id (ids.ts `isValidId`: non-empty, well-formed UTF-16, ≤ 1,024 UTF-8 bytes), as a query parameter. */
export const idParam = () => z.string().check(z.refine(isValidId));

/** A decimal integer in [min, max] without sign, leading zero or exponent, as a query parameter. */
export const intParam = (min: number, max: number) =>
  z.string().check(
    z.regex(/^[1-9]\d{0,15}$/),
    z.refine((s) => Number.isSafeInteger(Number(s)) && Number(s) >= min && Number(s) <= max),
  );

/** A cursor parameter: any string here; {@link openCursor} decides (→ 400 invalid_cursor). */
export const cursorParam = () => z.string();

/** Reads of a chain run whose objects are missing before it counts as lost (compaction may replace them under a read). */
export const MISSING_READS = 3;

/** Longest cursor accepted (ours are far shorter: a resume key and a MAC). */
const MAX_CURSOR_LENGTH = 4096;

/**
 * The request's query parameters, strictly: split on `&`, `+` read as a space, percent-decoded as UTF-8
 * (a malformed escape is an error, never silently replaced), a name given twice is an error, then
 * `schema` (a strict object: unknown names are errors). Reads API Gateway's `rawQueryString` (its
 * `queryStringParameters` joins repeated names with commas, which an id may contain). Throws 400
 * invalid_query.
 */
export function parseQuery<S extends z.ZodMiniType>(event: HttpEvent, schema: S): z.infer<S> {
  const raw = event.rawQueryString ?? new URLSearchParams(event.queryStringParameters as Record<string, string> | undefined).toString();
  // A null-prototype object: a parameter named `__proto__` must be an own (hence unknown: 400) name, not
  // an assignment to the prototype that the strict schema never sees.
  const params: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const part of raw.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const name = decodeParam(eq < 0 ? part : part.slice(0, eq));
    const value = decodeParam(eq < 0 ? '' : part.slice(eq + 1));
    if (Object.hasOwn(params, name)) throw new HttpError(ERRORS.invalidQuery);
    params[name] = value;
  }
  const parsed = schema.safeParse(params);
  if (!parsed.success) throw new HttpError(ERRORS.invalidQuery);
  return parsed.data as z.infer<S>;
}

function decodeParam(s: string): string {
  try {
    return decodeURIComponent(s.replaceAll('+', ' '));
  } catch {
    throw new HttpError(ERRORS.invalidQuery);
  }
}

/** A parsed integer parameter, or `fallback` when absent. */
export function intOr(value: string | undefined, fallback: number): number {
  return value === undefined ? fallback : Number(value);
}

/**
 * Seals a cursor: `payload` (JSON) signed with the service's cursor key (HMAC-SHA256, upload-id.ts
 * `cursorCodecFor`). Every payload names its listing (`k`) and the partition it belongs to, which
 * {@link openCursor}'s check compares with the request's own.
 */
export function sealCursor(deps: RouteDeps, payload: { k: string } & Record<string, unknown>): Promise<string> {
  return deps.cursors.seal(payload);
}

/**
 * Opens a cursor this service sealed and hands its payload to `check`, which returns the value to use or
 * undefined. Throws 400 invalid_cursor for anything too long, altered, forged, sealed under another key, or
 * refused by `check` (another listing, organization, agent, conversation or run).
 */
export async function openCursor<T>(deps: RouteDeps, cursor: string, check: (payload: Record<string, unknown>) => T | undefined): Promise<T> {
  if (cursor.length === 0 || cursor.length > MAX_CURSOR_LENGTH) throw new HttpError(ERRORS.invalidCursor);
  const payload = await deps.cursors.open(cursor);
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) throw new HttpError(ERRORS.invalidCursor);
  const value = check(payload as Record<string, unknown>);
  if (value === undefined) throw new HttpError(ERRORS.invalidCursor);
  return value;
}

/** A plain JSON object (a resume key inside a cursor payload), or undefined. */
export function objectField(payload: Record<string, unknown>, name: string): Record<string, unknown> | undefined {
  const v = payload[name];
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
}

/** ISO 8601 (UTC) of an epoch-ms time, or null. */
export function isoTime(ms: number | undefined): string | null {
  return ms === undefined ? null : new Date(ms).toISOString();
}
