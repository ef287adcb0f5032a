/**
 * Shared helpers of the incremental-sync tests (append POSTs, deltas): digests, the documented answers,
 * and byte-exact hydrate checks. Each helper asserts with vitest's `expect`.
 */
import { createHash } from 'node:crypto';
import { expect } from 'vitest';
import { errorBody, type ErrorSpec } from '../../functions/lib/contract.js';
import { conversationKey } from '../../functions/lib/ids.js';
import type { Api, Scope } from './service.js';

/** Lowercase hex sha256 of a string (UTF-8) or bytes. */
export const sha = (s: string | Buffer): string => createHash('sha256').update(s).digest('hex');
/** UTF-8 length in bytes. */
export const len = (s: string): number => Buffer.byteLength(s, 'utf8');
/** The conversation key (DynamoDB partition, S3 prefix) of a test scope. */
export const pkOf = (s: Scope): string => conversationKey({ organizationId: s.org, agentId: s.agent, conversationId: s.conv });
/** One JSONL line. */
export const line = (o: unknown): string => JSON.stringify(o) + '\n';

/** Asserts a 200 and returns its JSON body. */
export async function ok(res: Response | Promise<Response>): Promise<Record<string, unknown>> {
  const r = await res;
  const text = await r.text();
  expect(r.status, text).toBe(200);
  return JSON.parse(text) as Record<string, unknown>;
}

/** Asserts the status and the exact documented body of an error. */
export async function expectError(res: Response | Promise<Response>, e: ErrorSpec): Promise<void> {
  const r = await res;
  const text = await r.text();
  expect(r.status, text).toBe(e.status);
  expect(JSON.parse(text)).toEqual(errorBody(e));
}

/** Asserts that a hydrate serves run `runId` with exactly `content`. */
export async function expectHydrate(api: Api, scope: Scope, runId: number, content: string): Promise<void> {
  const h = await api.hydrate(scope);
  expect(h?.runId).toBe(runId);
  expect(h?.body.equals(Buffer.from(content, 'utf8')), 'hydrate byte-exact').toBe(true);
}
