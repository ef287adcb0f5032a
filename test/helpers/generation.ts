import { HEADER_GENERATION } from '../../functions/lib/contract.js';
import type { LocalService } from '../../local/service.js';
import { FaultPlan, faultyStore } from './faults.js';
import type { Api, Scope } from './service.js';

/** The store-level scope of a test scope. */
export const ids = (s: Scope) => ({ organizationId: s.org, agentId: s.agent, conversationId: s.conv });

/** Now, in whole seconds (a token's `iat`). */
export const nowSeconds = () => Math.floor(Date.now() / 1000);

/** A clock two hours ahead: past the reconciler's grace period. */
export const twoHoursLater = () => Date.now() + 2 * 3600_000;

/** Hydrates as a generation-aware worker: the reset generation every answer carries. */
export async function generationOf(api: Api, scope: Scope): Promise<number> {
  const res = await api.get(await api.token(scope));
  await res.body?.cancel();
  return Number(res.headers.get(HEADER_GENERATION));
}

/** A write that echoes `generation` (any header value), with a token issued at `issuedAt`. */
export async function writeWithGeneration(api: Api, scope: Scope, runId: number, body: string, generation: number | string, issuedAt = nowSeconds()): Promise<Response> {
  const token = await api.token(scope, { runId, issuedAt });
  return api.post(token, { terminalStatus: 'completed', snapshotJsonl: body, runId }, { [HEADER_GENERATION]: String(generation) });
}

/** Runs reconciler passes (clock two hours ahead) until one completes a full sweep from the start of the bucket. */
export async function reconcileFully(svc: LocalService): Promise<void> {
  const store = faultyStore(svc, new FaultPlan(), { now: twoHoursLater });
  let sawStart = false;
  for (let i = 0; i < 100; i++) {
    const r = await store.reconcile({ graceSeconds: 3600, deadlineAt: Date.now() + 60_000 });
    if (r.complete && sawStart) return;
    if (r.complete) sawStart = true;
  }
  throw new Error('reconcile did not complete');
}
