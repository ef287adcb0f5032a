import { afterAll, beforeAll } from 'vitest';
import { SNAPSHOT_PATH } from '../../functions/lib/contract.js';
import type { DevTokenClaims } from '../../local/dev-secret.js';
import { startLocalService, type LocalService, type LocalServiceOptions } from '../../local/service.js';

/** Starts the real local service (handlers + adapter + embedded emulators) for one test file. */
export function useLocalService(opts: LocalServiceOptions = {}): { readonly svc: LocalService; api: Api } {
  const holder = {} as { svc: LocalService; api: Api };
  beforeAll(async () => {
    holder.svc = await startLocalService(opts);
    holder.api = new Api(holder.svc.url, (c) => holder.svc.mintToken(c));
  });
  afterAll(async () => {
    await holder.svc?.stop();
  });
  return {
    get svc() {
      return holder.svc;
    },
    get api() {
      return holder.api;
    },
  };
}

let counter = 0;
/** A fresh conversation scope per test, so tests never see each other's data. */
export function freshScope(prefix = 'conv'): { org: string; agent: string; conv: string } {
  counter += 1;
  return { org: 'org-test', agent: 'agent-test', conv: `${prefix}-${process.pid}-${Date.now()}-${counter}` };
}

export type Scope = ReturnType<typeof freshScope>;

/** Plain-fetch client, exactly like existing workers: concatenated URL, Bearer header. */
export class Api {
  constructor(
    readonly baseUrl: string,
    private readonly mint: (c: DevTokenClaims) => Promise<string>,
  ) {}

  get url(): string {
    return `${this.baseUrl}${SNAPSHOT_PATH}`;
  }

  token(scope: Scope, extra: Partial<DevTokenClaims> = {}): Promise<string> {
    return this.mint({ ...scope, ...extra });
  }

  async get(token: string, headers: Record<string, string> = {}): Promise<Response> {
    return fetch(this.url, { headers: { authorization: `Bearer ${token}`, ...headers } });
  }

  async post(token: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
    return fetch(this.url, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...headers },
      body: typeof body === 'string' || body instanceof Uint8Array ? body : JSON.stringify(body),
    });
  }

  async del(token: string): Promise<Response> {
    return fetch(this.url, { method: 'DELETE', headers: { authorization: `Bearer ${token}` } });
  }

  /** POST a snapshot for `runId` with a per-run token. */
  async write(scope: Scope, runId: number, snapshotJsonl: string, terminalStatus = 'completed', extra: Partial<DevTokenClaims> = {}): Promise<Response> {
    const token = await this.token(scope, { runId, ...extra });
    return this.post(token, { terminalStatus, snapshotJsonl, runId });
  }

  /** GET as bytes: `undefined` on 404; throws on anything but 200/404. */
  async hydrate(scope: Scope): Promise<{ runId: number; body: Buffer } | undefined> {
    const res = await this.get(await this.token(scope));
    if (res.status === 404) {
      await res.body?.cancel();
      return undefined;
    }
    if (res.status !== 200) throw new Error(`hydrate: unexpected ${res.status} ${await res.text()}`);
    return { runId: Number(res.headers.get('x-snapshot-run-id')), body: Buffer.from(await res.arrayBuffer()) };
  }

  async clear(scope: Scope): Promise<number> {
    const res = await this.del(await this.token(scope));
    if (res.status !== 200) throw new Error(`clear: unexpected ${res.status} ${await res.text()}`);
    return ((await res.json()) as { deleted: number }).deleted;
  }
}

export function shuffle<T>(items: T[], seed = 42): T[] {
  const out = [...items];
  let s = seed;
  for (let i = out.length - 1; i > 0; i--) {
    s = (s * 1103515245 + 12345) & 0x7fffffff;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}
