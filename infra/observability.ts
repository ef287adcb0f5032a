import { Duration } from 'aws-cdk-lib';
import type * as apigwv2 from 'aws-cdk-lib/aws-apigatewayv2';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import { SnsAction } from 'aws-cdk-lib/aws-cloudwatch-actions';
import type * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import type * as sns from 'aws-cdk-lib/aws-sns';
import { Construct } from 'constructs';
import type { RouteSpec } from './routes.js';

/**
 * The service's own metrics (Powertools Metrics, EMF, in the handlers): one CloudWatch namespace, every
 * metric with the `service` dimension (`POWERTOOLS_SERVICE_NAME`, the `serviceName` setting), some with one
 * more. The functions get the namespace as `POWERTOOLS_METRICS_NAMESPACE`.
 */
export const METRICS_NAMESPACE = 'TranscriptStore';

/** The period of every alarm and graph. */
const PERIOD = Duration.minutes(5);

/** Metric names, and the extra dimension (name and values) each carries besides `service`. */
export const SERVICE_METRICS = {
  /** Stored bytes that did not match their record (sha256, CRC-32, length): data loss or corruption. Count. */
  IntegrityFailures: undefined,
  /** GET answers by status (`200` whole, `226` delta, `304` unchanged, `307` redirect, `404` nothing stored). Count. */
  HydrateResponses: { dimension: 'status', values: ['200', '226', '304', '307', '404'] },
  /** Snapshot bytes received by writes (bytes). */
  BytesIn: undefined,
  /** Snapshot bytes answered inline by reads (bytes). */
  BytesOut: undefined,
  /** Writes by outcome (`stored`, `duplicate` of a stored run, `fenced` by a reset). Count. */
  Writes: { dimension: 'outcome', values: ['stored', 'duplicate', 'fenced'] },
  /** What the orphan reconciler deleted (unreferenced objects, materialized copies). Count. */
  ReconcilerDeletions: undefined,
  /** What the retention pass deleted (runs, chains and their objects, expired conversations). Count. */
  RetentionDeletions: undefined,
} as const satisfies Record<string, { readonly dimension: string; readonly values: readonly string[] } | undefined>;

export type ServiceMetricName = keyof typeof SERVICE_METRICS;

/** One of the service's metrics for `serviceName` (and `dimensions`): Sum over 5 minutes unless `props` say otherwise. */
export function serviceMetric(
  serviceName: string,
  name: ServiceMetricName,
  dimensions: Readonly<Record<string, string>> = {},
  props: cloudwatch.MetricOptions = {},
): cloudwatch.Metric {
  return new cloudwatch.Metric({
    namespace: METRICS_NAMESPACE,
    metricName: name,
    statistic: cloudwatch.Stats.SUM,
    period: PERIOD,
    ...props,
    dimensionsMap: { service: serviceName, ...dimensions, ...props.dimensionsMap },
  });
}

export interface ObservabilityProps {
  readonly api: apigwv2.HttpApi;
  readonly table: dynamodb.ITable;
  readonly functions: readonly { readonly route: RouteSpec; readonly fn: lambda.IFunction }[];
  /** Alarm and OK notifications go here when given. */
  readonly alarmTopic: sns.ITopic | undefined;
  /** The `service` dimension of the service's own metrics. */
  readonly serviceName: string;
  readonly api5xxRatePercent: number;
  readonly apiLatencyP99Ms: number;
}

/**
 * Alarms (API 5xx rate and p99 latency; per function errors, throttles and p99 duration; DynamoDB
 * throttles; any integrity failure) and one dashboard, which also shows the service's own metrics.
 * Missing data never alarms: an idle service is a healthy one.
 */
export class Observability extends Construct {
  readonly alarms: cloudwatch.Alarm[] = [];
  readonly dashboard: cloudwatch.Dashboard;
  /** Fires on any `IntegrityFailures` in a 5-minute period. */
  readonly integrityAlarm: cloudwatch.Alarm;
  private readonly alarmTopic: sns.ITopic | undefined;

  constructor(scope: Construct, id: string, props: ObservabilityProps) {
    super(scope, id);
    this.alarmTopic = props.alarmTopic;
    const { api, table } = props;

    const requests = api.metricCount({ statistic: 'Sum', period: PERIOD, label: 'Requests' });
    const serverErrors = api.metricServerError({ statistic: 'Sum', period: PERIOD, label: '5xx' });
    const clientErrors = api.metricClientError({ statistic: 'Sum', period: PERIOD, label: '4xx' });
    const errorRate = new cloudwatch.MathExpression({
      expression: 'IF(requests > 0, 100 * errors / requests, 0)',
      usingMetrics: { requests, errors: serverErrors },
      period: PERIOD,
      label: '5xx rate (%)',
    });
    const apiLatencyP99 = api.metricLatency({ statistic: 'p99', period: PERIOD, label: 'Latency p99' });
    const apiLatencyP50 = api.metricLatency({ statistic: 'p50', period: PERIOD, label: 'Latency p50' });

    this.alarm('Api5xxRate', errorRate, {
      threshold: props.api5xxRatePercent,
      evaluationPeriods: 2,
      datapointsToAlarm: 2,
      alarmDescription: `More than ${props.api5xxRatePercent}% of API requests answered 5xx in two consecutive 5-minute periods.`,
    });
    this.alarm('ApiLatencyP99', apiLatencyP99, {
      threshold: props.apiLatencyP99Ms,
      evaluationPeriods: 3,
      datapointsToAlarm: 3,
      alarmDescription: `API p99 latency above ${props.apiLatencyP99Ms} ms for 15 minutes.`,
    });

    const fnWidgets: cloudwatch.IWidget[] = [];
    for (const { route, fn } of props.functions) {
      const errors = fn.metricErrors({ statistic: 'Sum', period: PERIOD });
      const throttles = fn.metricThrottles({ statistic: 'Sum', period: PERIOD });
      const durationP99 = fn.metricDuration({ statistic: 'p99', period: PERIOD });
      const invocations = fn.metricInvocations({ statistic: 'Sum', period: PERIOD });
      // Handlers answer every expected failure themselves; a Lambda error is a crash or a timeout.
      this.alarm(`${route.id}Errors`, errors, {
        threshold: 1,
        count: true,
        evaluationPeriods: 1,
        alarmDescription: `${route.method} ${route.path}: the function crashed or timed out.`,
      });
      this.alarm(`${route.id}Throttles`, throttles, {
        threshold: 1,
        count: true,
        evaluationPeriods: 1,
        alarmDescription: `${route.method} ${route.path}: invocations were throttled (account or reserved concurrency exhausted).`,
      });
      const nearTimeoutMs = Math.round(route.timeoutSeconds * 1000 * 0.8);
      this.alarm(`${route.id}DurationP99`, durationP99, {
        threshold: nearTimeoutMs,
        evaluationPeriods: 3,
        datapointsToAlarm: 3,
        alarmDescription: `${route.method} ${route.path}: p99 duration above 80% of the ${route.timeoutSeconds} s timeout for 15 minutes.`,
      });
      fnWidgets.push(
        new cloudwatch.GraphWidget({
          title: `${route.method} ${route.path} (${route.id})`,
          left: [invocations.with({ label: 'Invocations' }), errors.with({ label: 'Errors' }), throttles.with({ label: 'Throttles' })],
          right: [durationP99.with({ label: 'Duration p99' })],
          width: 8,
        }),
      );
    }

    const readThrottles = table.metric('ReadThrottleEvents', { statistic: 'Sum', period: PERIOD });
    const writeThrottles = table.metric('WriteThrottleEvents', { statistic: 'Sum', period: PERIOD });
    const tableThrottles = new cloudwatch.MathExpression({
      expression: 'FILL(reads, 0) + FILL(writes, 0)',
      usingMetrics: { reads: readThrottles, writes: writeThrottles },
      period: PERIOD,
      label: 'Throttle events',
    });
    this.alarm('DynamoDbThrottles', tableThrottles, {
      threshold: 1,
      count: true,
      evaluationPeriods: 1,
      alarmDescription: 'DynamoDB throttled reads or writes on the snapshot table.',
    });

    // The service's own metrics (EMF, from the handlers).
    const metric = (name: ServiceMetricName, dimensions: Record<string, string> = {}, label?: string) =>
      serviceMetric(props.serviceName, name, dimensions, label === undefined ? {} : { label });
    const byDimension = (name: 'HydrateResponses' | 'Writes') => {
      const { dimension, values } = SERVICE_METRICS[name];
      return values.map((v) => metric(name, { [dimension]: v }, v));
    };
    const integrityFailures = metric('IntegrityFailures', {}, 'Integrity failures');
    // Corrupt or missing bytes are never expected: one is worth waking someone for (the log line with
    // code INTEGRITY names the conversation and the run).
    this.integrityAlarm = this.alarm('IntegrityFailures', metric('IntegrityFailures'), {
      threshold: 1,
      count: true,
      evaluationPeriods: 1,
      alarmDescription: `${props.serviceName}: stored bytes did not match their record (sha256, CRC-32 or length) — possible data loss or corruption; see the handler log lines with code INTEGRITY.`,
    });

    this.dashboard = new cloudwatch.Dashboard(this, 'Dashboard', {
      defaultInterval: Duration.hours(3),
      widgets: [
        [
          new cloudwatch.GraphWidget({ title: 'API requests', left: [requests, clientErrors, serverErrors], width: 8 }),
          new cloudwatch.GraphWidget({ title: 'API 5xx rate (%)', left: [errorRate], width: 8 }),
          new cloudwatch.GraphWidget({ title: 'API latency (ms)', left: [apiLatencyP50, apiLatencyP99], width: 8 }),
        ],
        [
          new cloudwatch.GraphWidget({ title: 'Hydrate responses (GET) by status', left: byDimension('HydrateResponses'), stacked: true, width: 8 }),
          new cloudwatch.GraphWidget({ title: 'Writes by outcome', left: byDimension('Writes'), stacked: true, width: 8 }),
          new cloudwatch.GraphWidget({ title: 'Snapshot bytes in / out', left: [metric('BytesIn', {}, 'Bytes in'), metric('BytesOut', {}, 'Bytes out')], width: 8 }),
        ],
        [
          new cloudwatch.GraphWidget({ title: 'Integrity failures', left: [integrityFailures], leftAnnotations: [{ value: 1, label: 'alarm', color: '#d62728' }], width: 12 }),
          new cloudwatch.GraphWidget({
            title: 'Deletions (reconciler, retention)',
            left: [metric('ReconcilerDeletions', {}, 'Reconciler deletions'), metric('RetentionDeletions', {}, 'Retention deletions')],
            width: 12,
          }),
        ],
        fnWidgets,
        [
          new cloudwatch.GraphWidget({
            title: 'DynamoDB consumed capacity',
            left: [
              table.metricConsumedReadCapacityUnits({ statistic: 'Sum', period: PERIOD, label: 'RCU' }),
              table.metricConsumedWriteCapacityUnits({ statistic: 'Sum', period: PERIOD, label: 'WCU' }),
            ],
            width: 12,
          }),
          new cloudwatch.GraphWidget({ title: 'DynamoDB throttles', left: [tableThrottles], width: 12 }),
        ],
        [new cloudwatch.AlarmStatusWidget({ title: 'Alarms', alarms: this.alarms, width: 24 })],
      ],
    });
  }

  /** Counts alarm at `>= threshold`; rates and latencies at `> threshold`. */
  private alarm(
    id: string,
    metric: cloudwatch.IMetric,
    options: Omit<cloudwatch.CreateAlarmOptions, 'comparisonOperator' | 'treatMissingData'> & { readonly count?: boolean },
  ): cloudwatch.Alarm {
    const { count, ...alarmOptions } = options;
    const alarm = new cloudwatch.Alarm(this, id, {
      ...alarmOptions,
      metric,
      comparisonOperator: count
        ? cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD
        : cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    if (this.alarmTopic) {
      const action = new SnsAction(this.alarmTopic);
      alarm.addAlarmAction(action);
      alarm.addOkAction(action);
    }
    this.alarms.push(alarm);
    return alarm;
  }
}
