/**
 * Builds the operator console (docs/DESIGN.md § Operator console) from `console/src/main.ts` (+ the CSS
 * it imports) and `console/index.html` with esbuild: one script, one stylesheet, one page, no external
 * resources (the page works offline under the console's strict Content-Security-Policy).
 *
 * Used three ways, so nothing built is ever committed:
 * - `npm start` and the tests: {@link buildConsoleAssets} in memory, on the first request for `/console`;
 * - the CDK stack: the console function's `afterBundling` hook runs this file as a CLI
 *   (`tsx console/build.ts <outDir>`), which writes the files next to the Lambda's `index.mjs`;
 * - `functions/console.ts` then reads them from there at cold start.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { CONSOLE_FILES, type ConsoleFileName } from '../functions/lib/routes/console-files.js';

const HERE = fileURLToPath(new URL('.', import.meta.url));

/**
 * The console's files, built in memory: `index.html` as written, `app.js` (ES2022 IIFE, minified) and
 * `app.css`, keyed by file name (the names in {@link CONSOLE_FILES}). Throws esbuild's error (with
 * file:line) when the sources do not compile.
 */
export async function buildConsoleAssets(): Promise<Record<ConsoleFileName, Uint8Array>> {
  const result = await build({
    entryPoints: { app: join(HERE, 'src/main.ts') },
    bundle: true,
    write: false,
    outdir: '/console-out',
    format: 'iife',
    target: ['es2022', 'chrome110', 'firefox115', 'safari16'],
    minify: true,
    legalComments: 'none',
    charset: 'utf8',
    logLevel: 'silent',
    loader: { '.css': 'css' },
  });
  const out: Partial<Record<ConsoleFileName, Uint8Array>> = { 'index.html': await readFile(join(HERE, 'index.html')) };
  for (const file of result.outputFiles) {
    const name = file.path.split('/').pop();
    if (name === 'app.js' || name === 'app.css') out[name] = file.contents;
  }
  for (const name of Object.keys(CONSOLE_FILES) as ConsoleFileName[]) {
    if (!out[name]) throw new Error(`console build produced no ${name}`);
  }
  return out as Record<ConsoleFileName, Uint8Array>;
}

/** Writes the built files into `dir` (created if missing). */
export async function writeConsoleAssets(dir: string): Promise<void> {
  const files = await buildConsoleAssets();
  await mkdir(dir, { recursive: true });
  await Promise.all(Object.entries(files).map(([name, body]) => writeFile(join(dir, name), body)));
}

// CLI: `tsx console/build.ts <outDir>` (the CDK bundling hook).
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const dir = process.argv[2];
  if (!dir) {
    process.stderr.write('usage: tsx console/build.ts <outDir>\n');
    process.exit(2);
  }
  writeConsoleAssets(dir).catch((err: unknown) => {
    process.stderr.write(`console build failed: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
