/**
 * The one definition of how a handler is bundled. The stack (via NodejsFunction, which runs the local
 * esbuild CLI — never Docker) and `scripts/bench-coldstart.ts` (via the esbuild JS API) both derive
 * their options from LAMBDA_BUNDLE, so the benchmark measures exactly what is deployed.
 *
 * This module is plain data on purpose: no aws-cdk-lib import, so the benchmark does not pay for it.
 */
import type { BuildOptions } from 'esbuild';

/** Lambda runtime major version; must match `lambda.Runtime.NODEJS_22_X` in the stack. */
export const NODE_MAJOR = 22;

/**
 * ESM bundles cannot call `require`, but a few CommonJS dependencies (inside the AWS SDK's dependency
 * tree) `require()` Node built-ins. esbuild turns those into a `__require` shim that throws
 * "Dynamic require of ... is not supported" unless a real `require` exists in module scope.
 */
export const ESM_REQUIRE_BANNER =
  "import { createRequire as __tsCreateRequire } from 'node:module'; const require = __tsCreateRequire(import.meta.url);";

export const LAMBDA_BUNDLE = {
  target: `node${NODE_MAJOR}`,
  platform: 'node',
  format: 'esm',
  /** Prefer the packages' ESM builds (tree-shakable), fall back to CommonJS. */
  mainFields: ['module', 'main'],
  minify: true,
  /** External `index.mjs.map`, loaded by `NODE_OPTIONS=--enable-source-maps`. */
  sourcemap: true,
  /** Maps carry file:line only, not the sources: much smaller maps, same stack traces. */
  sourcesContent: false,
  banner: ESM_REQUIRE_BANNER,
  /**
   * Nothing is external: the AWS SDK v3 is bundled (measured: 119 ms cold import bundled vs 186 ms
   * when loaded from the runtime's copy, as measured when the bundling was chosen), and the version is the one we tested with.
   */
  external: [] as string[],
  /** NodejsFunction names ESM output `index.mjs`; the Lambda handler string is `index.handler`. */
  outfileName: 'index.mjs',
} as const;

/** Options for esbuild's JS API (`esbuild.build`) equivalent to what NodejsFunction passes to the CLI. */
export function esbuildOptions(entry: string, outfile: string): BuildOptions {
  return {
    entryPoints: [entry],
    outfile,
    bundle: true,
    target: LAMBDA_BUNDLE.target,
    platform: LAMBDA_BUNDLE.platform,
    format: LAMBDA_BUNDLE.format,
    mainFields: [...LAMBDA_BUNDLE.mainFields],
    minify: LAMBDA_BUNDLE.minify,
    sourcemap: LAMBDA_BUNDLE.sourcemap,
    sourcesContent: LAMBDA_BUNDLE.sourcesContent,
    banner: { js: LAMBDA_BUNDLE.banner },
    external: [...LAMBDA_BUNDLE.external],
    logLevel: 'warning',
  };
}

/**
 * Shell commands (NodejsFunction `commandHooks.afterBundling`) that build the operator console into
 * `<outputDir>/<assetsDir>` with the repository's own build (`console/build.ts` through tsx, both from
 * `node_modules` — no network, no Docker), so the deployed function serves files built from the sources
 * being deployed. Paths are quoted for a POSIX shell.
 */
export function consoleAfterBundling(inputDir: string, outputDir: string, assetsDir: string): string[] {
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  return [`${q(`${inputDir}/node_modules/.bin/tsx`)} ${q(`${inputDir}/console/build.ts`)} ${q(`${outputDir}/${assetsDir}`)}`];
}
