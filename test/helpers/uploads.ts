import { UPLOADS_PATH } from '../../functions/lib/contract.js';
import type { Api, Scope } from './service.js';

export interface Ticket {
  uploadId: string;
  expiresAt: string;
  encoding: 'gzip' | 'identity';
  url?: string;
  partBytes?: number;
  parts?: { partNumber: number; url: string }[];
}

/** The presigned-upload protocol with plain fetch: create → PUT (or parts) → commit POST. */
export async function createUpload(api: Api, token: string, body: unknown): Promise<Response> {
  return fetch(`${api.baseUrl}${UPLOADS_PATH}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
}

export async function putUpload(ticket: Ticket, data: Buffer): Promise<{ partNumber: number; etag: string }[] | undefined> {
  if (ticket.url) {
    const res = await fetch(ticket.url, { method: 'PUT', body: data });
    if (res.status !== 200) throw new Error(`PUT upload: ${res.status} ${await res.text()}`);
    return undefined;
  }
  const parts: { partNumber: number; etag: string }[] = [];
  for (const p of ticket.parts!) {
    const chunk = data.subarray((p.partNumber - 1) * ticket.partBytes!, p.partNumber * ticket.partBytes!);
    const res = await fetch(p.url, { method: 'PUT', body: chunk });
    if (res.status !== 200) throw new Error(`PUT part ${p.partNumber}: ${res.status} ${await res.text()}`);
    parts.push({ partNumber: p.partNumber, etag: res.headers.get('etag')! });
  }
  return parts;
}

/** Whole flow; returns the commit response. */
export async function uploadSnapshot(
  api: Api,
  scope: Scope,
  runId: number,
  transfer: Buffer,
  encoding: 'gzip' | 'identity',
  extra: { issuedAt?: number; terminalStatus?: string } = {},
): Promise<Response> {
  const token = await api.token(scope, { runId, ...(extra.issuedAt !== undefined && { issuedAt: extra.issuedAt }) });
  const created = await createUpload(api, token, { runId, bytes: transfer.length, contentEncoding: encoding });
  if (created.status !== 200) throw new Error(`create upload: ${created.status} ${await created.text()}`);
  const ticket = (await created.json()) as Ticket;
  const parts = await putUpload(ticket, transfer);
  return api.post(token, { terminalStatus: extra.terminalStatus ?? 'completed', runId, uploadId: ticket.uploadId, ...(parts && { parts }) });
}
