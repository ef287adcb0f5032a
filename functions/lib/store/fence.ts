import type { AttributeValue } from '@aws-sdk/client-dynamodb';

/**
 * The reset fence (invariant I4), defined once: ORDER, not clocks.
 *
 * Every conversation has a reset GENERATION, a counter on its HEAD item (0 until the first clear).
 * A clear increments it (one conditional write, see clear.ts); every run is tagged with the generation
 * it belongs to when it is claimed; a run may publish only while HEAD is still at its generation. From
 * this one rule come
 *   - `isCurrent`               the in-code predicate,
 *   - `currentGenerationCondition` the DynamoDB condition on HEAD under which a run may publish,
 *   - `staleGenerationCondition`   its exact negation on a RUN item, which clear uses to delete runs.
 * Generations only grow, so a run that clear deletes can never publish, and a run that can publish is
 * never deleted — whatever any clock says.
 *
 * Where a run's generation comes from:
 *   - a worker that hydrated first echoes the generation the hydrate answered (`x-snapshot-generation`);
 *   - a writer that sends none (an existing worker) gets one by `legacyGeneration` below, the only place
 *     a clock still matters, with its window stated in seconds.
 */

/** The generation of a HEAD item that has none (never cleared). */
export const INITIAL_GENERATION = 0;

/** True when a run of generation `run` may be served in a conversation whose HEAD is at `head`. */
export function isCurrent(run: number, head: number): boolean {
  return run === head;
}

/** Condition on HEAD: it is still at `generation` (a HEAD without the attribute is at 0). */
export function currentGenerationCondition(generation: number): { expression: string; values: Record<string, AttributeValue> } {
  const values = { ':fence_generation': { N: String(generation) } };
  return generation === INITIAL_GENERATION
    ? { expression: '(attribute_not_exists(generation) OR generation = :fence_generation)', values }
    : { expression: '(generation = :fence_generation)', values };
}

/**
 * Condition on a RUN item: it belongs to a generation before `headGeneration`, i.e. it can never be
 * current again — the exact negation of `isCurrent` for every head generation ≥ the run's.
 */
export function staleGenerationCondition(headGeneration: number): { expression: string; values: Record<string, AttributeValue> } {
  return {
    expression: '(attribute_not_exists(generation) OR generation < :fence_generation)',
    values: { ':fence_generation': { N: String(headGeneration) } },
  };
}

/** The last clear as HEAD records it (what a writer that sends no generation is judged against). */
export interface ResetState {
  /** HEAD's generation (0: never cleared). */
  readonly generation: number;
  /** Service clock of the last clear (epoch ms), when there was one. */
  readonly clearedAtMs: number | undefined;
}

/**
 * The generation of a run whose writer sent none, or `undefined` when it must be fenced.
 *
 * Evidence: the token's `iat` (issuer clock, whole seconds), bounded above by the service's own clock
 * (`nowMs`: a run cannot have started after its own request reached us). In whole seconds,
 *
 *     min(iat, ⌊nowMs/1000⌋) ≥ ⌊clearedAtMs/1000⌋ + windowSeconds   → HEAD's generation, else fenced.
 *
 * With the default window of 0 s a token issued in the same second as the clear counts as after it
 * (dropping a legitimate new run is worse than a sub-second window). The window buys protection
 * against fast issuers: a run that started before a clear can publish only if its issuer's clock is
 * more than `windowSeconds` (+ < 1 s) ahead of the instance that cleared; the price is that a genuine
 * run whose token is issued less than `windowSeconds` after the clear is fenced (409 reset_fenced).
 * Workers that echo a generation have neither window.
 */
export function legacyGeneration(iatSeconds: number, nowMs: number, reset: ResetState, windowSeconds: number): number | undefined {
  if (reset.clearedAtMs === undefined) return reset.generation;
  const startedBy = Math.min(iatSeconds, Math.floor(nowMs / 1000));
  return startedBy >= Math.floor(reset.clearedAtMs / 1000) + windowSeconds ? reset.generation : undefined;
}
