import { z } from 'zod';
import { ERRORS, TERMINAL_STATUSES, type TerminalStatus } from './contract.js';
import { HttpError } from './errors.js';

export interface SnapshotPost {
  readonly terminalStatus: TerminalStatus;
  readonly snapshot: Buffer;
  readonly runId: number;
}

const terminalStatus = z.enum(TERMINAL_STATUSES);
// A JSON string can carry lone surrogates ("\ud800"); they have no UTF-8 form, so the bytes we stored
// would not be the bytes the worker had. Rejected as "not a valid snapshotJsonl".
const snapshotJsonl = z.string().min(1).refine((s) => s.isWellFormed());
const runId = z.number().int().positive().max(Number.MAX_SAFE_INTEGER);

const fatalUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** The raw request body as text, or undefined if it is not valid UTF-8. */
export function bodyText(body: string | undefined, isBase64Encoded: boolean): string | undefined {
  if (body === undefined) return undefined;
  if (!isBase64Encoded) return body;
  try {
    return fatalUtf8.decode(Buffer.from(body, 'base64'));
  } catch {
    return undefined;
  }
}

/**
 * Parses a POST body, running the contract's checks in the contract's order (DESIGN §2):
 * JSON → terminalStatus → snapshotJsonl → size → runId. The runId-vs-token check comes after, in the handler.
 */
export function parseSnapshotPost(text: string | undefined, maxSnapshotBytes: number): SnapshotPost {
  let parsed: unknown;
  try {
    parsed = text === undefined ? undefined : JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new HttpError(ERRORS.invalidJson);
  // Own properties only: "__proto__" or inherited names must not satisfy a check.
  const field = (name: string): unknown => (Object.hasOwn(parsed, name) ? (parsed as Record<string, unknown>)[name] : undefined);

  const status = terminalStatus.safeParse(field('terminalStatus'));
  if (!status.success) throw new HttpError(ERRORS.invalidTerminalStatus);

  const snapshot = snapshotJsonl.safeParse(field('snapshotJsonl'));
  if (!snapshot.success) throw new HttpError(ERRORS.missingSnapshot);
  // Byte length without allocating a copy; the limit is on the bytes we store.
  if (Buffer.byteLength(snapshot.data, 'utf8') > maxSnapshotBytes) throw new HttpError(ERRORS.tooLarge);

  const run = runId.safeParse(field('runId'));
  if (!run.success) throw new HttpError(ERRORS.invalidRunId);

  return { terminalStatus: status.data, snapshot: Buffer.from(snapshot.data, 'utf8'), runId: run.data };
}
