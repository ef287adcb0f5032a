/**
 * The admin token lives in this tab's sessionStorage only (gone when the tab closes; never in
 * localStorage, a cookie or a URL). `npm start` prints a console URL carrying a dev token in the
 * fragment (`#token=…`, never sent to a server); it is read once and removed from the address bar and
 * history at once.
 */
const KEY = 'transcript-store.console.adminToken';

export function storedToken(): string | undefined {
  try {
    return sessionStorage.getItem(KEY) ?? undefined;
  } catch {
    return undefined;
  }
}

export function storeToken(token: string): void {
  try {
    sessionStorage.setItem(KEY, token);
  } catch {
    // storage disabled: the token lives in memory for this page only
  }
}

export function forgetToken(): void {
  try {
    sessionStorage.removeItem(KEY);
  } catch {
    // nothing stored
  }
}

/** A token passed in the URL fragment (`#token=…`), removed from the URL (replaceState) before anything else runs. */
export function takeTokenFromFragment(): string | undefined {
  const hash = location.hash.replace(/^#/, '');
  if (!hash.startsWith('token=')) return undefined;
  const params = new URLSearchParams(hash);
  const token = params.get('token')?.trim();
  history.replaceState(null, '', location.pathname + location.search + '#/');
  return token || undefined;
}

/** The claims of a JWT for display only (never trusted: the API verifies the token). */
export function describeToken(token: string): { org?: string; sub?: string; exp?: number } {
  try {
    const payload = token.split('.')[1];
    if (!payload) return {};
    const json = JSON.parse(atob(payload.replace(/-/g, '+').replace(/_/g, '/'))) as Record<string, unknown>;
    return {
      ...(typeof json['organizationId'] === 'string' && { org: json['organizationId'] }),
      ...(typeof json['sub'] === 'string' && { sub: json['sub'] }),
      ...(typeof json['exp'] === 'number' && { exp: json['exp'] }),
    };
  } catch {
    return {};
  }
}
