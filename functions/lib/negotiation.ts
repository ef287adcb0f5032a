/**
 * HTTP content negotiation for hydrate: conditional requests (RFC 9110 §13.1.2 If-None-Match) and
 * content codings (RFC 9110 §12.5.3 Accept-Encoding). The store only sees the outcome.
 */

/** What a client may accept: `gzip`, identity only, or anything (no Accept-Encoding header). */
export type Acceptable = 'gzip' | 'identity' | 'any';

/**
 * True when `If-None-Match` names our tag for `sha256` (`"<sha256>"`, weak or strong) or is `*`.
 * Only the opaque tag is compared (weak comparison, RFC 9110 §13.1.2).
 */
export function etagMatches(ifNoneMatch: string | undefined, sha256: string): boolean {
  if (!ifNoneMatch) return false;
  return ifNoneMatch.split(',').some((t) => {
    const tag = t.trim().replace(/^W\//, '');
    return tag === '*' || tag === `"${sha256}"`;
  });
}

/**
 * Reads an Accept-Encoding header (RFC 9110 §12.5.3): `any` when absent (any coding is acceptable),
 * `gzip` when gzip (or `*`) has a non-zero q-value, otherwise `identity`.
 */
export function acceptable(acceptEncoding: string | undefined): Acceptable {
  if (acceptEncoding === undefined) return 'any';
  let gzipQ: number | undefined;
  let starQ: number | undefined;
  for (const part of acceptEncoding.split(',')) {
    const [name, ...params] = part.trim().toLowerCase().split(';');
    const qParam = params.map((p) => p.trim()).find((p) => p.startsWith('q='));
    const q = qParam ? Number(qParam.slice(2)) : 1;
    if (name === 'gzip' || name === 'x-gzip') gzipQ = Number.isFinite(q) ? q : 0;
    if (name === '*') starQ = Number.isFinite(q) ? q : 0;
  }
  const q = gzipQ ?? starQ ?? 0;
  return q > 0 ? 'gzip' : 'identity';
}
