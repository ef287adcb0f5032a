import { createHash } from 'node:crypto';

/**
 * Id encoding for storage keys (invariant I6).
 *
 * Ids come from verified token claims and may contain anything: `/`, `..`, `%2F`, NUL, emoji.
 * `encodeId` maps each id to one key segment such that
 *   - the segment matches /^[A-Za-z0-9_%-]+$/ or /^~[0-9a-f]{64}$/ — no `/`, no `.`, never empty,
 *     so a segment can neither add a path level nor be `.`/`..`;
 *   - distinct ids give distinct segments (injective): `%` itself is escaped, so decoding is
 *     unambiguous, and the hashed form starts with `~`, which the escaped form never contains.
 * Ids whose escaped form would exceed MAX_PLAIN_SEGMENT fall back to `~` + sha256(id) so that three
 * segments always fit the 1,024-byte S3 key limit. The hashed form is injective up to sha256 collisions.
 */
const SAFE = /^[A-Za-z0-9_-]$/;
export const MAX_PLAIN_SEGMENT = 200;
export const MAX_ID_BYTES = 1024;

export function isValidId(id: unknown): id is string {
  return (
    typeof id === 'string' &&
    id.length > 0 &&
    // Lone surrogates would be replaced by U+FFFD when encoded to UTF-8 and alias other ids.
    id.isWellFormed() &&
    Buffer.byteLength(id, 'utf8') <= MAX_ID_BYTES
  );
}

export function encodeId(id: string): string {
  if (!isValidId(id)) throw new TypeError('invalid id');
  let out = '';
  for (const ch of id) {
    if (SAFE.test(ch)) {
      out += ch;
    } else {
      for (const byte of Buffer.from(ch, 'utf8')) out += '%' + byte.toString(16).toUpperCase().padStart(2, '0');
    }
    if (out.length > MAX_PLAIN_SEGMENT) {
      return '~' + createHash('sha256').update(id, 'utf8').digest('hex');
    }
  }
  return out;
}

/** Inverse of encodeId for the plain form (tests and operators); hashed segments are not reversible. */
export function decodeId(segment: string): string | undefined {
  if (segment.startsWith('~')) return undefined;
  return decodeURIComponent(segment);
}

export interface ConversationScope {
  readonly organizationId: string;
  readonly agentId: string;
  readonly conversationId: string;
}

/** `org/agent/conv`, each segment encoded: the partition key and the S3 prefix of one conversation. */
export function conversationKey(scope: ConversationScope): string {
  return [scope.organizationId, scope.agentId, scope.conversationId].map(encodeId).join('/');
}

export const RUN_ID_DIGITS = 16; // Number.MAX_SAFE_INTEGER has 16 digits

export function isValidRunId(runId: unknown): runId is number {
  return typeof runId === 'number' && Number.isSafeInteger(runId) && runId > 0;
}

/** Fixed width so that lexicographic order (DynamoDB sort keys, S3 listings) is numeric order. */
export function padRunId(runId: number): string {
  return String(runId).padStart(RUN_ID_DIGITS, '0');
}
