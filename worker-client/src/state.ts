/**
 * What the client remembers about a session file between calls, in a small JSON file next to it
 * (`.<session file name>.transcript-store.json`, replaced atomically): the conversation's reset
 * generation from the last hydrate or write, and what the file held then (run id, byte length, sha256).
 *
 * The generation is echoed on the next write (`x-snapshot-generation`), so a reset that happened in
 * between fences that write whatever the clocks say. The state belongs to one gateway and one
 * conversation: it records a digest of both (taken from the token's claims, read without verifying —
 * the service verifies), and state written for another conversation is ignored. Any failure to read or
 * write it only costs that protection (the service then falls back to the token's `iat`); it never
 * fails a hydrate or a write.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

export interface SyncState {
  /** Digest of gateway URL + organization/agent/conversation: whose state this is. */
  readonly scope: string;
  /** The conversation's reset generation the service last announced. */
  readonly generation: number;
  /** What the session file held then (absent after a 404). */
  readonly runId?: number | undefined;
  readonly bytes?: number | undefined;
  readonly sha256?: string | undefined;
}

const VERSION = 1;

/** `<dir>/.<name>.transcript-store.json`. */
export function statePath(sessionFile: string): string {
  return join(dirname(sessionFile), `.${basename(sessionFile)}.transcript-store.json`);
}

/**
 * Digest naming the conversation a token is for at a gateway (its snapshot URL), or undefined when the token's payload
 * cannot be read (then no state is used). The signature is not checked here: the service does that.
 */
export function scopeOf(snapshotUrl: string, token: string): string | undefined {
  const payload = token.split('.')[1];
  if (payload === undefined) return undefined;
  try {
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as Record<string, unknown>;
    const ids = [claims['organizationId'], claims['agentId'], claims['conversationId']];
    if (!ids.every((v) => typeof v === 'string')) return undefined;
    return createHash('sha256').update(JSON.stringify([snapshotUrl, ...ids])).digest('hex');
  } catch {
    return undefined;
  }
}

/** `x-snapshot-generation` as a number, or undefined when absent or malformed. */
export function parseGeneration(value: string | null): number | undefined {
  if (value === null || !/^\d{1,16}$/.test(value.trim())) return undefined;
  const n = Number(value.trim());
  return Number.isSafeInteger(n) ? n : undefined;
}

/** The state saved for `scope`, or undefined (missing, unreadable, corrupt, or another conversation's). */
export async function readState(sessionFile: string, scope: string | undefined): Promise<SyncState | undefined> {
  if (scope === undefined) return undefined;
  try {
    const v = JSON.parse(await readFile(statePath(sessionFile), 'utf8')) as Record<string, unknown>;
    if (v['v'] !== VERSION || v['scope'] !== scope) return undefined;
    const generation = v['generation'];
    if (typeof generation !== 'number' || !Number.isSafeInteger(generation) || generation < 0) return undefined;
    const num = (k: string) => (typeof v[k] === 'number' && Number.isSafeInteger(v[k]) ? (v[k] as number) : undefined);
    const sha256 = typeof v['sha256'] === 'string' && /^[0-9a-f]{64}$/.test(v['sha256']) ? v['sha256'] : undefined;
    return { scope, generation, runId: num('runId'), bytes: num('bytes'), sha256 };
  } catch {
    return undefined;
  }
}

/** Replaces the state file atomically (temp file + rename). Best effort: returns false instead of throwing. */
export async function writeState(sessionFile: string, state: SyncState): Promise<boolean> {
  const target = statePath(sessionFile);
  const tmp = `${target}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await writeFile(tmp, `${JSON.stringify({ v: VERSION, ...state })}\n`, { mode: 0o600, flag: 'wx' });
    await rename(tmp, target);
    return true;
  } catch {
    await unlink(tmp).catch(() => {});
    return false;
  }
}

/** Deletes the state file (best effort): used when a newer state could not be saved, so no stale one is echoed. */
export async function forgetState(sessionFile: string): Promise<void> {
  await unlink(statePath(sessionFile)).catch(() => {});
}

/**
 * Whether the state describes the history the session file continues: it recorded no content (a 404),
 * or the file still begins with exactly the `bytes` bytes whose sha256 it recorded. A file rewritten
 * since (a new conversation after a reset, a compaction) is not that history, and its generation must
 * not be echoed for it.
 */
export async function continuesState(sessionFile: string, state: SyncState): Promise<boolean> {
  if (state.bytes === undefined || state.sha256 === undefined) return state.sha256 === undefined && state.runId === undefined;
  if (state.bytes === 0) return true;
  try {
    const hash = createHash('sha256');
    let seen = 0;
    for await (const chunk of createReadStream(sessionFile, { start: 0, end: state.bytes - 1 })) {
      hash.update(chunk as Buffer);
      seen += (chunk as Buffer).length;
    }
    return seen === state.bytes && hash.digest('hex') === state.sha256;
  } catch {
    return false;
  }
}
