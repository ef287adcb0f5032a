import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { ScanCommand } from '@aws-sdk/client-dynamodb';
import { expect } from 'vitest';
import { errorBody, type ErrorSpec } from '../../functions/lib/contract.js';
import type { LocalService } from '../../local/service.js';

/**
 * Everything stored: every S3 key and every DynamoDB item. Equal fingerprints = store unchanged.
 * `except`: leave out entries that mention this (plain) id — the caller's own conversation.
 */
export async function storeFingerprint(svc: LocalService, except?: string): Promise<string> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const page = await svc.s3.send(new ListObjectsV2Command({ Bucket: svc.config.bucketName, ContinuationToken: token }));
    for (const o of page.Contents ?? []) keys.push(`${o.Key} ${o.Size}`);
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  const items: string[] = [];
  let start: Record<string, never> | undefined;
  do {
    const page = await svc.ddb.send(new ScanCommand({ TableName: svc.config.tableName, ExclusiveStartKey: start }));
    for (const i of page.Items ?? []) items.push(JSON.stringify(Object.entries(i).sort()));
    start = page.LastEvaluatedKey as typeof start;
  } while (start);
  const keep = (e: string) => except === undefined || !e.includes(except);
  return JSON.stringify({ keys: keys.filter(keep).sort(), items: items.filter(keep).sort() });
}

/** The exact documented answer: status and JSON body (never a 500). */
export async function expectError(res: Response, spec: ErrorSpec): Promise<void> {
  const text = await res.text();
  expect(res.status, text).not.toBe(500);
  expect({ status: res.status, body: JSON.parse(text) as unknown }).toEqual({ status: spec.status, body: errorBody(spec) });
  expect(res.headers.get('content-type')).toMatch(/^application\/json/);
  if (spec.status === 401) expect(res.headers.get('www-authenticate')).toBe('Bearer');
}

export const b64url = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');
