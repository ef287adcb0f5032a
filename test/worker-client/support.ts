import { randomUUID } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Logger } from '@aws-lambda-powertools/logger';
import { afterAll, afterEach, beforeAll, beforeEach } from 'vitest';
import { startLocalService, type LocalService } from '../../local/service.js';
import type { ClientEvent, TransportOptions } from '../../worker-client/src/index.js';

/**
 * Retry settings for fault tests: tiny backoff (fast), and a per-attempt timeout and deadline that no
 * healthy attempt can reach, however loaded the machine (the test itself times out at 30 s), so attempt
 * counts never depend on scheduling. A test about timeouts sets its own `timeoutMs`/`deadlineMs`.
 */
export const FAST: TransportOptions = { backoffBaseMs: 5, backoffMaxMs: 20, timeoutMs: 20_000, deadlineMs: 25_000 };

export async function startService(): Promise<LocalService> {
  return startLocalService({ port: 0, logger: new Logger({ serviceName: 'test', logLevel: 'SILENT' }) });
}

/**
 * The usual lifecycle of a worker-client test file: one local service for the file, a fresh temp
 * directory for each test (removed afterwards). Hands them to the file through the two setters.
 */
export function useServiceAndTempDir(setService: (svc: LocalService) => void, setDir: (dir: string) => void): void {
  let svc: LocalService | undefined;
  let cleanup: (() => Promise<void>) | undefined;
  beforeAll(async () => {
    svc = await startService();
    setService(svc);
  });
  afterAll(async () => {
    await svc?.stop();
  });
  beforeEach(async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    setDir(t.dir);
  });
  afterEach(async () => {
    await cleanup?.();
  });
}

/** A fresh conversation on `svc`, with a conversation token and a per-run token factory. */
export async function conversation(svc: LocalService) {
  const ids = { org: 'org-wc', agent: 'agent-wc', conv: `conv-${randomUUID()}` };
  const convToken = await svc.mintToken(ids);
  return {
    ...ids,
    convToken,
    runToken: (runId: number, issuedAt?: number) =>
      svc.mintToken({ ...ids, runId, ...(issuedAt !== undefined ? { issuedAt } : {}) }),
  };
}

export async function tempDir(): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'wc-test-'));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Leftover temp files of an atomic write (`.<name>.<pid>.<rand>.tmp`). */
export async function tempFilesIn(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((f) => f.endsWith('.tmp'));
}

export function collectEvents(): { events: ClientEvent[]; logger: (e: ClientEvent) => void } {
  const events: ClientEvent[] = [];
  return { events, logger: (e) => events.push(e) };
}

import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';

export interface FakeGateway {
  url: string;
  requests: { method: string; url: string; headers: IncomingMessage['headers']; body: string }[];
  close(): Promise<void>;
}

/** A tiny node:http server for cases the real service cannot produce (wrong digests, redirects). */
export async function fakeGateway(
  handler: (req: IncomingMessage, res: ServerResponse, body: string) => void,
): Promise<FakeGateway> {
  const requests: FakeGateway['requests'] = [];
  const server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks).toString('utf8');
    requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
    handler(req, res, body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const addr = server.address();
  if (!addr || typeof addr === 'string') throw new Error('no address');
  return {
    url: `http://127.0.0.1:${addr.port}`,
    requests,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
