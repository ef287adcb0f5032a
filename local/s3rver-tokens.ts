/**
 * s3rver 3.7.1 encrypts ListObjectsV2 continuation tokens with single DES, which OpenSSL 3 (Node ≥ 17) offers
 * only through its legacy provider: without `--openssl-legacy-provider` every paginated listing answers 500
 * (ERR_OSSL_EVP_UNSUPPORTED). Instead of forcing that flag on everyone's NODE_OPTIONS, this module loads
 * s3rver's bucket controller with the cipher swapped for AES-128-CBC (same token layout: an 8-byte IV prefix,
 * doubled to AES's 16). The tokens stay opaque to clients, as S3's are. Local development and tests only.
 *
 * It must be imported before anything imports `s3rver` (local/emulators.ts imports it first): it puts the
 * patched module into the CommonJS require cache, where s3rver's own `require('./controllers/bucket')` finds
 * it. If s3rver's source no longer contains the expected lines, it throws, naming the file: a version bump
 * must be looked at, not silently half-patched.
 */
import { readFileSync } from 'node:fs';
import { createRequire, Module } from 'node:module';
import { dirname } from 'node:path';

const require = createRequire(import.meta.url);

const REPLACEMENTS: readonly [string, string][] = [
  ["crypto.createCipheriv('des', key, iv)", "crypto.createCipheriv('aes-128-cbc', Buffer.concat([key, key]), Buffer.concat([iv, iv]))"],
  ["crypto.createDecipheriv('des', key, iv)", "crypto.createDecipheriv('aes-128-cbc', Buffer.concat([key, key]), Buffer.concat([iv, iv]))"],
];

/** Loads s3rver's bucket controller with continuation tokens that need no legacy cipher (idempotent). */
export function patchS3rverContinuationTokens(): void {
  const filename = require.resolve('s3rver/lib/controllers/bucket.js');
  if (require.cache[filename]) return;
  let source = readFileSync(filename, 'utf8');
  for (const [from, to] of REPLACEMENTS) {
    if (!source.includes(from)) throw new Error(`s3rver-tokens: ${filename} no longer contains "${from}"; check the s3rver version`);
    source = source.replace(from, to);
  }
  const internal = Module as unknown as { _nodeModulePaths(dir: string): string[] };
  const mod = new Module(filename) as Module & { _compile(code: string, filename: string): void; paths: string[] };
  mod.filename = filename;
  mod.paths = internal._nodeModulePaths(dirname(filename));
  mod._compile(source, filename);
  mod.loaded = true;
  require.cache[filename] = mod;
}

patchS3rverContinuationTokens();
