/**
 * transcript-store worker client — a drop-in replacement for the worker module
 * `transcript-snapshot` (`hydrateFromSnapshot`, `writeSnapshot`, `clearSnapshots`): same names,
 * same options, plus retries with backoff, atomic file replacement and digest verification.
 * Zero runtime dependencies; Node ≥ 20 (global fetch).
 */
export { clearSnapshots, hydrateFromSnapshot, hydrateSnapshot, writeSnapshot } from './snapshot.js';
export { isTranscriptStoreError, TranscriptStoreError, type TranscriptStoreErrorCode } from './errors.js';
export { SNAPSHOT_PATH } from './http.js';
export type {
  ClearSnapshotsOptions,
  ClearSnapshotsResult,
  ClientEvent,
  ClientLogger,
  ConnectionOptions,
  FailedResult,
  FailureReason,
  HydrateOptions,
  HydrateResult,
  Operation,
  TerminalStatus,
  TransferProgress,
  TransportOptions,
  WriteSnapshotOptions,
  WriteSnapshotResult,
} from './types.js';
