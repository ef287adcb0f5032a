/**
 * The whole store as one object, for the local service, scripts and tests. Lambda handlers never import
 * this file: each route imports only the protocol steps it uses (see functions/lib/routes/), so its
 * bundle holds nothing else.
 */
import type { ConversationScope } from '../ids.js';
import { clearConversation } from './clear.js';
import { createStoreContext, type CallOptions, type StoreContext, type StoreOptions } from './context.js';
import { hydrate, type HydrateOptions, type HydrateResult } from './hydrate.js';
import { reconcile, type ReconcileOptions, type ReconcileResult } from './reconcile.js';
import { eraseScope, getReceipt, listReceipts, resumeErasures, retentionExpiry, type EraseOptions, type ErasureReceipt, type ErasureScope, type ReceiptPage } from './erasure.js';
import { retainConversation, runRetention, type ConversationRetention, type RetentionOptions, type RetentionResult } from './retention.js';
import { commitUpload, createUpload, type UploadCommit, type UploadRequest, type UploadTicket } from './uploads.js';
import { appendSnapshot, writeSnapshot, type AppendInput, type WriteInput, type WriteResult, type WriterScope } from './write.js';

export { createStoreContext, DEFAULT_LIMITS, type CallOptions, type StoreContext, type StoreLimits, type StoreOptions } from './context.js';
export { StoreError, isStoreError, type StoreErrorCode } from './errors.js';
export type { Acceptable, HydrateOptions, HydrateResult } from './hydrate.js';
export type { ReconcileOptions, ReconcileResult } from './reconcile.js';
export type { EraseOptions, ErasureReceipt, ErasureScope, ReceiptPage } from './erasure.js';
export { DEFAULT_RETENTION, type RetentionSettings } from './retention-settings.js';
export type { ConversationRetention, ExpiringConversation, RetentionCounts, RetentionLog, RetentionOptions, RetentionResult } from './retention.js';
export { HEAD_SK, RECONCILER_PK, RUN_SK_PREFIX, SNAPSHOT_PREFIX, UPLOAD_PREFIX, type Encoding, type SnapshotMeta } from './schema.js';
export type { UploadCommit, UploadRequest, UploadTicket } from './uploads.js';
export type { AppendInput, WriteInput, WriteResult, WriterScope } from './write.js';

/** A StoreContext with every operation as a method. It is itself a StoreContext (pass it to routes). */
export interface SnapshotStore extends StoreContext {}
export class SnapshotStore {
  constructor(opts: StoreOptions) {
    Object.assign(this, createStoreContext(opts));
  }

  /** See {@link hydrate}. */
  hydrate(scope: ConversationScope, opts?: HydrateOptions): Promise<HydrateResult> {
    return hydrate(this, scope, opts);
  }

  /** See {@link writeSnapshot}. */
  write(scope: WriterScope, input: WriteInput, opts?: CallOptions): Promise<WriteResult> {
    return writeSnapshot(this, scope, input, opts);
  }

  /** See {@link appendSnapshot}. */
  append(scope: WriterScope, input: AppendInput, opts?: CallOptions): Promise<WriteResult> {
    return appendSnapshot(this, scope, input, opts);
  }

  /** See {@link createUpload}. */
  createUpload(scope: WriterScope, input: UploadRequest, opts?: CallOptions): Promise<UploadTicket> {
    return createUpload(this, scope, input, opts);
  }

  /** See {@link commitUpload}. */
  commitUpload(scope: WriterScope, input: UploadCommit, opts?: CallOptions): Promise<WriteResult> {
    return commitUpload(this, scope, input, opts);
  }

  /** See {@link clearConversation}. */
  clear(scope: ConversationScope, opts?: CallOptions): Promise<{ deleted: number }> {
    return clearConversation(this, scope, opts);
  }

  /** See {@link reconcile}. */
  reconcile(opts: ReconcileOptions): Promise<ReconcileResult> {
    return reconcile(this, opts);
  }

  /**
   * A retention pass ({@link runRetention}) with the expiry of idle conversations wired to erasure
   * ({@link retentionExpiry}), unless `opts.expireConversation` is given.
   */
  runRetention(opts: RetentionOptions = {}): Promise<RetentionResult> {
    return runRetention(this, { expireConversation: retentionExpiry(this, boundsOf(opts)), ...opts });
  }

  /**
   * What the schedule runs (the retention Lambda, `npm start`'s timer): {@link SnapshotStore.runRetention}, then
   * {@link resumeErasures} within the same deadline, so an erasure whose caller died (an expiry, an admin's
   * request cut off) finishes here. Throws what either throws.
   */
  async runScheduledRetention(opts: RetentionOptions = {}): Promise<RetentionResult> {
    const result = await this.runRetention(opts);
    await resumeErasures(this, boundsOf(opts));
    return result;
  }

  /** See {@link eraseScope}. */
  erase(scope: ErasureScope, opts?: EraseOptions): Promise<ErasureReceipt> {
    return eraseScope(this, scope, opts);
  }

  /** See {@link getReceipt}. */
  erasureReceipt(organizationId: string, receiptId: string, opts?: CallOptions): Promise<ErasureReceipt | undefined> {
    return getReceipt(this, organizationId, receiptId, opts);
  }

  /** See {@link listReceipts}. */
  erasureReceipts(organizationId: string, page?: { cursor?: string | undefined; limit?: number | undefined }, opts?: CallOptions): Promise<ReceiptPage> {
    return listReceipts(this, organizationId, page, opts);
  }

  /** See {@link resumeErasures}. */
  resumeErasures(opts?: Pick<EraseOptions, 'signal' | 'deadlineAt' | 'budgetMs'>): Promise<ErasureReceipt[]> {
    return resumeErasures(this, opts);
  }

  /** See {@link retainConversation}. `pk`: the conversation key (`conversationKey` in ids.ts). */
  retainConversation(pk: string, opts?: RetentionOptions): Promise<ConversationRetention> {
    return retainConversation(this, pk, opts);
  }
}

/** The signal and deadline of a pass, for the erasures it runs. */
function boundsOf(opts: RetentionOptions): { signal?: AbortSignal; deadlineAt?: number } {
  return { ...(opts.signal && { signal: opts.signal }), ...(opts.deadlineAt !== undefined && { deadlineAt: opts.deadlineAt }) };
}
