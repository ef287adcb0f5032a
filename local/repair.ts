/**
 * Startup repair of the embedded S3 emulator's files after an unclean stop (kill -9, power loss).
 * Local development and tests only.
 *
 * s3rver 3.7.1 stores an object `k` as `k._S3rver_object` + `k._S3rver_object.md5` +
 * `k._S3rver_metadata.json`, written one after the other with plain writes. A kill in between leaves
 * e.g. an empty metadata file, on which s3rver's every listing of the bucket — and its HeadBucket, a
 * listing — fails with a 500 forever. (s3rver-hardening.ts makes new writes atomic; data written
 * before it, or by another tool, can still be torn.) This pass runs before s3rver starts:
 * - an object whose metadata file is not a JSON object: the object and its sidecar files are moved to
 *   `DATA_DIR/quarantine/<timestamp>/<bucket>/<key>…` (kept for inspection, never deleted);
 * - an md5 sidecar that is not 32 hex digits: deleted (s3rver recomputes it from the object);
 * - the hardening's temp directories (`._S3rver_tmp`, files a kill left half-written): deleted.
 */
import { mkdir, readdir, readFile, rename, rm, unlink } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { TEMP_DIR } from './s3rver-hardening.js';

const OBJECT_SUFFIX = '._S3rver_object';
const METADATA_SUFFIX = '._S3rver_metadata.json';
const MD5_SUFFIX = '._S3rver_object.md5';

/** What {@link repairS3Data} did. Paths are relative to the S3 data directory (`<bucket>/<key>`). */
export interface RepairReport {
  /** Objects moved aside because their metadata was torn. */
  readonly quarantined: string[];
  /** Torn md5 sidecars deleted (recomputed by s3rver on next read). */
  readonly md5Removed: string[];
  /** Leftover temp files removed. */
  readonly tempRemoved: number;
  /** Where quarantined files went (undefined when nothing was quarantined). */
  readonly quarantineDir: string | undefined;
}

/**
 * Repairs torn s3rver files under `s3Dir` (the emulator's root: one directory per bucket), moving torn
 * objects to a fresh directory under `quarantineRoot`. Idempotent; a missing `s3Dir` is an empty
 * report. Never throws for a torn file; throws only for an I/O error it cannot work around (e.g. no
 * permission to move a file), naming the path.
 */
export async function repairS3Data(s3Dir: string, quarantineRoot: string): Promise<RepairReport> {
  const quarantined: string[] = [];
  const md5Removed: string[] = [];
  let tempRemoved = 0;
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const quarantineDir = join(quarantineRoot, stamp);

  const moveAside = async (file: string): Promise<void> => {
    const target = join(quarantineDir, relative(s3Dir, file));
    await mkdir(dirname(target), { recursive: true });
    try {
      await rename(file, target);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`cannot quarantine ${file}: ${(err as Error).message}`);
    }
  };

  const walk = async (dir: string): Promise<void> => {
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    for (const entry of entries) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) {
        if (entry.name === TEMP_DIR) {
          tempRemoved += (await readdir(path)).length;
          await rm(path, { recursive: true, force: true });
        } else {
          await walk(path);
        }
        continue;
      }
      if (entry.name.endsWith(METADATA_SUFFIX)) {
        if (await isJsonObjectFile(path)) continue;
        const base = path.slice(0, -METADATA_SUFFIX.length);
        for (const f of [base + OBJECT_SUFFIX, base + MD5_SUFFIX, path]) await moveAside(f);
        quarantined.push(relative(s3Dir, base));
      } else if (entry.name.endsWith(MD5_SUFFIX)) {
        const text = await readFile(path, 'utf8').catch(() => undefined);
        if (text === undefined) continue; // moved aside with its object just now
        if (!/^[0-9a-f]{32}$/.test(text.trim())) {
          await unlink(path).catch(() => undefined);
          md5Removed.push(relative(s3Dir, path.slice(0, -MD5_SUFFIX.length)));
        }
      }
    }
  };

  await walk(s3Dir);
  return { quarantined, md5Removed, tempRemoved, quarantineDir: quarantined.length > 0 ? quarantineDir : undefined };
}

/** True when the file holds a JSON object (s3rver's metadata); false when torn, empty or unreadable. */
async function isJsonObjectFile(path: string): Promise<boolean> {
  try {
    const parsed: unknown = JSON.parse(await readFile(path, 'utf8'));
    return typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed);
  } catch (err) {
    // Gone meanwhile: nothing to repair.
    return (err as NodeJS.ErrnoException).code === 'ENOENT';
  }
}

/** One line for the console, or undefined when nothing needed repair. */
export function describeRepair(report: RepairReport): string | undefined {
  const parts: string[] = [];
  if (report.quarantined.length > 0) {
    const shown = report.quarantined.slice(0, 3).join(', ') + (report.quarantined.length > 3 ? ', …' : '');
    parts.push(`moved ${report.quarantined.length} torn S3 object(s) (${shown}) to ${report.quarantineDir}`);
  }
  if (report.md5Removed.length > 0) parts.push(`dropped ${report.md5Removed.length} torn md5 file(s) (recomputed)`);
  if (report.tempRemoved > 0) parts.push(`removed ${report.tempRemoved} half-written temp file(s)`);
  return parts.length > 0 ? `storage repair after an unclean stop: ${parts.join('; ')}` : undefined;
}
