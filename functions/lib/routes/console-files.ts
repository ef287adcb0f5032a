/**
 * The operator console's files and how they are served (docs/DESIGN.md § Operator console). Plain data,
 * shared by the build (`console/build.ts`), the route (`console.ts`) and the stack (`infra/routes.ts`).
 */

/** The page: `GET /console`. Its assets are `GET /console/<file>` (relative URLs, so a stage or base path prefix works). */
export const CONSOLE_PATH = '/console';

/** Every file the console consists of, with its content type. `index.html` is served at {@link CONSOLE_PATH} itself. */
export const CONSOLE_FILES = Object.freeze({
  'index.html': 'text/html; charset=utf-8',
  'app.js': 'text/javascript; charset=utf-8',
  'app.css': 'text/css; charset=utf-8',
});

export type ConsoleFileName = keyof typeof CONSOLE_FILES;

/** The request path each file is served at. */
export function consoleFilePath(name: ConsoleFileName): string {
  return name === 'index.html' ? CONSOLE_PATH : `${CONSOLE_PATH}/${name}`;
}

/**
 * The console's Content-Security-Policy: nothing but its own script, stylesheet and same-origin API calls
 * (the operator API); no inline script or style, no framing, no forms posting anywhere, no `<base>`.
 * `img-src data:` lets a transcript's inline images (base64 content blocks) show.
 */
export const CONSOLE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "connect-src 'self'",
  "img-src 'self' data:",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

/** Headers on every console answer (200, 304 and 404 alike). */
export const CONSOLE_SECURITY_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  'content-security-policy': CONSOLE_CSP,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
});
