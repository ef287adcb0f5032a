/**
 * The one error the store throws for conditions it recognises, with a stable machine `code` in the
 * style of jose's errors: callers branch on `err.code`, never on messages, SDK error names or zlib codes.
 * Anything else a store call throws is an SDK or network error (see `isTransientStorageError` in http).
 */
export type StoreErrorCode =
  /** A stored object does not match the digest or size its record announces (corruption or loss). */
  | 'INTEGRITY'
  /** An upload decodes to more bytes than the configured maximum. */
  | 'UPLOAD_TOO_LARGE'
  /** An upload declared gzip is not valid gzip. */
  | 'UPLOAD_NOT_GZIP'
  /** The record moved under every attempt to read it (resets and writes racing): transient, retry. */
  | 'CONTENDED'
  /** A paging cursor that this store did not hand out (malformed, or of another listing). */
  | 'INVALID_CURSOR';

export class StoreError extends Error {
  override readonly name = 'StoreError';

  /**
   * @param code stable machine code (see {@link StoreErrorCode})
   * @param message human-readable detail for logs; never contains tokens or object bytes
   */
  constructor(
    readonly code: StoreErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** True when `err` is a StoreError with the given code. */
export function isStoreError(err: unknown, code?: StoreErrorCode): err is StoreError {
  return err instanceof StoreError && (code === undefined || err.code === code);
}
