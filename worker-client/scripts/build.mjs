#!/usr/bin/env node
/**
 * Builds the package into dist/ from a clean slate (`npm run build`; also the `prepare` script, so a
 * repository `npm install` and every `npm pack` run it):
 *
 *   dist/        ESM (`import`), .d.ts, source maps, and the CLI (dist/cli.js, executable)
 *   dist/cjs/    CommonJS (`require`), .d.ts, source maps, with a package.json {"type":"commonjs"}
 *
 * dist/ is removed first, so a source file that was deleted never ships from an old build. TypeScript is
 * the repository's dev dependency, resolved from here upwards (node_modules of this package or of the
 * repository root). Exits non-zero when a compile fails, which fails `npm install` / `npm pack` loudly.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');
let tsc;
try {
  tsc = createRequire(join(root, 'package.json')).resolve('typescript/bin/tsc');
} catch {
  console.error('worker-client build: typescript not found; run `npm install` in the repository root first');
  process.exit(1);
}

rmSync(dist, { recursive: true, force: true });
for (const config of ['tsconfig.json', 'tsconfig.cjs.json']) {
  try {
    execFileSync(process.execPath, [tsc, '-p', join(root, config)], { stdio: 'inherit', cwd: root });
  } catch {
    console.error(`worker-client build: tsc -p ${config} failed`);
    process.exit(1);
  }
}
writeFileSync(join(dist, 'cjs', 'package.json'), `${JSON.stringify({ type: 'commonjs' })}\n`);
chmodSync(join(dist, 'cli.js'), 0o755);
