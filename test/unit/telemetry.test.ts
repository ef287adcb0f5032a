/**
 * Custom metrics (telemetry.ts) and the Lambda context in log lines (http.ts): what each request emits, that
 * Powertools Metrics turns it into CloudWatch EMF, and that telemetry never changes an answer.
 */
import { Logger } from '@aws-lambda-powertools/logger';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { SNAPSHOT_PATH } from '../../functions/lib/contract.js';
import { httpHandler, json, type HttpEvent } from '../../functions/lib/http.js';
import { StoreError } from '../../functions/lib/store/errors.js';
import { METRIC, METRICS_NAMESPACE, powertoolsTelemetry, requestMetrics, type MetricPoint, type Telemetry } from '../../functions/lib/telemetry.js';
import { HttpError } from '../../functions/lib/errors.js';
import { ERRORS } from '../../functions/lib/contract.js';

const HYDRATE = `GET ${SNAPSHOT_PATH}`;
const WRITE = `POST ${SNAPSHOT_PATH}`;
const outcome = (route: string, status: number, code?: string, integrityFailure = false) => ({ route, status, code, bytesIn: 10, bytesOut: 20, integrityFailure });
const named = (points: MetricPoint[], name: string) => points.filter((p) => p.name === name);

function recorder(): Telemetry & { points: MetricPoint[] } {
  const points: MetricPoint[] = [];
  return { points, emit: (p) => void points.push(...p) };
}

const event = (body?: string): HttpEvent => ({ headers: {}, body, requestContext: { requestId: 'r-1' } }) as unknown as HttpEvent;

afterEach(() => vi.restoreAllMocks());

describe('requestMetrics', () => {
  it('counts hydrate answers by status', () => {
    for (const status of [200, 226, 304, 307, 404, 503]) {
      expect(named(requestMetrics(outcome(HYDRATE, status)), METRIC.hydrateResponses)).toEqual([
        { name: METRIC.hydrateResponses, unit: 'Count', value: 1, dimensions: { status: String(status) } },
      ]);
    }
  });

  it('counts writes by outcome: stored, duplicate, fenced, rejected, failed', () => {
    const cases: [number, string | undefined, string][] = [
      [200, undefined, 'stored'],
      [409, 'snapshot_exists', 'duplicate'],
      [409, 'reset_fenced', 'fenced'],
      [400, 'invalid_json', 'rejected'],
      [500, 'internal_error', 'failed'],
    ];
    for (const [status, code, expected] of cases) {
      expect(named(requestMetrics(outcome(WRITE, status, code)), METRIC.writes).map((p) => p.dimensions['outcome'])).toEqual([expected]);
    }
    expect(named(requestMetrics(outcome(HYDRATE, 200)), METRIC.writes)).toEqual([]);
  });

  it('reports bytes in and out, and an integrity failure only when there was one', () => {
    const points = requestMetrics(outcome('GET /admin/run', 500, 'internal_error', true));
    expect(named(points, METRIC.bytesIn)).toEqual([{ name: METRIC.bytesIn, unit: 'Bytes', value: 10, dimensions: {} }]);
    expect(named(points, METRIC.bytesOut)[0]?.value).toBe(20);
    expect(named(points, METRIC.integrityFailures)).toEqual([{ name: METRIC.integrityFailures, unit: 'Count', value: 1, dimensions: {} }]);
    expect(named(requestMetrics(outcome(HYDRATE, 500, 'internal_error', false)), METRIC.integrityFailures)).toEqual([]);
  });
});

describe('httpHandler emits them', () => {
  const logger = new Logger({ serviceName: 'test', logLevel: 'SILENT' });

  it('a stored object that does not match its record: 500, and one IntegrityFailures point', async () => {
    const telemetry = recorder();
    const handler = httpHandler(HYDRATE, logger, async () => {
      throw new StoreError('INTEGRITY', 'sha256 mismatch');
    }, { deadlineMs: 5_000, telemetry });
    expect((await handler(event())).statusCode).toBe(500);
    expect(named(telemetry.points, METRIC.integrityFailures)).toHaveLength(1);
    expect(named(telemetry.points, METRIC.hydrateResponses).map((p) => p.dimensions['status'])).toEqual(['500']);
  });

  it('a fenced write is counted as fenced, from the answer it got', async () => {
    const telemetry = recorder();
    const handler = httpHandler(WRITE, logger, async () => {
      throw new HttpError(ERRORS.resetFenced);
    }, { deadlineMs: 5_000, telemetry });
    expect((await handler(event('{"x":1}'))).statusCode).toBe(409);
    expect(named(telemetry.points, METRIC.writes).map((p) => p.dimensions['outcome'])).toEqual(['fenced']);
    expect(named(telemetry.points, METRIC.bytesIn)[0]?.value).toBe(7);
  });

  it('a telemetry sink that throws never changes the answer', async () => {
    const handler = httpHandler(HYDRATE, logger, async () => json(200, { ok: true }), {
      deadlineMs: 5_000,
      telemetry: {
        emit() {
          throw new Error('metrics backend down');
        },
      },
    });
    expect((await handler(event())).statusCode).toBe(200);
  });

  it('puts the Lambda context (function name, request id, cold start) on the request log line', async () => {
    const lines: string[] = [];
    vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
      lines.push(String(chunk));
      return true;
    });
    vi.spyOn(console, 'info').mockImplementation((...args: unknown[]) => void lines.push(args.map(String).join(' ')));
    vi.spyOn(console, 'log').mockImplementation((...args: unknown[]) => void lines.push(args.map(String).join(' ')));
    const logging = new Logger({ serviceName: 'ctx-test', logLevel: 'INFO' });
    const handler = httpHandler(HYDRATE, logging, async () => json(200, {}), { deadlineMs: 5_000 });
    await handler(event(), {
      functionName: 'GetSnapshotFn',
      functionVersion: '$LATEST',
      invokedFunctionArn: 'arn:aws:lambda:us-east-1:123456789012:function:GetSnapshotFn',
      memoryLimitInMB: '512',
      awsRequestId: 'aws-req-42',
      getRemainingTimeInMillis: () => 10_000,
    });
    const entry = lines.map((l) => l.trim()).filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l['message'] === 'request');
    expect(entry).toMatchObject({ function_name: 'GetSnapshotFn', function_request_id: 'aws-req-42', status: 200 });
    expect(entry).toHaveProperty('cold_start');
  });
});

describe('powertoolsTelemetry', () => {
  it('writes one CloudWatch EMF document per point, in the TranscriptStore namespace, with service and its own dimensions', async () => {
    const out: string[] = [];
    vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
      out.push(String(chunk));
      return true;
    });
    vi.spyOn(console, 'log').mockImplementation((...args: unknown[]) => void out.push(args.map(String).join(' ')));
    const telemetry = await powertoolsTelemetry('transcript-store');
    telemetry.emit(requestMetrics(outcome(HYDRATE, 304)));
    vi.restoreAllMocks();
    const docs = out.map((l) => l.trim()).filter((l) => l.startsWith('{"_aws"')).map((l) => JSON.parse(l) as Record<string, unknown> & { _aws: { CloudWatchMetrics: { Namespace: string; Dimensions: string[][]; Metrics: { Name: string; Unit: string }[] }[] } });
    expect(docs).toHaveLength(3);
    const hydrate = docs.find((d) => d['HydrateResponses'] === 1)!;
    expect(hydrate._aws.CloudWatchMetrics[0]).toMatchObject({ Namespace: METRICS_NAMESPACE, Dimensions: [['service', 'status']], Metrics: [{ Name: 'HydrateResponses', Unit: 'Count' }] });
    expect(hydrate).toMatchObject({ service: 'transcript-store', status: '304' });
    const bytesOut = docs.find((d) => d['BytesOut'] === 20)!;
    expect(bytesOut._aws.CloudWatchMetrics[0]!.Metrics).toEqual([{ Name: 'BytesOut', Unit: 'Bytes' }]);
  });
});
