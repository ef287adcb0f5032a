import { DeleteObjectsCommand, paginateListObjectsV2, type _Object } from '@aws-sdk/client-s3';
import type { StoreContext } from './context.js';

/** S3 accepts at most this many keys per DeleteObjects call. */
export const DELETE_OBJECTS_MAX_KEYS = 1000;

/**
 * Deletes `keys` with DeleteObjects, up to 1,000 per call. Throws when S3 reports a per-key error,
 * so the caller's retry repeats the (idempotent) deletion. Deleting a missing key is not an error.
 */
export async function deleteObjects(ctx: StoreContext, keys: readonly string[], abortSignal?: AbortSignal): Promise<void> {
  for (let i = 0; i < keys.length; i += DELETE_OBJECTS_MAX_KEYS) {
    const batch = keys.slice(i, i + DELETE_OBJECTS_MAX_KEYS);
    const res = await ctx.s3.send(
      new DeleteObjectsCommand({ Bucket: ctx.bucket, Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true } }),
      { abortSignal },
    );
    const failed = res.Errors ?? [];
    if (failed.length > 0) {
      throw new Error(`DeleteObjects failed for ${failed.length} key(s): ${failed[0]?.Code ?? 'unknown'}`);
    }
  }
}

/** Every object under `prefix`, one ListObjectsV2 page (≤ 1,000 objects) at a time, via the SDK paginator. */
export async function* listObjectPages(
  ctx: StoreContext,
  input: { prefix: string; startAfter?: string | undefined; pageSize?: number | undefined },
  abortSignal?: AbortSignal,
): AsyncGenerator<_Object[]> {
  const pages = paginateListObjectsV2(
    { client: ctx.s3, ...(input.pageSize !== undefined && { pageSize: input.pageSize }) },
    { Bucket: ctx.bucket, Prefix: input.prefix, ...(input.startAfter !== undefined && { StartAfter: input.startAfter }) },
    { abortSignal },
  );
  for await (const page of pages) yield page.Contents ?? [];
}

