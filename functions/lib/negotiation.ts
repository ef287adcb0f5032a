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

/**
 * True when an `A-IM` header (RFC 3229 §10.5.3: a comma-separated list of instance-manipulations, each
 * with optional parameters) names `name` (case-insensitive) without `q=0`.
 */
export function acceptsInstanceManipulation(aIm: string | undefined, name: string): boolean {
  if (!aIm) return false;
  return aIm.split(',').some((part) => {
    const [im, ...params] = part.trim().toLowerCase().split(';');
    if (im?.trim() !== name) return false;
    const q = params.map((p) => p.trim()).find((p) => p.startsWith('q='));
    return q === undefined || Number(q.slice(2)) > 0;
  });
}

/** The first entity tag in If-None-Match that is one of ours (`"<64 hex>"`, weak or strong): the sha256 the client holds. */
export function heldSha256(ifNoneMatch: string | undefined): string | undefined {
  if (!ifNoneMatch) return undefined;
  for (const t of ifNoneMatch.split(',')) {
    const m = /^(?:W\/)?"([0-9a-f]{64})"$/.exec(t.trim());
    if (m) return m[1];
  }
  return undefined;
}
