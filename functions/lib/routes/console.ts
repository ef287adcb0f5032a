import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { Logger } from '@aws-lambda-powertools/logger';
import { ERRORS } from '../contract.js';
import { HttpError } from '../errors.js';
import { header, httpHandler, type HttpEvent, type HttpResult, type LambdaHttpHandler } from '../http.js';
import { CONSOLE_FILES, CONSOLE_PATH, CONSOLE_SECURITY_HEADERS, consoleFilePath, type ConsoleFileName } from './console-files.js';

/** One built console file, ready to serve. */
export interface ConsoleAsset {
  readonly contentType: string;
  /** UTF-8 text (HTML, JS, CSS). */
  readonly body: string;
  /** Strong ETag: `"<sha256 hex of the body, first 32 chars>"`. */
  readonly etag: string;
}

/** Built files keyed by request path (`/console`, `/console/app.js`, …). */
export type ConsoleAssets = ReadonlyMap<string, ConsoleAsset>;

/** The served form of built files (by name, as `console/build.ts` makes them). Throws if a file is missing. */
export function consoleAssets(files: Readonly<Record<string, Uint8Array>>): ConsoleAssets {
  const map = new Map<string, ConsoleAsset>();
  for (const [name, contentType] of Object.entries(CONSOLE_FILES) as [ConsoleFileName, string][]) {
    const bytes = files[name];
    if (!bytes) throw new Error(`console asset ${name} is missing`);
    const etag = `"${createHash('sha256').update(bytes).digest('hex').slice(0, 32)}"`;
    map.set(consoleFilePath(name), { contentType, body: Buffer.from(bytes).toString('utf8'), etag });
  }
  return map;
}

/** Reads the built files from `dir` (the Lambda: written there by the CDK bundling hook). */
export async function loadConsoleAssets(dir: URL | string): Promise<ConsoleAssets> {
  const base = typeof dir === 'string' ? dir.replace(/\/?$/, '/') : dir;
  const entries = await Promise.all(
    (Object.keys(CONSOLE_FILES) as ConsoleFileName[]).map(async (name) => [name, await readFile(typeof base === 'string' ? base + name : new URL(name, base))] as const),
  );
  return consoleAssets(Object.fromEntries(entries));
}

/**
 * `GET /console` and `GET /console/{asset}`: the operator console, a static web app that calls the operator
 * API (`/admin/*`) with the token the operator pastes. No token, no storage: the files are public and
 * hold no data. Every answer carries the strict CSP and `nosniff`/`no-referrer`
 * ({@link CONSOLE_SECURITY_HEADERS}); `cache-control: no-cache` with a strong ETag (`If-None-Match` → 304),
 * so a deploy takes effect on the next load. An unknown asset is the contract's `404 not_found`.
 *
 * `load` is called on the first request and its result kept (a failed load is retried by the next
 * request, and answers 500 meanwhile).
 */
export function consoleRoute(load: () => Promise<ConsoleAssets>, logger: Logger): LambdaHttpHandler {
  let cached: Promise<ConsoleAssets> | undefined;
  const assets = () => {
    if (!cached) {
      cached = load();
      cached.catch(() => (cached = undefined));
    }
    return cached;
  };
  return httpHandler('console', logger, async (event, ctx): Promise<HttpResult> => {
    const path = requestedPath(event);
    ctx.fields['path'] = path;
    const asset = (await assets()).get(path);
    if (!asset) throw new HttpError(ERRORS.notFound, { headers: CONSOLE_SECURITY_HEADERS });
    const headers = { ...CONSOLE_SECURITY_HEADERS, 'cache-control': 'no-cache', etag: asset.etag };
    if (matches(header(event, 'if-none-match'), asset.etag)) return { statusCode: 304, headers };
    return { statusCode: 200, headers: { ...headers, 'content-type': asset.contentType }, body: asset.body };
  });
}

function matches(ifNoneMatch: string | undefined, etag: string): boolean {
  if (!ifNoneMatch) return false;
  return ifNoneMatch.split(',').some((t) => {
    const tag = t.trim().replace(/^W\//, '');
    return tag === '*' || tag === etag;
  });
}

/**
 * The console path asked for: from the route (`GET /console`) or its `{asset}` path parameter on API Gateway,
 * so a custom-domain base path in `rawPath` does not matter; else `rawPath` (the local adapter's exact routes).
 */
function requestedPath(event: HttpEvent): string {
  const asset = event.pathParameters?.['asset'];
  if (asset !== undefined) return `${CONSOLE_PATH}/${asset}`;
  if (event.routeKey === `GET ${CONSOLE_PATH}`) return CONSOLE_PATH;
  return event.rawPath ?? event.requestContext?.http?.path ?? '';
}
