/**
 * One `npm start` per DATA_DIR. Two processes on the same emulator data would corrupt it (and the
 * second one used to die with a LevelDB stack trace from dynalite). Local development only.
 *
 * The lock is a file `DATA_DIR/npm-start.lock` holding `{"pid", "startedAt", "hostname"}`, created
 * exclusively (O_EXCL). A lock whose process is gone (kill -9, crash, reboot) is stale and taken over.
 * Limitation: a pid reused by an unrelated live process reads as "in use" — the message names the pid
 * so the user can check it and delete the file.
 */
import { mkdir, readFile, unlink, writeFile } from 'node:fs/promises';
import { readFileSync, unlinkSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';

export const LOCK_FILE_NAME = 'npm-start.lock';

/** What the lock file records about its owner. */
export interface LockOwner {
  pid: number;
  /** ISO 8601 time the owner started. */
  startedAt: string;
  hostname: string;
}

/** Thrown by {@link acquireDataDirLock} when a live process holds the lock; `message` is one line for the user. */
export class DataDirInUseError extends Error {
  override name = 'DataDirInUseError';
  constructor(
    readonly dataDir: string,
    readonly owner: LockOwner,
  ) {
    super(
      `DATA_DIR ${dataDir} is in use by another npm start (pid ${owner.pid}, started ${owner.startedAt}); ` +
        `stop it, or set DATA_DIR to another directory`,
    );
  }
}

/** A held lock. `release()` removes the file if it is still ours; idempotent, never throws. */
export interface DataDirLock {
  readonly path: string;
  release(): Promise<void>;
  /** Synchronous release, for `process.on('exit')`. */
  releaseSync(): void;
}

/** True when `pid` names a running process on this machine (EPERM: it exists but is not ours). */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function parseOwner(text: string): LockOwner | undefined {
  try {
    const v = JSON.parse(text) as Partial<LockOwner>;
    if (typeof v.pid === 'number' && Number.isSafeInteger(v.pid) && v.pid > 0) {
      return { pid: v.pid, startedAt: String(v.startedAt ?? 'unknown'), hostname: String(v.hostname ?? '') };
    }
  } catch {
    // torn or foreign content: stale
  }
  return undefined;
}

/**
 * Takes the lock on `dataDir` (created if missing) for this process. Rejects with
 * {@link DataDirInUseError} when another live process on this host holds it; takes over a stale lock
 * (owner dead, or the file torn/empty). Other I/O errors are rethrown.
 */
export async function acquireDataDirLock(dataDir: string): Promise<DataDirLock> {
  await mkdir(dataDir, { recursive: true });
  const path = join(dataDir, LOCK_FILE_NAME);
  const me: LockOwner = { pid: process.pid, startedAt: new Date().toISOString(), hostname: hostname() };
  const content = `${JSON.stringify(me)}\n`;
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      await writeFile(path, content, { flag: 'wx', mode: 0o644 });
      return lockHandle(path, content);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const existing = await readFile(path, 'utf8').catch(() => undefined);
    if (existing === undefined) continue; // released meanwhile: try again
    const owner = parseOwner(existing);
    // A lock from another host (a shared network directory) cannot be checked: respect it.
    if (owner && owner.pid !== process.pid && (owner.hostname !== me.hostname || isAlive(owner.pid))) {
      throw new DataDirInUseError(dataDir, owner);
    }
    // Stale: remove it only if it is still the file we judged (another starter may have replaced it).
    const again = await readFile(path, 'utf8').catch(() => undefined);
    if (again === existing) await unlink(path).catch(() => undefined);
  }
  throw new Error(`could not take the lock ${path}`);
}

function lockHandle(path: string, content: string): DataDirLock {
  let released = false;
  return {
    path,
    async release() {
      if (released) return;
      released = true;
      const now = await readFile(path, 'utf8').catch(() => undefined);
      if (now === content) await unlink(path).catch(() => undefined);
    },
    releaseSync() {
      if (released) return;
      released = true;
      try {
        if (readFileSync(path, 'utf8') === content) unlinkSync(path);
      } catch {
        // already gone
      }
    },
  };
}
