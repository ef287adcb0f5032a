import { App, Stack, Validations, type CfnElement, type CfnResource } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cw_actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as sns from 'aws-cdk-lib/aws-sns';
import { AwsSolutionsChecks } from 'cdk-nag';
import type { IConstruct } from 'constructs';
import { describe, expect, it } from 'vitest';
import { TranscriptStore } from '../../infra/construct.js';
import { METRICS_NAMESPACE, SERVICE_METRICS } from '../../infra/observability.js';
import { CONSOLE_ROUTE, PUBLIC_ROUTES, RECONCILER, RETENTION, ROUTES } from '../../infra/routes.js';

/**
 * The construct as a platform team uses it: inside a stack of their own app (no feature flags of ours,
 * a fixed account and region), next to their own resources, with their own alarm topic, their grants
 * and their alarms on its resources. Bundling is skipped (`npm run synth` bundles for real).
 */

type Json = Record<string, any>;

function nagViolations(scope: IConstruct): string[] {
  return new AwsSolutionsChecks().validateScope(scope).violations.flatMap((v) => v.violatingResources.map((r) => `${v.ruleName} at ${r.constructPath}`));
}

interface Platform {
  app: App;
  stack: Stack;
  store: TranscriptStore;
  topic: sns.Topic;
  analytics: iam.Role;
  template: Template;
}

/** A platform team's app: its own key, topic, bucket and role; the store; grants and an alarm of theirs. */
function platform(props: ConstructorParameters<typeof TranscriptStore>[2] = {}): Platform {
  const app = new App({ context: { 'aws:cdk:bundling-stacks': [] } });
  const stack = new Stack(app, 'Platform', { env: { account: '123456789012', region: 'eu-west-1' } });
  const key = new kms.Key(stack, 'OpsKey', { enableKeyRotation: true });
  const topic = new sns.Topic(stack, 'OpsTopic', { masterKey: key, enforceSSL: true });
  const exports = new s3.Bucket(stack, 'Exports', {
    blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
    enforceSSL: true,
    encryption: s3.BucketEncryption.S3_MANAGED,
    objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
  });
  Validations.of(exports).acknowledge({ id: 'AwsSolutions-S1', reason: 'A stand-in for a platform team bucket: whether it keeps server access logs is the platform team’s decision, not the construct’s.' });

  const store = new TranscriptStore(stack, 'Transcripts', { alarmTopic: topic, ...props });

  // Their grants on its resources…
  const analytics = new iam.Role(stack, 'Analytics', { assumedBy: new iam.AccountRootPrincipal() });
  store.bucket.grantRead(analytics, 'snapshots/*');
  store.table.grantReadData(analytics);
  // cdk-nag flags the wildcards CDK's grants use; acknowledging them is the platform team's call.
  const logicalId = (c: IConstruct) => stack.getLogicalId(c.node.defaultChild as CfnElement);
  for (const finding of [
    'Action::s3:GetObject*',
    'Action::s3:GetBucket*',
    'Action::s3:List*',
    `Resource::<${logicalId(store.bucket)}.Arn>/snapshots/*`,
    `Resource::<${logicalId(store.table)}.Arn>/index/*`,
  ]) {
    Validations.of(analytics).acknowledge({
      id: `AwsSolutions-IAM5[${finding}]`,
      reason: 'The platform team’s own read-only analytics role (grantRead on snapshots/*, grantReadData on the table and its indexes): the wildcards are CDK’s grants, accepted by the platform team.',
    });
  }
  // …and an alarm of their own on one of its metrics.
  new cloudwatch.Alarm(stack, 'FencedWrites', {
    metric: store.metric('Writes', { outcome: 'fenced' }),
    threshold: 100,
    evaluationPeriods: 1,
    treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
  }).addAlarmAction(new cw_actions.SnsAction(topic));
  return { app, stack, store, topic, analytics, template: Template.fromStack(stack) };
}

const cached = platform();

/** The resource of `type` whose logical id starts with `prefix` (there must be exactly one). */
function resource(template: Template, type: string, prefix: string): [string, Json] {
  const found = Object.entries(template.findResources(type)).filter(([id]) => id.startsWith(prefix));
  expect(found.map(([id]) => id), `${type} ${prefix}`).toHaveLength(1);
  return found[0] as [string, Json];
}

/** The dashboard body, with every CloudFormation token (region, API id, …) replaced by "TOKEN". */
function dashboardBody(template: Template): Json {
  const [, dashboard] = resource(template, 'AWS::CloudWatch::Dashboard', 'TranscriptsObservabilityDashboard');
  const parts = dashboard.Properties.DashboardBody['Fn::Join'][1] as unknown[];
  return JSON.parse(parts.map((p) => (typeof p === 'string' ? p : 'TOKEN')).join('')) as Json;
}

describe('TranscriptStore in a foreign stack', () => {
  it('synthesizes next to the platform’s own resources with cdk-nag AwsSolutions clean', () => {
    const { app, store, template } = cached;
    expect(nagViolations(store)).toEqual([]);
    expect(nagViolations(app)).toEqual([]);
    // Its resources and the platform's, side by side in one stack.
    template.resourceCountIs('AWS::Lambda::Function', ROUTES.length + 3 + PUBLIC_ROUTES.length);
    template.resourceCountIs('AWS::S3::Bucket', 3); // snapshots, its access logs, the platform's exports
    template.resourceCountIs('AWS::SNS::Topic', 1); // the platform's; the store creates none
    resource(template, 'AWS::S3::Bucket', 'Exports');
    resource(template, 'AWS::S3::Bucket', 'TranscriptsSnapshotBucket');
    resource(template, 'AWS::DynamoDB::Table', 'TranscriptsSnapshotTable');
  });

  it('synthesizes whatever feature flags the app has: it renders its resources with the flags it was tested with', () => {
    // The bare app above has none of cdk.json's flags: server access logs still go through a bucket
    // policy (a bucket-owner-enforced log bucket cannot take the LogDeliveryWrite ACL).
    const [logsId] = resource(cached.template, 'AWS::S3::Bucket', 'TranscriptsAccessLogsBucket');
    cached.template.hasResourceProperties('AWS::S3::BucketPolicy', {
      Bucket: { Ref: logsId },
      PolicyDocument: { Statement: Match.arrayWith([Match.objectLike({ Principal: { Service: 'logging.s3.amazonaws.com' }, Action: 's3:PutObject' })]) },
    });
    const [, logsBucket] = resource(cached.template, 'AWS::S3::Bucket', 'TranscriptsAccessLogsBucket');
    expect(logsBucket.Properties.AccessControl).toBeUndefined();
  });

  it('exposes bucket, table, API, functions, alarms and topic for the platform’s grants and alarms', () => {
    const { store, template, topic, analytics, stack } = cached;
    const bucketId = stack.getLogicalId(store.bucket.node.defaultChild as CfnResource);
    const tableId = stack.getLogicalId(store.table.node.defaultChild as CfnResource);
    const roleId = stack.getLogicalId(analytics.node.defaultChild as CfnResource);
    // Their grants reach the store's bucket (the prefix they asked for) and table.
    const policies = Object.values(template.findResources('AWS::IAM::Policy')).filter((p) => ((p as Json).Properties.Roles as Json[]).some((r) => r.Ref === roleId));
    const resources = JSON.stringify(policies.flatMap((p) => (p as Json).Properties.PolicyDocument.Statement.map((s: Json) => s.Resource)));
    expect(resources).toContain(JSON.stringify({ 'Fn::Join': ['', [{ 'Fn::GetAtt': [bucketId, 'Arn'] }, '/snapshots/*']] }));
    expect(resources).toContain(JSON.stringify({ 'Fn::GetAtt': [tableId, 'Arn'] }));

    // Every function by id, each the template's function of that id.
    const ids = [...ROUTES.map((r) => r.id), RECONCILER.id, RETENTION.id, CONSOLE_ROUTE.id, ...PUBLIC_ROUTES.map((r) => r.id)];
    expect([...store.functions.keys()].sort()).toEqual([...ids].sort());
    expect([...store.routeFunctions.keys()]).toEqual(ROUTES.map((r) => r.id));
    for (const id of ids) {
      const fn = store.functions.get(id)!;
      expect(stack.getLogicalId(fn.node.defaultChild as CfnResource)).toMatch(new RegExp(`^Transcripts${id}[0-9A-F]{8}$`));
    }
    expect(store.reconciler).toBe(store.functions.get(RECONCILER.id));

    // The URL is the API's endpoint; every alarm it made is in `alarms` and notifies the platform's topic.
    expect(stack.resolve(store.url)).toEqual({ 'Fn::GetAtt': [stack.getLogicalId(store.api.node.defaultChild as CfnResource), 'ApiEndpoint'] });
    const topicRef = { Ref: stack.getLogicalId(topic.node.defaultChild as sns.CfnTopic) };
    const alarms = Object.entries(template.findResources('AWS::CloudWatch::Alarm')) as [string, Json][];
    const ours = alarms.filter(([id]) => id.startsWith('Transcripts'));
    expect(ours).toHaveLength(store.alarms.length);
    expect(store.alarms).toContain(store.integrityAlarm);
    for (const [, alarm] of ours) {
      expect(alarm.Properties.AlarmActions).toEqual([topicRef]);
      expect(alarm.Properties.OKActions).toEqual([topicRef]);
    }
    // The platform's own alarm on the store's metric.
    const [, fenced] = resource(template, 'AWS::CloudWatch::Alarm', 'FencedWrites');
    expect(fenced.Properties).toMatchObject({
      Namespace: 'TranscriptStore',
      MetricName: 'Writes',
      Dimensions: [
        { Name: 'outcome', Value: 'fenced' },
        { Name: 'service', Value: 'transcript-store' },
      ],
      Statistic: 'Sum',
      Period: 300,
    });
    template.resourceCountIs('AWS::CloudWatch::Dashboard', 1);
    expect(stack.resolve(store.dashboard.dashboardName)).toBeDefined();
  });

  it('is configured by typed props, validated as the CDK context is', () => {
    const { template } = platform({ serviceName: 'transcripts-eu', maxSnapshotBytes: 2 * 1024 * 1024, retentionIntervalMinutes: 30, lambdaMemoryMb: 1024 });
    const [, get] = resource(template, 'AWS::Lambda::Function', 'TranscriptsGetSnapshot');
    expect(get.Properties.MemorySize).toBe(1024);
    expect(get.Properties.Environment.Variables).toMatchObject({ MAX_SNAPSHOT_BYTES: '2097152', POWERTOOLS_SERVICE_NAME: 'transcripts-eu' });
    template.hasResourceProperties('AWS::Events::Rule', { ScheduleExpression: 'rate(30 minutes)' });

    expect(() => platform({ maxSnapshotBytes: 7 * 1024 * 1024 })).toThrow(/"maxSnapshotBytes" \(MAX_SNAPSHOT_BYTES\): must be at most 6291456/);
    expect(() => platform({ retainCompletedRuns: 0 })).toThrow(/"retainCompletedRuns"/);
    expect(() => platform({ serviceName: 'has spaces' })).toThrow(/"serviceName"/);
    // The platform's topic, or one of the plain-value alarm settings: not both.
    expect(() => platform({ alarmEmail: 'oncall@example.com' })).toThrow(/"alarmEmail".*alarmTopic/);
  });

  it('needs its own serviceName per instance: metrics, alarms and the dashboard select it', () => {
    const app = new App({ context: { 'aws:cdk:bundling-stacks': [] } });
    const stack = new Stack(app, 'Two');
    new TranscriptStore(stack, 'Eu');
    expect(() => new TranscriptStore(stack, 'Us')).toThrow(/"serviceName".*already used by Two\/Eu/);
    const us = new TranscriptStore(stack, 'Us2', { serviceName: 'transcript-store-us' });
    const template = Template.fromStack(stack);
    const integrity = Object.values(template.findResources('AWS::CloudWatch::Alarm'))
      .map((a) => (a as Json).Properties)
      .filter((p) => p.MetricName === 'IntegrityFailures')
      .map((p) => p.Dimensions);
    expect(integrity).toEqual([[{ Name: 'service', Value: 'transcript-store' }], [{ Name: 'service', Value: 'transcript-store-us' }]]);
    const [, usGet] = resource(template, 'AWS::Lambda::Function', 'Us2GetSnapshot');
    expect(usGet.Properties.Environment.Variables.POWERTOOLS_SERVICE_NAME).toBe('transcript-store-us');
    expect(us.functions.get('GetSnapshot')).toBeDefined();
  });
});

describe('tracing', () => {
  it('traces every function actively, lets each write its segments, and keeps responses out of traces', () => {
    const { template } = cached;
    const functions = Object.entries(template.findResources('AWS::Lambda::Function')) as [string, Json][];
    expect(functions).toHaveLength(ROUTES.length + 3 + PUBLIC_ROUTES.length);
    for (const [id, fn] of functions) {
      expect(fn.Properties.TracingConfig, id).toEqual({ Mode: 'Active' });
      expect(fn.Properties.Environment.Variables.POWERTOOLS_TRACER_CAPTURE_RESPONSE, id).toBe('false');
      const roleId = fn.Properties.Role['Fn::GetAtt'][0] as string;
      const statements = Object.values(template.findResources('AWS::IAM::Policy'))
        .filter((p) => ((p as Json).Properties.Roles as Json[]).some((r) => r.Ref === roleId))
        .flatMap((p) => (p as Json).Properties.PolicyDocument.Statement as Json[]);
      const xray = statements.filter((st) => JSON.stringify(st.Action).includes('xray:'));
      expect(xray.map((st) => ({ ...st, Action: [...(st.Action as string[])].sort() })), id).toEqual([
        { Effect: 'Allow', Action: ['xray:PutTelemetryRecords', 'xray:PutTraceSegments'], Resource: '*' },
      ]);
    }
  });

  it('has no API Gateway tracing to turn on: HTTP API stages have no X-Ray setting (API Gateway traces REST APIs only)', () => {
    const { template } = cached;
    template.resourceCountIs('AWS::ApiGateway::RestApi', 0);
    const [, stage] = resource(template, 'AWS::ApiGatewayV2::Stage', 'TranscriptsHttpApiDefaultStage');
    // The stage carries what HTTP APIs offer instead: JSON access logs with the request id a function's logs carry.
    expect(Object.keys(stage.Properties).filter((k) => /trac/i.test(k))).toEqual([]);
    expect(JSON.parse(stage.Properties.AccessLogSettings.Format as string)).toMatchObject({ requestId: '$context.requestId', integrationLatency: '$context.integrationLatency' });
  });
});

describe('metrics and the integrity alarm', () => {
  it('give the storage functions the metrics namespace and the service dimension', () => {
    const { template } = cached;
    for (const id of [...ROUTES.map((r) => r.id), RECONCILER.id, RETENTION.id]) {
      const [, fn] = resource(template, 'AWS::Lambda::Function', `Transcripts${id}`);
      expect(fn.Properties.Environment.Variables, id).toMatchObject({ POWERTOOLS_METRICS_NAMESPACE: METRICS_NAMESPACE, POWERTOOLS_SERVICE_NAME: 'transcript-store' });
    }
  });

  it('alarm on any IntegrityFailures of this service in a 5-minute period, and notify', () => {
    const { template, topic, stack } = cached;
    const [, alarm] = resource(template, 'AWS::CloudWatch::Alarm', 'TranscriptsObservabilityIntegrityFailures');
    const topicRef = { Ref: stack.getLogicalId(topic.node.defaultChild as sns.CfnTopic) };
    expect(alarm.Properties).toEqual({
      AlarmDescription: expect.stringContaining('INTEGRITY'),
      Namespace: 'TranscriptStore',
      MetricName: 'IntegrityFailures',
      Dimensions: [{ Name: 'service', Value: 'transcript-store' }],
      Statistic: 'Sum',
      Period: 300,
      Threshold: 1,
      ComparisonOperator: 'GreaterThanOrEqualToThreshold',
      EvaluationPeriods: 1,
      TreatMissingData: 'notBreaching',
      AlarmActions: [topicRef],
      OKActions: [topicRef],
    });
  });

  it('show every service metric on the dashboard: responses by status, writes by outcome, bytes, integrity, deletions', () => {
    const body = dashboardBody(cached.template);
    const widgets = body.widgets as Json[];
    /** "title: Metric[dim=value]" for every metric of the namespace, per widget. */
    const shown = widgets.flatMap((w) =>
      ((w.properties?.metrics ?? []) as unknown[][])
        .filter((m) => m[0] === METRICS_NAMESPACE)
        .map((m) => {
          const [, name, ...rest] = m;
          const dims = rest.filter((x) => typeof x === 'string') as string[];
          const pairs = Object.fromEntries(Array.from({ length: dims.length / 2 }, (_, i) => [dims[2 * i], dims[2 * i + 1]]));
          expect(pairs['service']).toBe('transcript-store');
          expect((rest.find((x) => typeof x === 'object') as Json).stat).toBe('Sum');
          const extra = Object.entries(pairs).filter(([k]) => k !== 'service');
          return `${w.properties.title}: ${name as string}${extra.map(([k, v]) => `[${k}=${v}]`).join('')}`;
        }),
    );
    expect(shown.sort()).toEqual(
      [
        ...['200', '226', '304', '307', '404'].map((s) => `Hydrate responses (GET) by status: HydrateResponses[status=${s}]`),
        ...['stored', 'duplicate', 'fenced'].map((o) => `Writes by outcome: Writes[outcome=${o}]`),
        'Snapshot bytes in / out: BytesIn',
        'Snapshot bytes in / out: BytesOut',
        'Integrity failures: IntegrityFailures',
        'Deletions (reconciler, retention): ReconcilerDeletions',
        'Deletions (reconciler, retention): RetentionDeletions',
      ].sort(),
    );
    // Every metric the service emits is on it (SERVICE_METRICS is what the handlers are asked to emit).
    for (const name of Object.keys(SERVICE_METRICS)) expect(shown.some((s) => s.includes(`: ${name}`)), name).toBe(true);
    // And the alarm status widget lists the integrity alarm with the rest.
    const alarmWidget = widgets.find((w) => w.type === 'alarm')!;
    expect((alarmWidget.properties.alarms as unknown[]).length).toBeGreaterThan(0);
  });
});
