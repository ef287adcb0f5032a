import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadOrCreateDevSecret } from '../../local/dev-secret.js';

describe('dev secret', () => {
  it('racing creators on a fresh DATA_DIR all get the same complete secret (never an empty one), and no temp file is left', async () => {
    for (let round = 0; round < 40; round++) {
      const dir = await mkdtemp(join(tmpdir(), 'dev-secret-'));
      try {
        const secrets = await Promise.all(Array.from({ length: 16 }, () => loadOrCreateDevSecret(dir, {})));
        expect(secrets[0]).toMatch(/^[A-Za-z0-9_-]{43}$/);
        expect(new Set(secrets).size).toBe(1);
        expect(await readdir(dir)).toEqual(['dev-jwt-secret']);
        expect(await loadOrCreateDevSecret(dir, {})).toBe(secrets[0]);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    }
  });

  it('JWT_SECRET wins over the file', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'dev-secret-'));
    try {
      expect(await loadOrCreateDevSecret(dir, { JWT_SECRET: ' s3cret ' })).toBe('s3cret');
      expect(await readdir(dir)).toEqual([]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
