import { TABLE_ATTRIBUTES, TABLE_INDEXES } from '../../local/provision.js';
import { readFileSync } from 'node:fs';
import { App, Validations } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { AwsSolutionsChecks } from 'cdk-nag';
import type { IConstruct } from 'constructs';
import { describe, expect, it } from 'vitest';
import { CONSOLE_ROUTE, HEALTH_ROUTE, MATERIALIZED_PREFIX, OPENAPI_ROUTE, PUBLIC_ROUTES, RECONCILER, RETENTION, ROUTES, SNAPSHOTS_PREFIX, UPLOADS_PREFIX, type RouteSpec } from '../../infra/routes.js';
import { MATERIALIZED_PREFIX as STORE_MATERIALIZED_PREFIX, SNAPSHOT_PREFIX, UPLOAD_PREFIX } from '../../functions/lib/store/schema.js';
import { settingsFromContext } from '../../infra/settings.js';
import { INDEX } from '../../functions/lib/store/registry.js';
import { TranscriptStoreStack } from '../../infra/stack.js';

/** Same feature flags as `cdk synth`, bundling skipped (handlers are bundled only by the real synth). */
const CDK_JSON = JSON.parse(readFileSync(new URL('../../cdk.json', import.meta.url), 'utf8')) as { context: Record<string, unknown> };

const SECRET_ARN = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:gateway/jwt-AbCdEf';
const KMS_KEY_ARN = 'arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab';

interface Synth {
  app: App;
  stack: TranscriptStoreStack;
  template: Template;
}

function build(context: Record<string, unknown> = {}, routes?: readonly RouteSpec[]): { app: App; stack: TranscriptStoreStack } {
  const app = new App({ context: { ...CDK_JSON.context, 'aws:cdk:bundling-stacks': [], ...context } });
  const settings = settingsFromContext(app.node);
  const stack = new TranscriptStoreStack(app, 'TranscriptStore', { settings, ...(routes ? { routes } : {}) });
  return { app, stack };
}

const cache = new Map<string, Synth>();
function synth(context: Record<string, unknown> = {}): Synth {
  const key = JSON.stringify(context);
  let s = cache.get(key);
  if (!s) {
    const { app, stack } = build(context);
    s = { app, stack, template: Template.fromStack(stack) };
    cache.set(key, s);
  }
  return s;
}

type Json = Record<string, any>;
interface Statement {
  Effect: string;
  Action: string | string[];
  Resource: unknown;
  Condition?: Json;
}

/** The one resource of `type` whose logical id starts with the construct id `idPrefix`. */
function logicalIdOf(template: Template, type: string, idPrefix: string): string {
  const found = Object.keys(template.findResources(type)).filter((id) => id.startsWith(idPrefix));
  expect(found, `${type} ${idPrefix}`).toHaveLength(1);
  return found[0]!;
}

/** The statements of every inline policy attached to the route function's execution role. */
function statementsOf(template: Template, routeId: string): Statement[] {
  const fnId = logicalIdOf(template, 'AWS::Lambda::Function', routeId);
  const fn = template.toJSON().Resources[fnId] as Json;
  const roleId = fn.Properties.Role['Fn::GetAtt'][0] as string;
  const role = template.toJSON().Resources[roleId] as Json;
  expect(role.Properties.ManagedPolicyArns, 'no managed policies on the execution role').toBeUndefined();
  const policies = Object.values(template.findResources('AWS::IAM::Policy')).filter((p) =>
    ((p as Json).Properties.Roles as Json[]).some((r) => r.Ref === roleId),
  );
  return policies.flatMap((p) => (p as Json).Properties.PolicyDocument.Statement as Statement[]);
}

/** Properties of the Lambda function with construct id `id`. */
const fnProps = (template: Template, id: string): Json => (template.toJSON().Resources[logicalIdOf(template, 'AWS::Lambda::Function', id)] as Json).Properties;

const actions = (s: Statement) => (Array.isArray(s.Action) ? [...s.Action] : [s.Action]).sort();
const bucketId = (t: Template) => logicalIdOf(t, 'AWS::S3::Bucket', 'SnapshotBucket');
const tableId = (t: Template) => logicalIdOf(t, 'AWS::DynamoDB::Table', 'SnapshotTable');
const objectArn = (t: Template, prefix: string) => ({ 'Fn::Join': ['', [{ 'Fn::GetAtt': [bucketId(t), 'Arn'] }, `/${prefix}*`]] });

/** A compact, comparable view of a role's permissions: "actions -> resource [condition]". */
function permissions(template: Template, routeId: string): string[] {
  return statementsOf(template, routeId)
    .map((s) => {
      expect(s.Effect).toBe('Allow');
      const resource = JSON.stringify(s.Resource)
        .replaceAll(JSON.stringify({ 'Fn::GetAtt': [bucketId(template), 'Arn'] }), 'BUCKET')
        .replaceAll(JSON.stringify({ 'Fn::GetAtt': [tableId(template), 'Arn'] }), 'TABLE');
      return `${actions(s).join(',')} -> ${resource}${s.Condition ? ` if ${JSON.stringify(s.Condition)}` : ''}`;
    })
    .filter((p) => !p.startsWith('logs:') && !p.startsWith('xray:'))
    .sort();
}

function nagViolations(scope: IConstruct): string[] {
  const report = new AwsSolutionsChecks().validateScope(scope);
  return report.violations.flatMap((v) =>
    v.violatingResources.map((r) => `${v.severity} ${v.ruleName} at ${r.constructPath}: ${v.description}`),
  );
}

function acknowledgements(scope: IConstruct): { path: string; id: string; reason: string }[] {
  return scope.node.findAll().flatMap((c) =>
    c.node.metadata
      .filter((m) => m.type === Validations.ACKNOWLEDGED_RULES_METADATA_KEY)
      .flatMap((m) => Object.entries(m.data as Record<string, string>).map(([id, reason]) => ({ path: c.node.path, id, reason }))),
  );
}

describe('HTTP API', () => {
  it('routes the worker routes, the operator API (/admin/…), the console, /health and /openapi.json to their own function with payload format 2.0', () => {
    const { template } = synth();
    const resources = template.toJSON().Resources as Record<string, Json>;
    const routes = Object.values(resources).filter((r) => r.Type === 'AWS::ApiGatewayV2::Route');
    expect(routes.map((r) => r.Properties.RouteKey).sort()).toEqual([
      'DELETE /worker/transcript/snapshot',
      'GET /admin/agents',
      'GET /admin/conversations',
      'GET /admin/erasures',
      'GET /admin/erasures/{receiptId}',
      'GET /admin/lines',
      'GET /admin/run',
      'GET /admin/runs',
      'GET /console',
      'GET /console/{asset}',
      'GET /health',
      'GET /openapi.json',
      'GET /worker/transcript/snapshot',
      'POST /admin/erasures',
      'POST /worker/transcript/snapshot',
      'POST /worker/transcript/snapshot/uploads',
    ]);
    for (const spec of [...ROUTES, ...PUBLIC_ROUTES, CONSOLE_ROUTE, { ...CONSOLE_ROUTE, path: CONSOLE_ROUTE.assetPath }]) {
      const route = routes.find((r) => r.Properties.RouteKey === `${spec.method} ${spec.path}`)!;
      const integrationId = (route.Properties.Target['Fn::Join'][1][1] as Json).Ref as string;
      const integration = resources[integrationId]!;
      expect(integration.Properties).toMatchObject({ IntegrationType: 'AWS_PROXY', PayloadFormatVersion: '2.0' });
      expect(integration.Properties.IntegrationUri).toEqual({ 'Fn::GetAtt': [logicalIdOf(template, 'AWS::Lambda::Function', spec.id), 'Arn'] });
    }
  });

  it('serves the $default stage with JSON access logs that never include headers, and stage throttling', () => {
    const { template } = synth();
    const stage = Object.values(template.findResources('AWS::ApiGatewayV2::Stage'));
    expect(stage).toHaveLength(1);
    const props = (stage[0] as Json).Properties;
    expect(props).toMatchObject({ StageName: '$default', AutoDeploy: true });
    expect(props.DefaultRouteSettings).toEqual({ ThrottlingBurstLimit: 400, ThrottlingRateLimit: 200 });
    const format = JSON.parse(props.AccessLogSettings.Format) as Record<string, string>;
    expect(format).toMatchObject({ requestId: '$context.requestId', status: '$context.status', routeKey: '$context.routeKey' });
    expect(props.AccessLogSettings.Format).not.toMatch(/header|authorization/i);
    expect(props.AccessLogSettings.DestinationArn).toEqual({ 'Fn::GetAtt': [logicalIdOf(template, 'AWS::Logs::LogGroup', 'ApiAccessLogs'), 'Arn'] });
  });
});

describe('Lambda functions', () => {
  it('run Node.js 22 on arm64 as bundled ESM with source maps enabled, one per route plus the reconciler, the retention pass, the console, health and the OpenAPI document', () => {
    const { template } = synth();
    expect(PUBLIC_ROUTES.map((r) => r.id)).toEqual([HEALTH_ROUTE.id, OPENAPI_ROUTE.id]);
    template.resourceCountIs('AWS::Lambda::Function', ROUTES.length + 3 + PUBLIC_ROUTES.length);
    template.allResourcesProperties('AWS::Lambda::Function', {
      Runtime: 'nodejs22.x',
      Architectures: ['arm64'],
      Handler: 'index.handler',
      Environment: { Variables: Match.objectLike({ NODE_OPTIONS: '--enable-source-maps' }) },
    });
  });

  it('get the storage names, the JWT secret ARN and the Powertools settings as environment variables', () => {
    const { template } = synth();
    const secretId = logicalIdOf(template, 'AWS::SecretsManager::Secret', 'JwtSigningSecret');
    for (const spec of ROUTES) {
      expect(fnProps(template, spec.id).Environment.Variables).toEqual({
        BUCKET_NAME: { Ref: bucketId(template) },
        TABLE_NAME: { Ref: tableId(template) },
        JWT_SECRET_ARN: { Ref: secretId },
        POWERTOOLS_SERVICE_NAME: 'transcript-store',
        POWERTOOLS_LOG_LEVEL: 'INFO',
        POWERTOOLS_METRICS_NAMESPACE: 'TranscriptStore',
        POWERTOOLS_TRACER_CAPTURE_RESPONSE: 'false',
        NODE_OPTIONS: '--enable-source-maps',
      });
    }
  });

  it('run the orphan reconciler on a schedule with storage settings only (no JWT key, no secret access)', () => {
    const { template } = synth({ orphanGraceSeconds: '7200' });
    expect(fnProps(template, RECONCILER.id).Environment.Variables).toEqual({
      BUCKET_NAME: { Ref: bucketId(template) },
      TABLE_NAME: { Ref: tableId(template) },
      ORPHAN_GRACE_SECONDS: '7200',
      POWERTOOLS_SERVICE_NAME: 'transcript-store',
      POWERTOOLS_LOG_LEVEL: 'INFO',
      POWERTOOLS_METRICS_NAMESPACE: 'TranscriptStore',
      POWERTOOLS_TRACER_CAPTURE_RESPONSE: 'false',
      NODE_OPTIONS: '--enable-source-maps',
    });
    template.hasResourceProperties('AWS::Events::Rule', {
      ScheduleExpression: `rate(${RECONCILER.everyMinutes / 60} hours)`,
      State: 'ENABLED',
      Targets: [Match.objectLike({ Arn: { 'Fn::GetAtt': [logicalIdOf(template, 'AWS::Lambda::Function', RECONCILER.id), 'Arn'] } })],
    });
    expect(() => synth({ orphanGraceSeconds: '60' })).toThrow(/orphanGraceSeconds/);
  });

  it('run the retention pass every RETENTION_INTERVAL_MINUTES with the retention settings and storage only (no JWT key, no secret)', () => {
    const defaults = synth().template;
    expect(fnProps(defaults, RETENTION.id).Environment.Variables).toEqual({
      BUCKET_NAME: { Ref: bucketId(defaults) },
      TABLE_NAME: { Ref: tableId(defaults) },
      ORPHAN_GRACE_SECONDS: '3600',
      RETAIN_COMPLETED_RUNS: '3',
      RETAIN_FAILED_DAYS: '7',
      CONVERSATION_TTL_DAYS: '0',
      RETENTION_INTERVAL_MINUTES: '60',
      POWERTOOLS_SERVICE_NAME: 'transcript-store',
      POWERTOOLS_LOG_LEVEL: 'INFO',
      POWERTOOLS_METRICS_NAMESPACE: 'TranscriptStore',
      POWERTOOLS_TRACER_CAPTURE_RESPONSE: 'false',
      NODE_OPTIONS: '--enable-source-maps',
    });
    const target = (t: Template) => [Match.objectLike({ Arn: { 'Fn::GetAtt': [logicalIdOf(t, 'AWS::Lambda::Function', RETENTION.id), 'Arn'] } })];
    defaults.hasResourceProperties('AWS::Events::Rule', { ScheduleExpression: 'rate(1 hour)', State: 'ENABLED', Targets: target(defaults) });

    const { template } = synth({ retainCompletedRuns: 5, retainFailedDays: '14', conversationTtlDays: 90, retentionIntervalMinutes: 15 });
    expect(fnProps(template, RETENTION.id).Environment.Variables).toMatchObject({
      RETAIN_COMPLETED_RUNS: '5',
      RETAIN_FAILED_DAYS: '14',
      CONVERSATION_TTL_DAYS: '90',
      RETENTION_INTERVAL_MINUTES: '15',
    });
    template.hasResourceProperties('AWS::Events::Rule', { ScheduleExpression: 'rate(15 minutes)', State: 'ENABLED', Targets: target(template) });
    // Its errors alarm after two failed passes in a row.
    const alarm = (t: Template) => (t.toJSON().Resources[logicalIdOf(t, 'AWS::CloudWatch::Alarm', 'RetentionErrors')] as Json).Properties;
    expect(alarm(defaults)).toMatchObject({ MetricName: 'Errors', Statistic: 'Sum', Period: 3600, EvaluationPeriods: 2, Threshold: 1 });
    expect(alarm(template)).toMatchObject({ Period: 900, EvaluationPeriods: 2 });
    // The write path stamps the DynamoDB TTL of runs that did not complete from RETAIN_FAILED_DAYS.
    for (const spec of ROUTES) expect(fnProps(template, spec.id).Environment.Variables.RETAIN_FAILED_DAYS).toBe('14');
    for (const spec of ROUTES) expect(fnProps(defaults, spec.id).Environment.Variables.RETAIN_FAILED_DAYS).toBeUndefined();
  });

  it('rejects retention settings out of their bounds at synth time, naming the key', () => {
    expect(() => build({ retainCompletedRuns: 0 })).toThrow(/retainCompletedRuns/);
    expect(() => build({ retainFailedDays: '0' })).toThrow(/retainFailedDays/);
    expect(() => build({ conversationTtlDays: -1 })).toThrow(/conversationTtlDays/);
    expect(() => build({ retentionIntervalMinutes: 1441 })).toThrow(/retentionIntervalMinutes/);
    expect(() => build({ retentionIntervalMinutes: '1.5' })).toThrow(/retentionIntervalMinutes/);
    expect(settingsFromContext({ tryGetContext: () => undefined })).toMatchObject({ retainCompletedRuns: 3, retainFailedDays: 7, conversationTtlDays: 0, retentionIntervalMinutes: 60 });
  });

  it('write to their own log group with the configured retention instead of the basic execution managed policy', () => {
    const { template } = synth({ logRetentionDays: 14 });
    for (const spec of ROUTES) {
      const logsId = logicalIdOf(template, 'AWS::Logs::LogGroup', `${spec.id}Logs`);
      template.hasResourceProperties('AWS::Logs::LogGroup', { RetentionInDays: 14 });
      const statements = statementsOf(template, spec.id);
      expect(statements).toContainEqual({
        Effect: 'Allow',
        Action: ['logs:CreateLogStream', 'logs:PutLogEvents'],
        Resource: { 'Fn::GetAtt': [logsId, 'Arn'] },
      });
    }
  });
});

describe('least privilege', () => {
  const SNAPSHOT_OBJECTS = `{"Fn::Join":["",[BUCKET,"/${SNAPSHOTS_PREFIX}*"]]}`;
  const secretRef = (t: Template) => `{"Ref":"${logicalIdOf(t, 'AWS::SecretsManager::Secret', 'JwtSigningSecret')}"}`;

  const UPLOAD_OBJECTS = `{"Fn::Join":["",[BUCKET,"/${UPLOADS_PREFIX}*"]]}`;
  const MATERIALIZED_OBJECTS = `{"Fn::Join":["",[BUCKET,"/${MATERIALIZED_PREFIX}*"]]}`;

  it('grants the prefixes the store writes under (infra and store agree)', () => {
    expect([SNAPSHOTS_PREFIX, UPLOADS_PREFIX, MATERIALIZED_PREFIX]).toEqual([SNAPSHOT_PREFIX, UPLOAD_PREFIX, STORE_MATERIALIZED_PREFIX]);
  });
  const list = (...prefixes: string[]) => `s3:ListBucket -> BUCKET if {"StringLike":{"s3:prefix":${JSON.stringify(prefixes.map((p) => `${p}*`))}}}`;

  it('lets the GET function only read its records and snapshot objects, and keep materialized copies (ListBucket only so a missing key is a 404)', () => {
    const { template } = synth();
    expect(permissions(template, 'GetSnapshot')).toEqual([
      'dynamodb:BatchGetItem,dynamodb:GetItem -> TABLE',
      `s3:GetObject -> ${SNAPSHOT_OBJECTS}`,
      `s3:GetObject,s3:PutObject -> ${MATERIALIZED_OBJECTS}`,
      list(SNAPSHOTS_PREFIX, MATERIALIZED_PREFIX),
      `secretsmanager:GetSecretValue -> ${secretRef(template)}`,
    ]);
  });

  it('lets the POST function only write snapshots, and read, complete and remove its own uploads', () => {
    const { template } = synth();
    expect(permissions(template, 'PostSnapshot')).toEqual([
      'dynamodb:BatchGetItem,dynamodb:DeleteItem,dynamodb:GetItem,dynamodb:PutItem,dynamodb:UpdateItem -> TABLE',
      `s3:DeleteObject,s3:GetObject,s3:PutObject -> [${SNAPSHOT_OBJECTS},${UPLOAD_OBJECTS}]`,
      list(SNAPSHOTS_PREFIX, UPLOADS_PREFIX),
      `secretsmanager:GetSecretValue -> ${secretRef(template)}`,
    ]);
  });

  it('lets the DELETE function only query and delete, and list nothing but the snapshots/ and uploads/ prefixes', () => {
    const { template } = synth();
    expect(permissions(template, 'DeleteSnapshot')).toEqual([
      'dynamodb:DeleteItem,dynamodb:GetItem,dynamodb:Query,dynamodb:UpdateItem -> TABLE',
      `s3:DeleteObject -> [${MATERIALIZED_OBJECTS},${SNAPSHOT_OBJECTS},${UPLOAD_OBJECTS}]`,
      list(SNAPSHOTS_PREFIX, UPLOADS_PREFIX, MATERIALIZED_PREFIX),
      `secretsmanager:GetSecretValue -> ${secretRef(template)}`,
    ]);
  });

  it('lets the reconciler only list snapshots/, read run records, keep its cursor and delete snapshot objects', () => {
    const { template } = synth();
    expect(permissions(template, RECONCILER.id)).toEqual([
      'dynamodb:BatchGetItem,dynamodb:DeleteItem,dynamodb:GetItem,dynamodb:PutItem,dynamodb:UpdateItem -> TABLE',
      `s3:DeleteObject -> [${MATERIALIZED_OBJECTS},${SNAPSHOT_OBJECTS}]`,
      list(SNAPSHOTS_PREFIX, MATERIALIZED_PREFIX),
    ]);
  });

  it('lets the retention pass query its index, and do what an erasure does (it expires idle conversations and resumes erasures)', () => {
    const { template } = synth();
    expect(permissions(template, RETENTION.id)).toEqual([
      'dynamodb:BatchWriteItem,dynamodb:DeleteItem,dynamodb:GetItem,dynamodb:PutItem,dynamodb:Query,dynamodb:UpdateItem -> TABLE',
      // The index by its own ARN: a grant on the table does not reach its indexes, and `index/*` would reach all.
      `dynamodb:Query -> {"Fn::Join":["",[TABLE,"/index/ByRetentionDue"]]}`,
      `s3:DeleteObject -> [${MATERIALIZED_OBJECTS},${SNAPSHOT_OBJECTS},${UPLOAD_OBJECTS}]`,
      list(SNAPSHOTS_PREFIX, UPLOADS_PREFIX, MATERIALIZED_PREFIX),
    ]);
    // No reads or writes of object contents, no secret.
    expect(statementsOf(template, RETENTION.id).flatMap(actions).filter((a) => /^s3:(Get|Put)|^secretsmanager:|^kms:/.test(a))).toEqual([]);
  });

  it('serves the operator console from a function with no data access, no secret and no storage configuration', () => {
    const { template } = synth({ bucketEncryption: 'kms' });
    const statements = statementsOf(template, CONSOLE_ROUTE.id);
    expect(statements.flatMap(actions).sort()).toEqual(['logs:CreateLogStream', 'logs:PutLogEvents', 'xray:PutTelemetryRecords', 'xray:PutTraceSegments']);
    expect(fnProps(template, CONSOLE_ROUTE.id).Environment.Variables).toEqual({
      POWERTOOLS_SERVICE_NAME: 'transcript-store',
      POWERTOOLS_LOG_LEVEL: 'INFO',
      POWERTOOLS_TRACER_CAPTURE_RESPONSE: 'false',
      NODE_OPTIONS: '--enable-source-maps',
    });
    const outputs = template.toJSON().Outputs as Record<string, Json>;
    expect(JSON.stringify(outputs['ConsoleUrl']!.Value)).toContain('/console');
  });

  it('serves /health and /openapi.json from functions that may only write their logs and traces: no data, no secret, no KMS, no storage configuration', () => {
    // The KMS bucket and an existing secret: the configuration under which every data route gets the most grants.
    const { template } = synth({ bucketEncryption: 'kms', jwtSecretArn: SECRET_ARN, jwtSecretKmsKeyArn: KMS_KEY_ARN });
    for (const route of PUBLIC_ROUTES) {
      expect(route.access).toEqual({ table: [], objects: [] });
      const logsId = logicalIdOf(template, 'AWS::Logs::LogGroup', `${route.id}Logs`);
      expect(statementsOf(template, route.id), route.id).toEqual([
        { Effect: 'Allow', Action: ['logs:CreateLogStream', 'logs:PutLogEvents'], Resource: { 'Fn::GetAtt': [logsId, 'Arn'] } },
        { Effect: 'Allow', Action: ['xray:PutTelemetryRecords', 'xray:PutTraceSegments'], Resource: '*' },
      ]);
      expect(fnProps(template, route.id).Environment.Variables, route.id).toEqual({
        POWERTOOLS_SERVICE_NAME: 'transcript-store',
        POWERTOOLS_LOG_LEVEL: 'INFO',
        POWERTOOLS_TRACER_CAPTURE_RESPONSE: 'false',
        NODE_OPTIONS: '--enable-source-maps',
      });
      expect(fnProps(template, route.id).Timeout).toBe(route.timeoutSeconds);
    }
    const outputs = template.toJSON().Outputs as Record<string, Json>;
    expect(JSON.stringify(outputs['OpenApiUrl']!.Value)).toContain('/openapi.json');
  });

  it('lets the upload function only sign uploads under uploads/, with no table access', () => {
    const { template } = synth();
    expect(permissions(template, 'CreateUpload')).toEqual([
      `s3:PutObject -> ${UPLOAD_OBJECTS}`,
      `secretsmanager:GetSecretValue -> ${secretRef(template)}`,
    ]);
  });

  const index = (name: string) => `{"Fn::Join":["",[TABLE,"/index/${name}"]]}`;

  it('names the indexes the table has (infra and store agree)', () => {
    const granted = new Set(ROUTES.flatMap((r) => (r.access.indexes ?? []).map((i) => i.index)));
    for (const name of granted) expect(Object.values(INDEX).map((i) => i.name)).toContain(name);
  });

  it('lets the conversations listing only Query the ByOrganization and ByAgent indexes, by their ARNs', () => {
    const { template } = synth();
    expect(permissions(template, 'AdminListConversations')).toEqual([
      `dynamodb:Query -> [${index('ByAgent')},${index('ByOrganization')}]`,
      `secretsmanager:GetSecretValue -> ${secretRef(template)}`,
    ]);
  });

  it('lets the runs listing only read HEAD and Query the table (the conversation’s partition)', () => {
    const { template } = synth();
    expect(permissions(template, 'AdminListRuns')).toEqual([
      'dynamodb:GetItem,dynamodb:Query -> TABLE',
      `secretsmanager:GetSecretValue -> ${secretRef(template)}`,
    ]);
  });

  it('lets the run reader only read records and snapshot objects, and keep materialized copies (as GET)', () => {
    const { template } = synth();
    expect(permissions(template, 'AdminReadRun')).toEqual([
      'dynamodb:GetItem -> TABLE',
      `s3:GetObject -> ${SNAPSHOT_OBJECTS}`,
      `s3:GetObject,s3:PutObject -> ${MATERIALIZED_OBJECTS}`,
      list(SNAPSHOTS_PREFIX, MATERIALIZED_PREFIX),
      `secretsmanager:GetSecretValue -> ${secretRef(template)}`,
    ]);
  });

  it('lets the lines reader only read records, Query run boundaries and read snapshot objects', () => {
    const { template } = synth();
    expect(permissions(template, 'AdminReadLines')).toEqual([
      'dynamodb:GetItem,dynamodb:Query -> TABLE',
      `s3:GetObject -> ${SNAPSHOT_OBJECTS}`,
      list(SNAPSHOTS_PREFIX),
      `secretsmanager:GetSecretValue -> ${secretRef(template)}`,
    ]);
  });

  it('lets the agents listing only Query the table (registry) and the ByAgent index', () => {
    const { template } = synth();
    expect(permissions(template, 'AdminListAgents')).toEqual([
      // CDK merges the table and index statements (same action).
      `dynamodb:Query -> [TABLE,${index('ByAgent')}]`,
      `secretsmanager:GetSecretValue -> ${secretRef(template)}`,
    ]);
  });

  it('lets the erasure function only do what erasure does: records, fences, receipts, and deleting the conversations’ objects', () => {
    const { template } = synth();
    expect(permissions(template, 'AdminErase')).toEqual([
      'dynamodb:BatchWriteItem,dynamodb:DeleteItem,dynamodb:GetItem,dynamodb:PutItem,dynamodb:Query,dynamodb:UpdateItem -> TABLE',
      `s3:DeleteObject -> [${MATERIALIZED_OBJECTS},${SNAPSHOT_OBJECTS},${UPLOAD_OBJECTS}]`,
      list(SNAPSHOTS_PREFIX, UPLOADS_PREFIX, MATERIALIZED_PREFIX),
      `secretsmanager:GetSecretValue -> ${secretRef(template)}`,
    ]);
  });

  it('lets the receipt routes only read receipts (GetItem, Query), with no object access', () => {
    const { template } = synth();
    expect(permissions(template, 'AdminGetReceipt')).toEqual(['dynamodb:GetItem,dynamodb:Query -> TABLE', `secretsmanager:GetSecretValue -> ${secretRef(template)}`]);
    expect(permissions(template, 'AdminListReceipts')).toEqual(['dynamodb:Query -> TABLE', `secretsmanager:GetSecretValue -> ${secretRef(template)}`]);
  });

  it('grants no wildcard actions and no table-wide or bucket-wide data access to any function', () => {
    const { template } = synth({ bucketEncryption: 'kms', jwtSecretArn: SECRET_ARN, jwtSecretKmsKeyArn: KMS_KEY_ARN });
    for (const spec of [...ROUTES, RECONCILER, RETENTION, CONSOLE_ROUTE, ...PUBLIC_ROUTES]) {
      for (const s of statementsOf(template, spec.id)) {
        for (const a of actions(s)) expect(a, `${spec.id} action`).not.toContain('*');
        // Active tracing's two X-Ray actions support no resource-level permissions: "*" is their only resource.
        if (actions(s).every((a) => a.startsWith('xray:'))) {
          expect(actions(s), `${spec.id} X-Ray`).toEqual(['xray:PutTelemetryRecords', 'xray:PutTraceSegments']);
          continue;
        }
        expect(JSON.stringify(s.Resource), `${spec.id} resource`).not.toBe('"*"');
        // Object grants are always prefix-scoped: never `<bucket>/*`.
        expect(JSON.stringify(s.Resource), `${spec.id} resource`).not.toMatch(/"\/\*"/);
      }
    }
  });

  it('reads an existing JWT secret by its exact ARN and decrypts it only through Secrets Manager', () => {
    const { template } = synth({ jwtSecretArn: SECRET_ARN, jwtSecretKmsKeyArn: KMS_KEY_ARN, jwtIssuer: 'https://gw.example', jwtAudience: 'transcript-store' });
    template.resourceCountIs('AWS::SecretsManager::Secret', 0);
    for (const spec of ROUTES) {
      const statements = statementsOf(template, spec.id);
      expect(statements).toContainEqual({ Effect: 'Allow', Action: 'secretsmanager:GetSecretValue', Resource: SECRET_ARN });
      expect(statements).toContainEqual({
        Effect: 'Allow',
        Action: 'kms:Decrypt',
        Resource: KMS_KEY_ARN,
        Condition: { StringEquals: { 'kms:ViaService': { 'Fn::Join': ['', ['secretsmanager.', { Ref: 'AWS::Region' }, '.amazonaws.com']] } } },
      });
    }
    for (const spec of ROUTES) {
      expect(fnProps(template, spec.id).Environment.Variables).toMatchObject({ JWT_SECRET_ARN: SECRET_ARN, JWT_ISSUER: 'https://gw.example', JWT_AUDIENCE: 'transcript-store' });
      expect(fnProps(template, spec.id).Environment.Variables.JWKS_URL).toBeUndefined();
    }
  });

  it('uses a JWKS URL without any JWT secret; only the routes that sign upload ids or cursors get the signing secret', () => {
    const { template } = synth({ jwksUrl: 'https://issuer.example/.well-known/jwks.json', jwtAlgorithms: 'RS256,ES256' });
    // No shared secret to derive the signing keys from: the stack generates one for the routes that sign.
    template.resourceCountIs('AWS::SecretsManager::Secret', 1);
    const signers = ROUTES.filter((r) => r.signsUploadIds || r.signsCursors).map((r) => r.id);
    expect(signers.sort()).toEqual(['AdminListAgents', 'AdminListConversations', 'AdminListReceipts', 'AdminListRuns', 'AdminReadLines', 'CreateUpload', 'PostSnapshot']);
    for (const spec of ROUTES) {
      const vars = fnProps(template, spec.id).Environment.Variables;
      expect(vars).toMatchObject({ JWKS_URL: 'https://issuer.example/.well-known/jwks.json', JWT_ALGORITHMS: 'RS256,ES256' });
      expect(vars.JWT_SECRET_ARN).toBeUndefined();
      expect(vars.UPLOAD_ID_SECRET_ARN !== undefined).toBe(signers.includes(spec.id));
      const secretActions = statementsOf(template, spec.id).flatMap(actions).filter((a) => a.startsWith('secretsmanager:'));
      expect(secretActions).toEqual(signers.includes(spec.id) ? ['secretsmanager:GetSecretValue'] : []);
    }
  });

  it('gives each function only the KMS action its S3 calls need when the bucket uses a customer key', () => {
    const { template } = synth({ bucketEncryption: 'kms' });
    const kmsActions = (id: string) => statementsOf(template, id).flatMap(actions).filter((a) => a.startsWith('kms:'));
    // GET writes materialized copies of long chains for its redirects.
    expect(kmsActions('GetSnapshot')).toEqual(['kms:Decrypt', 'kms:GenerateDataKey']);
    // Multipart uploads to an SSE-KMS bucket need Decrypt as well as GenerateDataKey.
    expect(kmsActions('PostSnapshot')).toEqual(['kms:Decrypt', 'kms:GenerateDataKey']);
    expect(kmsActions('CreateUpload')).toEqual(['kms:Decrypt', 'kms:GenerateDataKey']);
    expect(kmsActions('DeleteSnapshot')).toEqual([]);
  });

  it('derives a new function, route and prefix-scoped policy from one more route table entry', () => {
    const extra: RouteSpec = {
      id: 'ExtraRoute',
      method: 'POST',
      path: '/worker/transcript/snapshot/extra',
      entry: ROUTES[0]!.entry, // stand-in entry file; bundling is skipped in this test
      description: 'An extra route',
      timeoutSeconds: 10,
      access: { table: [], objects: [{ prefix: UPLOADS_PREFIX, actions: ['s3:PutObject'] }] },
    };
    const { stack } = build({}, [...ROUTES, extra]);
    const template = Template.fromStack(stack);
    // + the extra route, the reconciler, the retention pass, the console, health and the OpenAPI document
    template.resourceCountIs('AWS::Lambda::Function', ROUTES.length + 4 + PUBLIC_ROUTES.length);
    template.hasResourceProperties('AWS::ApiGatewayV2::Route', { RouteKey: 'POST /worker/transcript/snapshot/extra' });
    const statements = statementsOf(template, 'ExtraRoute').filter((s) => !/^(logs|xray):/.test(actions(s)[0]!));
    expect(statements.map((s) => [actions(s), s.Resource])).toEqual([
      [['s3:PutObject'], objectArn(template, UPLOADS_PREFIX)],
      [['secretsmanager:GetSecretValue'], { Ref: logicalIdOf(template, 'AWS::SecretsManager::Secret', 'JwtSigningSecret') }],
    ]);
    expect(nagViolations(stack)).toEqual([]);
  });
});

describe('snapshot bucket', () => {
  it('blocks all public access, enforces TLS 1.2+ in its bucket policy and uses SSE-S3 by default', () => {
    const { template } = synth();
    const id = bucketId(template);
    template.hasResourceProperties('AWS::S3::Bucket', {
      PublicAccessBlockConfiguration: { BlockPublicAcls: true, BlockPublicPolicy: true, IgnorePublicAcls: true, RestrictPublicBuckets: true },
      BucketEncryption: { ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }] },
      OwnershipControls: { Rules: [{ ObjectOwnership: 'BucketOwnerEnforced' }] },
    });
    const bucketAndObjects = [{ 'Fn::GetAtt': [id, 'Arn'] }, { 'Fn::Join': ['', [{ 'Fn::GetAtt': [id, 'Arn'] }, '/*']] }];
    template.hasResourceProperties('AWS::S3::BucketPolicy', {
      Bucket: { Ref: id },
      PolicyDocument: {
        Statement: Match.arrayWith([
          { Effect: 'Deny', Principal: { AWS: '*' }, Action: 's3:*', Condition: { Bool: { 'aws:SecureTransport': 'false' } }, Resource: bucketAndObjects },
          { Effect: 'Deny', Principal: { AWS: '*' }, Action: 's3:*', Condition: { NumericLessThan: { 's3:TlsVersion': 1.2 } }, Resource: bucketAndObjects },
        ]),
      },
    });
  });

  it('can encrypt with a customer managed KMS key with rotation and S3 bucket keys', () => {
    const { template } = synth({ bucketEncryption: 'kms' });
    const keyId = logicalIdOf(template, 'AWS::KMS::Key', 'BucketKey');
    template.hasResourceProperties('AWS::KMS::Key', { EnableKeyRotation: true });
    template.hasResourceProperties('AWS::S3::Bucket', {
      BucketEncryption: {
        ServerSideEncryptionConfiguration: [
          { BucketKeyEnabled: true, ServerSideEncryptionByDefault: { SSEAlgorithm: 'aws:kms', KMSMasterKeyID: { 'Fn::GetAtt': [keyId, 'Arn'] } } },
        ],
      },
    });
  });

  it('expires uncommitted uploads and incomplete multipart uploads after a day but never ages out snapshots/', () => {
    const { template } = synth();
    const bucket = template.toJSON().Resources[bucketId(template)] as Json;
    const rules = bucket.Properties.LifecycleConfiguration.Rules as Json[];
    expect(rules).toEqual([
      { Id: 'expire-uncommitted-uploads', Prefix: UPLOADS_PREFIX, ExpirationInDays: 1, Status: 'Enabled' },
      { Id: 'expire-materialized-copies', Prefix: MATERIALIZED_PREFIX, ExpirationInDays: 1, Status: 'Enabled' },
      { Id: 'abort-incomplete-multipart-uploads', AbortIncompleteMultipartUpload: { DaysAfterInitiation: 1 }, Status: 'Enabled' },
    ]);
    // An expiration without a prefix, or on snapshots/, would delete live, DynamoDB-referenced data.
    for (const rule of rules) {
      if (rule.ExpirationInDays !== undefined || rule.ExpirationDate !== undefined) expect([UPLOADS_PREFIX, MATERIALIZED_PREFIX]).toContain(rule.Prefix);
    }
  });

  it('is retained when the stack is deleted, and logs its access to a separate bucket', () => {
    const { template } = synth();
    template.hasResource('AWS::S3::Bucket', {
      DeletionPolicy: 'Retain',
      UpdateReplacePolicy: 'Retain',
      Properties: Match.objectLike({
        LoggingConfiguration: { DestinationBucketName: { Ref: logicalIdOf(template, 'AWS::S3::Bucket', 'AccessLogsBucket') }, LogFilePrefix: 'snapshot-bucket/' },
      }),
    });
  });
});

describe('DynamoDB table', () => {
  it('is on-demand with pk/sk keys, point-in-time recovery, a TTL on expiresAt, deletion protection and retained', () => {
    const { template } = synth();
    template.hasResource('AWS::DynamoDB::Table', {
      DeletionPolicy: 'Retain',
      Properties: {
        KeySchema: [
          { AttributeName: 'pk', KeyType: 'HASH' },
          { AttributeName: 'sk', KeyType: 'RANGE' },
        ],
        AttributeDefinitions: Match.arrayWith([
          { AttributeName: 'pk', AttributeType: 'S' },
          { AttributeName: 'sk', AttributeType: 'S' },
        ]),
        BillingMode: 'PAY_PER_REQUEST',
        PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
        TimeToLiveSpecification: { AttributeName: 'expiresAt', Enabled: true },
        DeletionProtectionEnabled: true,
      },
    });
  });

  it('has the sparse listing and retention GSIs the local tables have (the same definitions as local/provision.ts)', () => {
    const { template } = synth();
    const table = Object.values(template.findResources('AWS::DynamoDB::Table'))[0] as { Properties: Record<string, unknown> };
    const indexes = table.Properties['GlobalSecondaryIndexes'] as { IndexName: string; KeySchema: unknown; Projection: { ProjectionType: string; NonKeyAttributes: string[] } }[];
    expect(indexes.map((i) => i.IndexName).sort()).toEqual(TABLE_INDEXES.map((i) => i.IndexName).sort());
    for (const local of TABLE_INDEXES) {
      const deployed = indexes.find((i) => i.IndexName === local.IndexName)!;
      expect(deployed.KeySchema).toEqual(local.KeySchema);
      expect(deployed.Projection.ProjectionType).toBe('INCLUDE');
      expect([...deployed.Projection.NonKeyAttributes].sort()).toEqual([...local.Projection!.NonKeyAttributes!].sort());
    }
    const attributes = table.Properties['AttributeDefinitions'] as { AttributeName: string; AttributeType: string }[];
    expect([...attributes].sort((a, b) => a.AttributeName.localeCompare(b.AttributeName))).toEqual(
      [...TABLE_ATTRIBUTES].sort((a, b) => a.AttributeName!.localeCompare(b.AttributeName!)),
    );
  });

  it('can be destroyed with the stack for throwaway (e.g. LocalStack) deployments', () => {
    const { template } = synth({ removalPolicy: 'destroy' });
    template.hasResource('AWS::DynamoDB::Table', { DeletionPolicy: 'Delete', Properties: Match.objectLike({ DeletionProtectionEnabled: false }) });
    template.hasResource('AWS::S3::Bucket', { DeletionPolicy: 'Delete' });
  });
});

describe('JWT key', () => {
  it('defaults to a Secrets Manager secret whose value AWS generates, so no key is ever in the template', () => {
    const { template } = synth();
    template.hasResourceProperties('AWS::SecretsManager::Secret', {
      GenerateSecretString: { PasswordLength: 64, ExcludePunctuation: true, IncludeSpace: false },
      SecretString: Match.absent(),
    });
    template.hasResource('AWS::SecretsManager::Secret', { DeletionPolicy: 'Retain' });
  });

  it('rejects ambiguous or partial key configuration at synth time', () => {
    expect(() => build({ jwtSecretArn: SECRET_ARN, jwksUrl: 'https://issuer.example/jwks.json' })).toThrow(/mutually exclusive/);
    expect(() => build({ jwtSecretArn: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:gateway/jwt' })).toThrow(/complete Secrets Manager ARN/);
    expect(() => build({ jwksUrl: 'http://issuer.example/jwks.json' })).toThrow(/https/);
    expect(() => build({ jwtAlgorithms: 'RS256' })).toThrow(/jwtAlgorithms/);
  });
});

describe('alarms and dashboard', () => {
  it('alarm on API 5xx rate and p99 latency, per-function errors, throttles and p99 duration, and DynamoDB throttles', () => {
    const { template } = synth();
    const alarms = Object.values(template.findResources('AWS::CloudWatch::Alarm')) as Json[];
    expect(alarms).toHaveLength(2 + 3 * (ROUTES.length + 1 + PUBLIC_ROUTES.length) + 1 + 1 + 1 + 1);
    const summary = alarms
      .map((a) => {
        const p = a.Properties;
        if (p.MetricName) return `${p.MetricName}:${p.ExtendedStatistic ?? p.Statistic}`;
        const stats = (p.Metrics as Json[]).filter((m) => m.MetricStat).map((m) => m.MetricStat);
        const isExpression = (p.Metrics as Json[]).some((m) => m.Expression);
        return `${stats.map((m) => m.Metric.MetricName).sort().join('+')}:${isExpression ? 'expr' : stats[0].Stat}`;
      })
      .sort();
    expect(summary).toEqual(
      [
        '5xx+Count:expr',
        'Latency:p99',
        'ReadThrottleEvents+WriteThrottleEvents:expr',
        'IntegrityFailures:Sum',
        ...[...ROUTES, CONSOLE_ROUTE, ...PUBLIC_ROUTES].flatMap(() => ['Errors:Sum', 'Throttles:Sum', 'Duration:p99']),
        'Errors:Sum', // the reconciler
        'Errors:Sum', // the retention pass
      ].sort(),
    );
    for (const a of alarms) expect(a.Properties.TreatMissingData).toBe('notBreaching');
    template.resourceCountIs('AWS::CloudWatch::Dashboard', 1);
    template.resourceCountIs('AWS::SNS::Topic', 0);
  });

  it('notify an SNS topic with an email subscription when alarmEmail is set', () => {
    const { template } = synth({ alarmEmail: 'oncall@example.com' });
    const topicId = logicalIdOf(template, 'AWS::SNS::Topic', 'AlarmTopic');
    template.hasResourceProperties('AWS::SNS::Subscription', { Protocol: 'email', Endpoint: 'oncall@example.com', TopicArn: { Ref: topicId } });
    template.allResourcesProperties('AWS::CloudWatch::Alarm', { AlarmActions: [{ Ref: topicId }], OKActions: [{ Ref: topicId }] });
    template.hasResourceProperties('AWS::SNS::TopicPolicy', {
      PolicyDocument: { Statement: Match.arrayWith([Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } })]) },
    });
  });
});

describe('outputs', () => {
  it('export the API base URL without a trailing slash, the bucket, the table and the secret', () => {
    const { template } = synth();
    template.hasOutput('GatewayUrl', { Value: { 'Fn::GetAtt': [logicalIdOf(template, 'AWS::ApiGatewayV2::Api', 'HttpApi'), 'ApiEndpoint'] } });
    template.hasOutput('BucketName', { Value: { Ref: bucketId(template) } });
    template.hasOutput('TableName', { Value: { Ref: tableId(template) } });
    const api = logicalIdOf(template, 'AWS::ApiGatewayV2::Api', 'HttpApi');
    template.hasOutput('OpenApiUrl', { Value: { 'Fn::Join': ['', [{ 'Fn::GetAtt': [api, 'ApiEndpoint'] }, '/openapi.json']] } });
    template.hasOutput('JwtSecretArn', { Value: { Ref: logicalIdOf(template, 'AWS::SecretsManager::Secret', 'JwtSigningSecret') } });
  });
});

describe('cdk-nag AwsSolutions', () => {
  const configs: Record<string, Record<string, unknown>> = {
    default: {},
    'kms bucket, alarm email, existing secret': { bucketEncryption: 'kms', alarmEmail: 'oncall@example.com', jwtSecretArn: SECRET_ARN, jwtSecretKmsKeyArn: KMS_KEY_ARN },
    'jwks, alarm topic, no access logs': { jwksUrl: 'https://issuer.example/jwks.json', alarmTopicArn: 'arn:aws:sns:eu-west-1:123456789012:ops', s3AccessLogs: false },
  };

  for (const [name, context] of Object.entries(configs)) {
    it(`reports no unacknowledged errors or warnings (${name})`, () => {
      const { app } = synth(context);
      expect(nagViolations(app)).toEqual([]);
    });
  }

  it('fails nothing when registered as a validation plugin and the app is synthesized', () => {
    const { app } = build();
    Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
    expect(() => app.synth()).not.toThrow();
  });

  it('acknowledges only the expected findings, each with a written reason', () => {
    const { app, template } = synth({ alarmEmail: 'oncall@example.com' });
    const acks = acknowledgements(app);
    for (const a of acks) expect(a.reason.length, `${a.id} at ${a.path}`).toBeGreaterThan(60);
    // The construct's id is `Default` (left out of logical ids, so they stay what they were).
    const ids = acks.map((a) => `${a.path.replace(/^TranscriptStore\/Default\//, '')} ${a.id.replace(/^Annotation::/, '')}`).sort();
    const bucket = bucketId(template);
    expect(ids).toEqual(
      [
        'AccessLogsBucket AwsSolutions-S1',
        'HttpApi AwsSolutions-APIG4',
        'JwtSigningSecret AwsSolutions-SMG4',
        'AlarmTopic AwsSolutions-SNS2',
        ...[...ROUTES, RECONCILER, RETENTION, CONSOLE_ROUTE, ...PUBLIC_ROUTES].flatMap((r) => [
          `${r.id} AwsSolutions-L1`,
          `${r.id}Role AwsSolutions-IAM5[Resource::*]`,
          ...r.access.objects.map((o) => `${r.id}Role AwsSolutions-IAM5[Resource::<${bucket}.Arn>/${o.prefix}*]`),
        ]),
      ].sort(),
    );
  });
});
