/**
 * The operator API client (docs/DESIGN.md § Operator API). The admin token goes in the Authorization
 * header only — never in a URL. URLs are relative to the page (`/console` → `/admin/...`), so a stage or
 * base-path prefix in front of the API works unchanged.
 */

export interface ConversationSummary {
  agentId: string;
  conversationId: string;
  lastActivityAt: string | number | null;
  latestRunId: number | null;
  latestBytes: number | null;
  runs: number | null;
  bytes: number | null;
}

export type TerminalStatus = 'completed' | 'failed' | 'timeout' | 'cancelled';
export type RunState = 'latest' | 'superseded' | 'fenced';

export interface RunSummary {
  runId: number;
  terminalStatus: TerminalStatus | string;
  bytes: number;
  createdAt: string | number | null;
  sha256: string;
  state: RunState | string;
}

export interface AgentSummary {
  agentId: string;
  conversations: number | null;
  runs: number | null;
  bytes: number | null;
}

export interface LineRecord {
  /** Line number, 1-based. */
  line: number;
  /** Byte offset of the line's first byte in the run. */
  offset: number;
  /** The line's length in bytes (UTF-8, without its newline). */
  bytes?: number;
  /** The line without its newline (only its beginning when `truncated`). */
  text: string;
  /** True when the line was longer than a page's text budget and `text` is only its beginning. */
  truncated?: boolean;
}

export interface LinesPage {
  runId: number;
  lines: LineRecord[];
  nextCursor: string | null;
  /** The run's total size in bytes. */
  bytes: number;
}

export interface Page<K extends string, T> {
  items: T[];
  nextCursor: string | null;
  key: K;
}

/** An answer other than 2xx, with the API's `{error, code}` when it sent one. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

type Params = Record<string, string | number | undefined | null>;

export class AdminApi {
  constructor(
    private readonly token: string,
    /** Called on 401 (token missing, expired or forged) and 403 (not an admin token) before the error is thrown. */
    private readonly onAuthFailure: (err: ApiError) => void,
  ) {}

  /** Absolute URL of an API path, relative to the page (`admin/...`). */
  static url(path: string, params: Params = {}): string {
    const url = new URL(path.replace(/^\//, ''), document.baseURI);
    for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') url.searchParams.set(k, String(v));
    return url.toString();
  }

  async request(path: string, params: Params = {}, init: RequestInit = {}): Promise<Response> {
    let res: Response;
    try {
      res = await fetch(AdminApi.url(path, params), {
        ...init,
        headers: { ...(init.headers as Record<string, string> | undefined), authorization: `Bearer ${this.token}` },
        credentials: 'omit',
        cache: 'no-store',
        referrerPolicy: 'no-referrer',
      });
    } catch (err) {
      if ((err as Error).name === 'AbortError') throw err;
      throw new ApiError(0, 'network', `Network error: ${(err as Error).message}`);
    }
    if (res.ok || res.type === 'opaqueredirect' || res.status === 304) return res;
    let code = 'http_' + res.status;
    let message = `${res.status} ${res.statusText}`;
    try {
      const body = (await res.json()) as { error?: unknown; code?: unknown };
      if (typeof body.code === 'string') code = body.code;
      if (typeof body.error === 'string') message = body.error;
    } catch {
      // not JSON
    }
    const err = new ApiError(res.status, code, message);
    if (res.status === 401 || res.status === 403) this.onAuthFailure(err);
    throw err;
  }

  async json<T>(path: string, params: Params = {}, signal?: AbortSignal): Promise<T> {
    const res = await this.request(path, params, signal ? { signal } : {});
    return (await res.json()) as T;
  }

  conversations(p: { agentId?: string; limit?: number; cursor?: string | null }, signal?: AbortSignal) {
    return this.json<{ conversations: ConversationSummary[]; nextCursor: string | null }>('admin/conversations', p, signal);
  }

  runs(p: { agentId: string; conversationId: string; limit?: number; cursor?: string | null }, signal?: AbortSignal) {
    return this.json<{ runs: RunSummary[]; nextCursor: string | null }>('admin/runs', p, signal);
  }

  agents(p: { cursor?: string | null } = {}, signal?: AbortSignal) {
    return this.json<{ agents: AgentSummary[]; nextCursor: string | null }>('admin/agents', p, signal);
  }

  lines(p: { agentId: string; conversationId: string; runId?: number; cursor?: string | null; limit?: number }, signal?: AbortSignal) {
    return this.json<LinesPage>('admin/lines', p, signal);
  }

  /**
   * The run's bytes as one download (`GET /admin/run`): the Blob when the API answers inline, or
   * `undefined` when it answers with a redirect to storage (large runs), which this page may not follow
   * (its CSP allows same-origin connections only) — the caller then assembles the file from lines.
   */
  async runBlob(p: { agentId: string; conversationId: string; runId: number }, signal?: AbortSignal): Promise<Blob | undefined> {
    const res = await this.request('admin/run', p, { redirect: 'manual', ...(signal && { signal }) });
    if (res.type === 'opaqueredirect' || (res.status >= 300 && res.status < 400)) return undefined;
    return res.blob();
  }
}
