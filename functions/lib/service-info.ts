import pkg from '../../package.json' with { type: 'json' };

/**
 * What this service is: its name and its version, read from the repository's `package.json` (bundled into
 * each Lambda that imports this module by esbuild, read by tsx/vitest locally), so `GET /health` and the
 * OpenAPI document's `info.version` always name the version that was built. (A default import of JSON is not
 * tree-shaken: the bundle carries all of `package.json`, about 2 KB, none of it secret; only these two are used.)
 */
export const SERVICE_NAME: string = pkg.name;
/** The `version` field of `package.json` (semver, e.g. `0.1.0`). */
export const SERVICE_VERSION: string = pkg.version;
