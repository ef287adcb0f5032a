import { SNAPSHOT_PATH } from './contract.js';

/**
 * Custom metrics (CloudWatch Embedded Metric Format through Powertools Metrics in Lambda; nothing locally).
 * Namespace {@link METRICS_NAMESPACE}, dimension `service` on every metric, plus the per-metric dimensions
 * below (a CloudWatch metric is named by its whole dimension set: the stack's alarm and widgets use exactly these). The stack alarms on {@link METRIC.integrityFailures} and graphs the rest (infra/observability.ts).
 */
export const METRICS_NAMESPACE = 'TranscriptStore';

export const METRIC = {
  /** Hydrate answers (GET /worker/transcript/snapshot), dimension `status`: 200, 226, 304, 307, 404 … */
  hydrateResponses: 'HydrateResponses',
  /** Request body bytes received (Bytes). */
  bytesIn: 'BytesIn',
  /** Response body bytes sent (Bytes; a 307 sends none, S3 does). */
  bytesOut: 'BytesOut',
  /** Writes (POST /worker/transcript/snapshot), dimension `outcome`: stored, duplicate, fenced, rejected. */
  writes: 'Writes',
  /** A stored object that does not match its record (loss or corruption: answered 500); the stack alarms on it. */
  integrityFailures: 'IntegrityFailures',
  /** Objects the orphan reconciler deleted. */
  reconcilerDeletions: 'ReconcilerDeletions',
  /** Objects the retention pass deleted (expired conversations included). */
  retentionDeletions: 'RetentionDeletions',
} as const;

export type MetricName = (typeof METRIC)[keyof typeof METRIC];

/** One data point: `value` in `unit`, with its own dimensions (besides `service`). */
export interface MetricPoint {
  readonly name: MetricName;
  readonly unit: 'Count' | 'Bytes';
  readonly value: number;
  readonly dimensions: Readonly<Record<string, string>>;
}

/** Where metric points go. Production: {@link powertoolsTelemetry}; tests record them; locally none. */
export interface Telemetry {
  emit(points: readonly MetricPoint[]): void;
}

/** What httpHandler knows about a finished request (no ids, no tokens). */
export interface RequestOutcome {
  /** `METHOD path`, as the route is registered. */
  readonly route: string;
  readonly status: number;
  /** The error code answered (`snapshot_exists`, `reset_fenced` …), when the answer is an error. */
  readonly code: string | undefined;
  readonly bytesIn: number;
  readonly bytesOut: number;
  /** True when the request failed on a stored object that does not match its record (StoreError INTEGRITY). */
  readonly integrityFailure: boolean;
}

const HYDRATE = `GET ${SNAPSHOT_PATH}`;
const WRITE = `POST ${SNAPSHOT_PATH}`;

/** The outcome of a write, from its answer: 200 stored, 409 snapshot_exists duplicate, 409 reset_fenced fenced. */
function writeOutcome(o: RequestOutcome): string {
  if (o.status === 200) return 'stored';
  if (o.code === 'snapshot_exists') return 'duplicate';
  if (o.code === 'reset_fenced') return 'fenced';
  return o.status >= 500 ? 'failed' : 'rejected';
}

/**
 * The metric points of one request: bytes in and out, hydrate answers by status, writes by
 * outcome, integrity failures. Pure (tested directly).
 */
export function requestMetrics(o: RequestOutcome): MetricPoint[] {
  const points: MetricPoint[] = [
    { name: METRIC.bytesIn, unit: 'Bytes', value: o.bytesIn, dimensions: {} },
    { name: METRIC.bytesOut, unit: 'Bytes', value: o.bytesOut, dimensions: {} },
  ];
  if (o.route === HYDRATE) points.push({ name: METRIC.hydrateResponses, unit: 'Count', value: 1, dimensions: { status: String(o.status) } });
  if (o.route === WRITE) points.push({ name: METRIC.writes, unit: 'Count', value: 1, dimensions: { outcome: writeOutcome(o) } });
  if (o.integrityFailure) {
    points.push({ name: METRIC.integrityFailures, unit: 'Count', value: 1, dimensions: {} });
  }
  return points;
}

/**
 * Telemetry through Powertools Metrics: one EMF document per point (`singleMetric`, so each point keeps its
 * own dimensions), namespace {@link METRICS_NAMESPACE}, default dimension `service`. Metrics is loaded
 * lazily so code paths without telemetry do not pay for it.
 */
export async function powertoolsTelemetry(serviceName: string): Promise<Telemetry> {
  const { Metrics, MetricUnit } = await import('@aws-lambda-powertools/metrics');
  const metrics = new Metrics({ namespace: METRICS_NAMESPACE, serviceName });
  return {
    emit(points) {
      for (const p of points) {
        const single = metrics.singleMetric();
        for (const [k, v] of Object.entries(p.dimensions)) single.addDimension(k, v);
        single.addMetric(p.name, p.unit === 'Bytes' ? MetricUnit.Bytes : MetricUnit.Count, p.value);
      }
    },
  };
}
