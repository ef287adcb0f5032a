import { ADMIN_PATHS } from '../../functions/lib/contract.js';
import type { DevAdminTokenClaims } from '../../local/dev-secret.js';
import type { LocalService } from '../../local/service.js';

/** A plain-fetch client of the operator API (docs/DESIGN.md § Operator API), for tests. */
export class AdminApi {
  constructor(private readonly svc: LocalService) {}

  /** An admin token of `org` (scope transcripts:admin), with extra claims. */
  token(org: string, extra: Omit<DevAdminTokenClaims, 'org'> = {}): Promise<string> {
    return this.svc.mintAdminToken({ org, ...extra });
  }

  /** GET `path` with `params` as the query (URLSearchParams encoding), Bearer `token` when given. */
  get(path: string, params: Record<string, string | number | undefined>, token: string | undefined, headers: Record<string, string> = {}): Promise<Response> {
    const query = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== undefined) query.append(k, String(v));
    const qs = query.toString();
    return fetch(`${this.svc.url}${path}${qs ? `?${qs}` : ''}`, {
      headers: { ...(token !== undefined && { authorization: `Bearer ${token}` }), ...headers },
      redirect: 'manual',
    });
  }

  /** GET with a raw query string (exactly as given). */
  raw(pathAndQuery: string, token: string | undefined, init: RequestInit = {}): Promise<Response> {
    return fetch(`${this.svc.url}${pathAndQuery}`, {
      ...init,
      headers: { ...(token !== undefined && { authorization: `Bearer ${token}` }), ...(init.headers as Record<string, string> | undefined) },
      redirect: 'manual',
    });
  }

  /** GET expecting 200 JSON. */
  async json<T>(path: string, params: Record<string, string | number | undefined>, token: string): Promise<T> {
    const res = await this.get(path, params, token);
    const text = await res.text();
    if (res.status !== 200) throw new Error(`${path}: ${res.status} ${text}`);
    return JSON.parse(text) as T;
  }

  /** Every page of a listing (follows `nextCursor`), each page's items under `key`. */
  async all<T>(path: string, key: string, params: Record<string, string | number | undefined>, token: string): Promise<{ items: T[]; pages: number }> {
    const items: T[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const page = await this.json<Record<string, unknown>>(path, { ...params, cursor }, token);
      pages += 1;
      items.push(...(page[key] as T[]));
      cursor = (page['nextCursor'] as string | null) ?? undefined;
      if (pages > 10_000) throw new Error('runaway pagination');
    } while (cursor);
    return { items, pages };
  }
}

export interface ListedConversation {
  agentId: string;
  conversationId: string;
  lastActivityAt: string;
  latestRunId: number | null;
  latestBytes: number | null;
  runs: number;
  bytes: number;
}

export interface ListedRun {
  runId: number;
  terminalStatus: string;
  bytes: number;
  storedBytes: number;
  createdAt: string;
  sha256: string;
  generation: number;
  state: 'latest' | 'fenced' | 'superseded';
}

export interface ListedLine {
  line: number;
  offset: number;
  bytes: number;
  text: string;
  truncated: boolean;
}

export interface LinesAnswer {
  runId: number;
  bytes: number;
  lines: ListedLine[];
  nextCursor: string | null;
}

/** The payload of a cursor (signed, not encrypted: its first part is base64url JSON). */
export function cursorPayload(cursor: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(cursor.slice(0, cursor.lastIndexOf('.')), 'base64url').toString('utf8')) as Record<string, unknown>;
}

/** Waits until the wall clock has moved past the current millisecond, so the next write gets a later activity time. */
export async function nextMillisecond(): Promise<void> {
  const t = Date.now();
  while (Date.now() === t) await new Promise((resolve) => setImmediate(resolve));
}

export { ADMIN_PATHS };
