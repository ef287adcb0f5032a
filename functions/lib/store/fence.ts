import type { AttributeValue } from '@aws-sdk/client-dynamodb';
import type { Fence, RunRecord } from './schema.js';

/**
 * The reset fence (invariant I4), defined once. A run is AFTER the last clear iff every term below
 * holds; from this one table come
 *   - `isAfterFence`        the in-code predicate,
 *   - `publishCondition`    the DynamoDB condition on HEAD that lets a run publish (same test, written
 *                           from HEAD's side: `clearedAtMs < :createdAtMs` ⟺ `createdAtMs > clearedAtMs`),
 *   - `beforeFenceCondition` its exact negation on a RUN item, which clear uses to delete runs.
 * Because all three derive from the same terms, a run that clear deletes can never be published and a
 * run that can be published is never deleted (the same-millisecond case included).
 *
 * Terms: the run was claimed strictly after the clear (service clock, ms), and its token was issued
 * in or after the clear's second (`iat` has 1 s resolution: a token from the same second counts as
 * after — dropping a legitimate new run is worse than a sub-second window).
 */
type Op = '>' | '>=';

interface Term {
  /** Attribute on the RUN item (and field of RunRecord). */
  readonly run: 'createdAtMs' | 'iat';
  readonly op: Op;
  /** Attribute on the HEAD item holding the fence value. */
  readonly head: 'clearedAtMs' | 'clearedAtSec';
  /** Field of Fence. */
  readonly fence: keyof Fence;
}

const TERMS: readonly Term[] = [
  { run: 'createdAtMs', op: '>', head: 'clearedAtMs', fence: 'ms' },
  { run: 'iat', op: '>=', head: 'clearedAtSec', fence: 'sec' },
];

const FLIP: Record<Op, string> = { '>': '<', '>=': '<=' }; // a > b ⟺ b < a
const NEGATE: Record<Op, string> = { '>': '<=', '>=': '<' }; // ¬(a > b) ⟺ a <= b

function compare(a: number, op: Op, b: number): boolean {
  return op === '>' ? a > b : a >= b;
}

/** True when `run` was started and claimed after the clear that set `fence`. */
export function isAfterFence(run: Pick<RunRecord, 'createdAtMs' | 'iat'>, fence: Fence | undefined): boolean {
  return fence === undefined || TERMS.every((t) => compare(run[t.run], t.op, fence[t.fence]));
}

/**
 * Condition on the HEAD item under which `run` may publish: no clear yet, or the run is after it.
 * Placeholders `:fence_<attr>` carry the run's values.
 */
export function publishCondition(run: Pick<RunRecord, 'createdAtMs' | 'iat'>): {
  expression: string;
  values: Record<string, AttributeValue>;
} {
  const terms = TERMS.map((t) => `${t.head} ${FLIP[t.op]} :fence_${t.run}`);
  return {
    expression: `(attribute_not_exists(${TERMS[0]!.head}) OR (${terms.join(' AND ')}))`,
    values: Object.fromEntries(TERMS.map((t) => [`:fence_${t.run}`, { N: String(run[t.run]) }])),
  };
}

/**
 * Condition on a RUN item that holds exactly when the run is NOT after `fence` (the negation of
 * `isAfterFence`). Placeholders `:fence_<field>` carry the fence's values.
 */
export function beforeFenceCondition(fence: Fence): { expression: string; values: Record<string, AttributeValue> } {
  return {
    expression: `(${TERMS.map((t) => `${t.run} ${NEGATE[t.op]} :fence_${t.fence}`).join(' OR ')})`,
    values: Object.fromEntries(TERMS.map((t) => [`:fence_${t.fence}`, { N: String(fence[t.fence]) }])),
  };
}

/** The fence a clear at `ms` (service clock, epoch ms) sets. */
export function fenceAt(ms: number): Fence {
  return { ms, sec: Math.floor(ms / 1000) };
}
