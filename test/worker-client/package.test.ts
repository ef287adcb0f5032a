/**
 * The client package as a user gets it: packed from a clean checkout (no dist/: `npm pack` must build it
 * itself), installed from the tarball into a fresh project, then `require()`d, imported, type-checked
 * from both module systems, and its bin run. Offline: every npm call gets `--offline`, an empty cache of
 * its own and a registry on a closed port, so nothing can come from (or go to) a registry.
 * Also checks that the READMEs only document invocations that run the local build.
 */
import { execFile } from 'node:child_process';
import { cp, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const ROOT = resolve(import.meta.dirname, '../..');
const PKG_DIR = join(ROOT, 'worker-client');
const NAME = '@transcript-store/worker-client';
const API = ['SNAPSHOT_PATH', 'TranscriptStoreError', 'clearSnapshots', 'hydrateFromSnapshot', 'hydrateSnapshot', 'isTranscriptStoreError', 'writeSnapshot'];

let tmp: string;
let app: string;
let npmEnv: NodeJS.ProcessEnv;
let packed: { filename: string; files: { path: string; mode: number }[] };
let manifest: Record<string, unknown>;

/** npm with no way to reach a registry (and none of the calling npm's own `npm_*` settings). */
function npm(args: string[], cwd: string) {
  return run('npm', [...args, '--offline', '--no-audit', '--no-fund', '--no-update-notifier'], { cwd, env: npmEnv, timeout: 120_000 });
}

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'wc-pack-'));
  npmEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k)));
  Object.assign(npmEnv, {
    npm_config_cache: join(tmp, 'npm-cache'),
    npm_config_registry: 'http://127.0.0.1:9/',
    npm_config_userconfig: join(tmp, 'npmrc'),
  });
  await writeFile(join(tmp, 'npmrc'), '');

  // A clean checkout of the package: the tracked kinds of file, no dist/. TypeScript (a dev dependency
  // of the repository) is found through node_modules, as in the repository.
  const src = join(tmp, 'checkout');
  await cp(PKG_DIR, src, { recursive: true, filter: (p) => !/[/\\](dist|node_modules)$/.test(p) && !p.endsWith('.tsbuildinfo') });
  await symlink(join(ROOT, 'node_modules'), join(src, 'node_modules'), 'dir');
  await mkdir(join(tmp, 'out'));
  const { stdout } = await npm(['pack', '--json', '--pack-destination', join(tmp, 'out')], src);
  packed = (JSON.parse(stdout) as (typeof packed)[])[0]!;

  app = join(tmp, 'app');
  await mkdir(app);
  await writeFile(join(app, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true }));
  await npm(['install', join(tmp, 'out', packed.filename)], app);
  manifest = JSON.parse(await readFile(join(app, 'node_modules', NAME, 'package.json'), 'utf8')) as Record<string, unknown>;
}, 240_000);

afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe('packed from a clean checkout', () => {
  it('contains the built ESM and CJS code, declarations, source maps, LICENSE and README; no sources or build files', () => {
    const paths = packed.files.map((f) => f.path);
    for (const p of [
      'package.json',
      'LICENSE',
      'README.md',
      'dist/index.js',
      'dist/index.d.ts',
      'dist/index.js.map',
      'dist/cli.js',
      'dist/cjs/index.js',
      'dist/cjs/index.d.ts',
      'dist/cjs/index.js.map',
      'dist/cjs/package.json',
      'dist/cjs/snapshot.js',
      'dist/snapshot.js',
    ]) {
      expect(paths).toContain(p);
    }
    expect(paths.filter((p) => !p.startsWith('dist/') && !['package.json', 'LICENSE', 'README.md'].includes(p))).toEqual([]);
    expect(paths.some((p) => p.startsWith('dist/cjs/cli'))).toBe(false); // the CLI is ESM only
    expect(packed.files.find((f) => f.path === 'dist/cli.js')!.mode & 0o111).not.toBe(0);
  });

  it('declares exports for import and require, license, repository, bugs, and no runtime dependencies', () => {
    expect(manifest.exports).toEqual({
      '.': {
        import: { types: './dist/index.d.ts', default: './dist/index.js' },
        require: { types: './dist/cjs/index.d.ts', default: './dist/cjs/index.js' },
      },
      './package.json': './package.json',
    });
    expect(manifest.license).toBe('MIT');
    expect(manifest.repository).toMatchObject({ type: 'git', directory: 'worker-client' });
    expect((manifest.bugs as { url?: string }).url).toMatch(/^https:\/\//);
    expect(manifest.dependencies ?? {}).toEqual({});
    expect(manifest.bin).toEqual({ 'transcript-store-client': './dist/cli.js' });
    // Nothing runs when a user installs the tarball (the build happens before packing).
    const scripts = (manifest.scripts ?? {}) as Record<string, string>;
    for (const s of ['preinstall', 'install', 'postinstall', 'prepare']) expect(scripts[s]).toBeUndefined();
  });

  it('works with require() and with import, with the same API and source maps that resolve', async () => {
    const cjs = await run(
      process.execPath,
      ['-e', `const c = require('${NAME}'); const e = new c.TranscriptStoreError('network', 'x'); console.log(JSON.stringify({ keys: Object.keys(c).sort(), typed: c.isTranscriptStoreError(e), path: c.SNAPSHOT_PATH, file: require.resolve('${NAME}') }))`],
      { cwd: app },
    );
    const esm = await run(
      process.execPath,
      ['--input-type=module', '-e', `import * as c from '${NAME}'; console.log(JSON.stringify({ keys: Object.keys(c).sort(), fn: typeof c.writeSnapshot, file: import.meta.resolve('${NAME}') }))`],
      { cwd: app },
    );
    const r = JSON.parse(cjs.stdout);
    expect(r).toMatchObject({ keys: API, typed: true, path: '/worker/transcript/snapshot' });
    expect(r.file).toMatch(/dist[/\\]cjs[/\\]index\.js$/);
    const m = JSON.parse(esm.stdout);
    expect(m).toMatchObject({ keys: API, fn: 'function' });
    expect(m.file).toMatch(/dist\/index\.js$/);
    const map = JSON.parse(await readFile(join(app, 'node_modules', NAME, 'dist/cjs/snapshot.js.map'), 'utf8'));
    expect(map.sourcesContent?.[0]).toContain('export async function writeSnapshot');
  });

  it('type-checks from an ESM (.mts) and a CommonJS (.cts) consumer', async () => {
    await writeFile(
      join(app, 'esm.mts'),
      `import { hydrateFromSnapshot, TranscriptStoreError, type WriteSnapshotResult } from '${NAME}';
export const f: (o: { sessionFile: string; gatewayUrl: string; workerToken: string }) => Promise<boolean> = hydrateFromSnapshot;
export const r: WriteSnapshotResult | undefined = undefined;
export const E: typeof TranscriptStoreError = TranscriptStoreError;
`,
    );
    await writeFile(
      join(app, 'cjs.cts'),
      `import client = require('${NAME}');
const f: (o: { sessionFile: string; gatewayUrl: string; workerToken: string }) => Promise<boolean> = client.hydrateFromSnapshot;
const r: client.WriteSnapshotResult | undefined = undefined;
export = { f, r, E: client.TranscriptStoreError };
`,
    );
    await writeFile(
      join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          module: 'nodenext',
          moduleResolution: 'nodenext',
          target: 'es2022',
          strict: true,
          noEmit: true,
          skipLibCheck: true,
          types: ['node'],
          typeRoots: [join(ROOT, 'node_modules/@types')],
        },
        files: ['esm.mts', 'cjs.cts'],
      }),
    );
    const tsc = await run(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json', '--traceResolution'], { cwd: app, maxBuffer: 64 * 1024 * 1024 });
    // Each module system gets its own declarations.
    expect(tsc.stdout).toMatch(/'@transcript-store\/worker-client' was successfully resolved to '[^']*\/dist\/index\.d\.ts'/);
    expect(tsc.stdout).toMatch(/'@transcript-store\/worker-client' was successfully resolved to '[^']*\/dist\/cjs\/index\.d\.ts'/);
  }, 60_000);

  it('installs a bin that prints the version and the help', async () => {
    const bin = join(app, 'node_modules', '.bin', 'transcript-store-client');
    const v = await run(bin, ['--version'], { cwd: app });
    expect(v.stdout).toBe(`${manifest.version}\n`);
    const h = await run(bin, ['--help'], { cwd: app });
    expect(h.stdout).toContain('Usage: transcript-store-client <command>');
    const w = await run(bin, ['write', '--help'], { cwd: app });
    expect(w.stdout).toContain('--run-id <n>');
    expect(w.stdout).not.toContain('Usage: transcript-store-client hydrate');
    // A usage error: exit 2, and nothing is sent anywhere.
    const bad = await run(bin, ['purge'], { cwd: app }).catch((e: { code: number; stderr: string }) => e);
    expect((bad as { code: number }).code).toBe(2);
  });
});

describe('documented invocations', () => {
  it('never send anyone to a registry for the unpublished package or its bin', async () => {
    for (const f of ['README.md', 'worker-client/README.md', 'docs/DESIGN.md', 'docs/DEPLOY.md']) {
      const text = await readFile(join(ROOT, f), 'utf8').catch(() => '');
      expect(text, f).not.toMatch(/npx\s+(--\S+\s+)*transcript-store-client/);
      expect(text, f).not.toMatch(/npm (i|install|add)\s+(-\S+\s+)*@transcript-store\/worker-client/);
    }
  });

  it('show the CLI as the local build, and the base URL by its one documented name', async () => {
    const readme = await readFile(join(ROOT, 'README.md'), 'utf8');
    const client = await readFile(join(ROOT, 'worker-client/README.md'), 'utf8');
    expect(readme).toContain('node worker-client/dist/cli.js');
    expect(client).toContain('node worker-client/dist/cli.js');
    for (const text of [readme, client]) {
      expect(text).toContain('TRANSCRIPT_STORE_URL');
      expect(text).not.toMatch(/\bBASE_URL=/);
    }
    const banner = await readFile(join(ROOT, 'scripts/local.ts'), 'utf8');
    expect(banner).toContain('TRANSCRIPT_STORE_URL=${svc.url}');
    expect(banner).not.toContain('BASE_URL=');
  });
});
