/**
 * The whole service as one reusable construct: put `TranscriptStore` into any stack of your own CDK app
 * (README.md § Use it in your own CDK app). This repository's stack (infra/stack.ts) is a thin wrapper
 * around it.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { Aws, Duration, RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import * as apigwv2 from 'aws-cdk-lib/aws-apigatewayv2';
import { HttpLambdaIntegration } from 'aws-cdk-lib/aws-apigatewayv2-integrations';
import { AccessLogFormat } from 'aws-cdk-lib/aws-apigateway';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cw_actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { NodejsFunction, OutputFormat } from 'aws-cdk-lib/aws-lambda-nodejs';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import { Construct } from 'constructs';
import { INDEX, INDEX_PROJECTION } from '../functions/lib/store/registry.js';
import { consoleAfterBundling, LAMBDA_BUNDLE, NODE_MAJOR } from './bundling.js';
import { METRICS_NAMESPACE, Observability, serviceMetric, type ServiceMetricName } from './observability.js';
import { CONSOLE_ASSETS_DIR, CONSOLE_ROUTE, MATERIALIZED_PREFIX, OPENAPI_ROUTE, PUBLIC_ROUTES, RECONCILER, RETENTION as RETENTION_JOB, ROUTES, UPLOADS_PREFIX, type JobSpec, type ObjectAction, type RouteAccess, type RouteSpec } from './routes.js';
import { DEFAULT_SETTINGS, jwtKeySource, resolveSettings, SETTING_VARIABLES, SettingsError, type NumericServiceSetting, type StoreSettings, type TranscriptStoreSettings } from './settings.js';

/** Repository root: handler entries in ROUTES and the lock file are relative to it. */
export const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));

/**
 * The CDK feature flags of this repository's `cdk.json` (`@aws-cdk/...`): the construct sets them on its
 * own subtree, so its resources render exactly as tested whatever flags the app around it has (e.g.
 * server access logs by bucket policy, not the ACL a bucket-owner-enforced bucket cannot have).
 */
export const FEATURE_FLAGS: Readonly<Record<string, unknown>> = Object.fromEntries(
  Object.entries((JSON.parse(readFileSync(path.join(REPO_ROOT, 'cdk.json'), 'utf8')) as { context: Record<string, unknown> }).context).filter(([key]) =>
    key.startsWith('@aws-cdk/'),
  ),
);

/** Default `serviceName`: the Powertools service of logs and metrics. */
export const SERVICE_NAME = DEFAULT_SETTINGS.serviceName;

/**
 * The numeric handler settings the route functions read. Each goes into their environment when it
 * differs from the handlers' default (the handlers apply the same default otherwise). The scheduled
 * functions read only the retention settings and always get those.
 */
const ROUTE_SETTINGS = [
  'jwtClockToleranceSeconds',
  'secretMaxAgeSeconds',
  'maxSnapshotBytes',
  'inlineResponseMaxBytes',
  'presignTtlSeconds',
  'maxUploadBytes',
  'multipartThresholdBytes',
  'multipartPartBytes',
  'chainMaxExtents',
  'chainMergeRatio',
  'requestDeadlineMs',
  'legacyFenceWindowSeconds',
  // The write path stamps runs that did not complete with their DynamoDB TTL (RETAIN_FAILED_DAYS + 1 day).
  'retainFailedDays',
] as const satisfies readonly NumericServiceSetting[];

/** Everything the construct takes: every setting (see TranscriptStoreSettings), and a few constructs. */
export interface TranscriptStoreProps extends TranscriptStoreSettings {
  /**
   * Your own SNS topic for every alarm (ALARM and OK). Mutually exclusive with `alarmEmail` and
   * `alarmTopicArn`, which do the same from plain values.
   */
  readonly alarmTopic?: sns.ITopic;
  /** The route table (default: infra/routes.ts `ROUTES`); tests pass a subset or an extra route. */
  readonly routes?: readonly RouteSpec[];
}

/** KMS actions S3 performs on the caller's behalf for each object action under SSE-KMS. */
const KMS_FOR_OBJECT_ACTION: Record<ObjectAction, string[]> = {
  's3:GetObject': ['kms:Decrypt'],
  // Decrypt too: multipart uploads (CreateMultipartUpload/UploadPart/Complete) to SSE-KMS need both.
  's3:PutObject': ['kms:GenerateDataKey', 'kms:Decrypt'],
  's3:DeleteObject': [],
};

/** Routes that need the service's signing key (upload ids, operator-API cursors). */
const signs = (route: RouteSpec): boolean => route.signsUploadIds === true || route.signsCursors === true;

const LOG_RETENTION: Record<number, logs.RetentionDays> = Object.fromEntries(
  Object.values(logs.RetentionDays)
    .filter((v): v is logs.RetentionDays => typeof v === 'number')
    .map((v) => [v, v]),
);

type SecretGrant = { arn: string; kmsKeyArn: string | undefined };
type FunctionSpec = RouteSpec | JobSpec;
interface FunctionContext {
  retention: logs.RetentionDays;
  removalPolicy: RemovalPolicy;
  bucketKey: kms.IKey | undefined;
  secret: SecretGrant | undefined;
}

const STORES = Symbol.for('transcript-store.TranscriptStore');

/**
 * transcript-store: the HTTP API (worker routes, operator API, console), one Lambda function per route
 * plus the scheduled reconciler and retention pass, the snapshot bucket and table, the JWT secret,
 * alarms and a dashboard. Every function has active X-Ray tracing, its own log group and a role with
 * exactly the calls its handler makes.
 *
 * Everything is exposed for your own grants and alarms: `bucket`, `table`, `api`/`stage`/`url`,
 * `functions` (by route id: `GetSnapshot`, …, `Reconciler`, `Retention`, `Console`), `alarms`,
 * `alarmTopic`, `dashboard`, `jwtSecret`, and `metric()` for the service's own metrics.
 *
 * Throws SettingsError (at synth) naming a setting that is wrong.
 */
export class TranscriptStore extends Construct {
  /** Settings in effect: every default applied. */
  readonly settings: StoreSettings;
  readonly api: apigwv2.HttpApi;
  /** The `$default` stage (access logs, throttling). */
  readonly stage: apigwv2.HttpStage;
  /** The API's base URL, without a trailing slash: the workers' `gatewayUrl`. */
  readonly url: string;
  /** The operator console's URL (`${url}/console`). */
  readonly consoleUrl: string;
  readonly bucket: s3.Bucket;
  readonly table: dynamodb.Table;
  /** The bucket's customer managed key, with `bucketEncryption: 'kms'`. */
  readonly bucketKey: kms.Key | undefined;
  /** Every function by id: one per route (ROUTES ids), `Reconciler`, `Retention` and `Console`. */
  readonly functions: ReadonlyMap<string, NodejsFunction>;
  /** The route functions only, by route id. */
  readonly routeFunctions: ReadonlyMap<string, NodejsFunction>;
  /** The scheduled orphan reconciler. */
  readonly reconciler: NodejsFunction;
  /** The scheduled retention pass. */
  readonly retention: NodejsFunction;
  /** The operator console's static files (no storage, no secret, no configuration). */
  readonly consoleFunction: NodejsFunction;
  /** `GET /health` and `GET /openapi.json` by route id (no storage, no secret, no configuration). */
  readonly publicFunctions: ReadonlyMap<string, NodejsFunction>;
  /** The OpenAPI 3.1 document of every route (`${url}/openapi.json`, no token). */
  readonly openApiUrl: string;
  /** The secret holding the HS256 key (created, or the one `jwtSecretArn` names); undefined with a JWKS. */
  readonly jwtSecret: secretsmanager.ISecret | undefined;
  /** Its ARN (complete, with suffix, when given; a reference to the created one otherwise). */
  readonly jwtSecretArn: string | undefined;
  /** Where every alarm notifies, when configured (`alarmTopic`, `alarmTopicArn` or `alarmEmail`). */
  readonly alarmTopic: sns.ITopic | undefined;
  /** Every alarm the construct creates (API, functions, DynamoDB, integrity, scheduled jobs). */
  readonly alarms: readonly cloudwatch.Alarm[];
  /** Fires on any `IntegrityFailures`: stored bytes did not match their record. */
  readonly integrityAlarm: cloudwatch.Alarm;
  readonly dashboard: cloudwatch.Dashboard;

  constructor(scope: Construct, id: string, props: TranscriptStoreProps = {}) {
    super(scope, id);
    for (const [flag, value] of Object.entries(FEATURE_FLAGS)) this.node.setContext(flag, value);
    Object.defineProperty(this, STORES, { value: true });
    const settings = resolveSettings(props);
    this.settings = settings;
    if (props.alarmTopic && (settings.alarmEmail || settings.alarmTopicArn)) {
      throw new SettingsError(settings.alarmEmail ? 'alarmEmail' : 'alarmTopicArn', 'and the "alarmTopic" prop are mutually exclusive');
    }
    // Metrics, alarms and the dashboard select the `service` dimension: two instances that share it
    // would count each other's failures. (Only this stack can be checked here; across stacks of one
    // account and region, give each its own serviceName.)
    const stack = Stack.of(this);
    const twin = stack.node
      .findAll()
      .find((c) => c !== this && (c as unknown as Record<symbol, unknown>)[STORES] === true && (c as TranscriptStore).settings?.serviceName === settings.serviceName);
    if (twin) {
      throw new SettingsError('serviceName', `"${settings.serviceName}" is already used by ${twin.node.path}: give each TranscriptStore in an account and region its own (metrics and alarms select it)`);
    }

    const routes = props.routes ?? ROUTES;
    const removalPolicy = settings.removalPolicy === 'destroy' ? RemovalPolicy.DESTROY : RemovalPolicy.RETAIN;
    const retention = LOG_RETENTION[settings.logRetentionDays];
    if (retention === undefined) throw new SettingsError('logRetentionDays', `unsupported by this aws-cdk-lib: ${settings.logRetentionDays}`);

    // ---------------------------------------------------------------- storage
    const bucketKey =
      settings.bucketEncryption === 'kms'
        ? new kms.Key(this, 'BucketKey', {
            description: `${settings.serviceName}: encrypts snapshot objects`,
            enableKeyRotation: true,
            removalPolicy,
          })
        : undefined;
    this.bucketKey = bucketKey;

    let accessLogsBucket: s3.Bucket | undefined;
    if (settings.s3AccessLogs) {
      accessLogsBucket = new s3.Bucket(this, 'AccessLogsBucket', {
        blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
        enforceSSL: true,
        minimumTLSVersion: 1.2,
        // S3 server access log delivery supports SSE-S3 only.
        encryption: s3.BucketEncryption.S3_MANAGED,
        objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        lifecycleRules: [{ id: 'expire-access-logs', expiration: Duration.days(365) }],
        removalPolicy,
      });
      Validations.of(accessLogsBucket).acknowledge({
        id: 'AwsSolutions-S1',
        reason: 'This is the server access log bucket itself; logging it into itself would loop and another log bucket would only move the finding.',
      });
    }

    this.bucket = new s3.Bucket(this, 'SnapshotBucket', {
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      enforceSSL: true,
      minimumTLSVersion: 1.2,
      encryption: bucketKey ? s3.BucketEncryption.KMS : s3.BucketEncryption.S3_MANAGED,
      ...(bucketKey ? { encryptionKey: bucketKey, bucketKeyEnabled: true } : {}),
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      ...(accessLogsBucket ? { serverAccessLogsBucket: accessLogsBucket, serverAccessLogsPrefix: 'snapshot-bucket/' } : {}),
      lifecycleRules: [
        // Committed snapshots under snapshots/ are referenced from DynamoDB and must never be
        // age-expired. Orphans there (a writer crashed between upload and commit) are removed by the
        // DELETE sweep. Presigned uploads that were never committed live under uploads/.
        { id: 'expire-uncommitted-uploads', prefix: UPLOADS_PREFIX, expiration: Duration.days(1) },
        // Materialized chain prefixes are caches for presigned redirects (the reconciler deletes them
        // past its grace); this is the backstop.
        { id: 'expire-materialized-copies', prefix: MATERIALIZED_PREFIX, expiration: Duration.days(1) },
        { id: 'abort-incomplete-multipart-uploads', abortIncompleteMultipartUploadAfter: Duration.days(1) },
      ],
      removalPolicy,
    });
    if (!accessLogsBucket) {
      Validations.of(this.bucket).acknowledge({
        id: 'AwsSolutions-S1',
        reason: 'Server access logging was switched off explicitly with the s3AccessLogs=false setting (e.g. LocalStack or cost-sensitive dev stacks); use CloudTrail S3 data events if request-level audit is needed.',
      });
    }

    this.table = new dynamodb.Table(this, 'SnapshotTable', {
      partitionKey: { name: 'pk', type: dynamodb.AttributeType.STRING },
      sortKey: { name: 'sk', type: dynamodb.AttributeType.STRING },
      billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      timeToLiveAttribute: 'expiresAt',
      deletionProtection: settings.removalPolicy === 'retain',
      removalPolicy,
    });
    // Sparse GSIs over registered HEAD items (docs/DESIGN.md § Retention, erasure and the operator API):
    // listing by organization and by agent, newest activity first, and the retention pass's work queue.
    for (const index of Object.values(INDEX)) {
      this.table.addGlobalSecondaryIndex({
        indexName: index.name,
        partitionKey: { name: index.partitionKey, type: dynamodb.AttributeType.STRING },
        sortKey: { name: index.sortKey, type: dynamodb.AttributeType.NUMBER },
        projectionType: dynamodb.ProjectionType.INCLUDE,
        nonKeyAttributes: [...INDEX_PROJECTION],
      });
    }

    // ---------------------------------------------------------------- JWT key source
    const jwtEnv: Record<string, string> = {};
    let secretGrant: SecretGrant | undefined;
    const keySource = jwtKeySource(settings);
    if (keySource.kind === 'generatedSecret') {
      // The value is generated by Secrets Manager at deploy time; the template only holds the
      // generation rule. Operators replace it with their gateway's HS256 key (docs/DEPLOY.md).
      const secret = new secretsmanager.Secret(this, 'JwtSigningSecret', {
        description: `${settings.serviceName}: HS256 key that verifies worker JWTs (shared with the token issuer)`,
        generateSecretString: { passwordLength: 64, excludePunctuation: true, includeSpace: false },
        removalPolicy,
      });
      Validations.of(secret).acknowledge({
        id: 'AwsSolutions-SMG4',
        reason:
          'HS256 key shared with the external gateway that signs worker tokens; rotating it must be coordinated with that issuer, so it is rotated manually (docs/DEPLOY.md), not by a rotation Lambda.',
      });
      this.jwtSecret = secret;
      secretGrant = { arn: secret.secretArn, kmsKeyArn: undefined };
    } else if (keySource.kind === 'secretArn') {
      this.jwtSecret = secretsmanager.Secret.fromSecretCompleteArn(this, 'JwtSecret', keySource.arn);
      secretGrant = { arn: keySource.arn, kmsKeyArn: keySource.kmsKeyArn };
    } else {
      this.jwtSecret = undefined;
      jwtEnv[SETTING_VARIABLES.jwksUrl] = keySource.url;
    }
    if (secretGrant) jwtEnv[SETTING_VARIABLES.jwtSecretArn] = secretGrant.arn;
    this.jwtSecretArn = secretGrant?.arn;
    if (settings.jwtIssuer) jwtEnv[SETTING_VARIABLES.jwtIssuer] = settings.jwtIssuer;
    if (settings.jwtAudience) jwtEnv[SETTING_VARIABLES.jwtAudience] = settings.jwtAudience;
    if (settings.jwtAlgorithms) jwtEnv[SETTING_VARIABLES.jwtAlgorithms] = settings.jwtAlgorithms;

    // What every function gets: Powertools' service (logs, the metrics' `service` dimension) and level;
    // traces never carry a handler's response (snapshot bytes, presigned URLs).
    const baseEnvironment: Record<string, string> = {
      POWERTOOLS_SERVICE_NAME: settings.serviceName,
      POWERTOOLS_LOG_LEVEL: settings.logLevel,
      POWERTOOLS_TRACER_CAPTURE_RESPONSE: 'false',
      NODE_OPTIONS: '--enable-source-maps',
    };
    const storageEnvironment: Record<string, string> = {
      ...baseEnvironment,
      BUCKET_NAME: this.bucket.bucketName,
      TABLE_NAME: this.table.tableName,
      POWERTOOLS_METRICS_NAMESPACE: METRICS_NAMESPACE,
    };
    const tuned = Object.fromEntries(
      ROUTE_SETTINGS.filter((key) => settings[key] !== DEFAULT_SETTINGS[key]).map((key) => [SETTING_VARIABLES[key], String(settings[key])]),
    );
    const environment: Record<string, string> = { ...storageEnvironment, ...jwtEnv, ...tuned };

    // ---------------------------------------------------------------- functions
    const context: FunctionContext = { retention, removalPolicy, bucketKey, secret: undefined };
    const makeFunction = (spec: FunctionSpec, env: Record<string, string>, secret: SecretGrant | undefined) =>
      this.createFunction(spec, env, { ...context, secret });
    // Upload ids and operator-API cursors are signed with a key derived from the HS256 secret; a JWKS
    // deployment has no shared secret, so the routes that sign get one of their own (generated, never in
    // the template).
    let uploadIdSecret: SecretGrant | undefined;
    if (keySource.kind === 'jwks' && routes.some(signs)) {
      const secret = new secretsmanager.Secret(this, 'UploadIdSecret', {
        description: `${settings.serviceName}: HMAC key that signs presigned-upload ids and operator-API cursors`,
        generateSecretString: { passwordLength: 64, excludePunctuation: true, includeSpace: false },
        removalPolicy,
      });
      Validations.of(secret).acknowledge({
        id: 'AwsSolutions-SMG4',
        reason: 'Signs short-lived upload ids (valid for PRESIGN_TTL_SECONDS) and operator-API listing cursors; rotating it only invalidates uploads and cursors in flight, so it is rotated manually (docs/DEPLOY.md) rather than by a rotation Lambda.',
      });
      uploadIdSecret = { arn: secret.secretArn, kmsKeyArn: undefined };
    }
    const routeFunctions = new Map<string, NodejsFunction>();
    for (const route of routes) {
      const own = signs(route) ? uploadIdSecret : undefined;
      routeFunctions.set(route.id, makeFunction(route, own ? { ...environment, UPLOAD_ID_SECRET_ARN: own.arn } : environment, own ?? secretGrant));
    }
    this.routeFunctions = routeFunctions;

    // The orphan reconciler needs storage only: no JWT key, no secret.
    this.reconciler = makeFunction(RECONCILER, { ...storageEnvironment, ORPHAN_GRACE_SECONDS: String(settings.orphanGraceSeconds) }, undefined);
    new events.Rule(this, 'ReconcilerSchedule', {
      description: `${settings.serviceName}: delete orphaned snapshot objects every ${RECONCILER.everyMinutes} minutes`,
      schedule: events.Schedule.rate(Duration.minutes(RECONCILER.everyMinutes)),
      // A failed run is simply retried by the next one (it resumes from its saved cursor).
      targets: [new targets.LambdaFunction(this.reconciler, { retryAttempts: 0 })],
    });

    // The retention pass: storage settings and what to keep, no JWT key, no secret.
    const retentionJob: JobSpec = { ...RETENTION_JOB, everyMinutes: settings.retentionIntervalMinutes };
    this.retention = makeFunction(
      retentionJob,
      {
        ...storageEnvironment,
        ORPHAN_GRACE_SECONDS: String(settings.orphanGraceSeconds),
        RETAIN_COMPLETED_RUNS: String(settings.retainCompletedRuns),
        RETAIN_FAILED_DAYS: String(settings.retainFailedDays),
        CONVERSATION_TTL_DAYS: String(settings.conversationTtlDays),
        RETENTION_INTERVAL_MINUTES: String(settings.retentionIntervalMinutes),
      },
      undefined,
    );
    new events.Rule(this, 'RetentionSchedule', {
      description: `${settings.serviceName}: delete runs the retention settings no longer keep, every ${retentionJob.everyMinutes} minutes`,
      schedule: events.Schedule.rate(Duration.minutes(retentionJob.everyMinutes)),
      // A failed pass is retried by the next one (what failed stays due).
      targets: [new targets.LambdaFunction(this.retention, { retryAttempts: 0 })],
    });
    // The operator console: static files built from console/ by a bundling hook; nothing else.
    this.consoleFunction = this.createFunction(CONSOLE_ROUTE, baseEnvironment, context, (inputDir, outputDir) =>
      consoleAfterBundling(inputDir, outputDir, CONSOLE_ASSETS_DIR),
    );
    // Health and the OpenAPI document: code only; no storage, no secret, no configuration.
    this.publicFunctions = new Map(PUBLIC_ROUTES.map((route) => [route.id, this.createFunction(route, baseEnvironment, context)]));
    this.functions = new Map([
      ...routeFunctions,
      [RECONCILER.id, this.reconciler],
      [RETENTION_JOB.id, this.retention],
      [CONSOLE_ROUTE.id, this.consoleFunction],
      ...this.publicFunctions,
    ]);

    // ---------------------------------------------------------------- HTTP API
    const accessLogGroup = new logs.LogGroup(this, 'ApiAccessLogs', { retention, removalPolicy });
    this.api = new apigwv2.HttpApi(this, 'HttpApi', {
      description: `${settings.serviceName}: worker transcript snapshots`,
      // The $default stage is created below, with access logs and throttling.
      createDefaultStage: false,
    });
    Validations.of(this.api).acknowledge({
      id: 'AwsSolutions-APIG4',
      reason:
        'Every handler verifies the worker or admin JWT itself (jose, explicit algorithm allowlist, exp/iat required) before any storage call; HTTP API JWT authorizers cannot verify the HS256 shared-secret tokens existing gateways issue. The console routes serve public static files only (the app sends the operator token to the admin routes); /health and /openapi.json answer constant public data and have no storage access.',
    });
    // No X-Ray here: API Gateway traces REST APIs only (HTTP API stages have no tracing setting); a
    // trace starts at the function (docs/DEPLOY.md § Observability).
    this.stage = this.api.addStage('DefaultStage', {
      stageName: '$default',
      autoDeploy: true,
      throttle: { rateLimit: settings.throttleRateLimit, burstLimit: settings.throttleBurstLimit },
      accessLogSettings: {
        destination: new apigwv2.LogGroupLogDestination(accessLogGroup),
        // No headers are logged, so the bearer token never reaches the logs.
        format: AccessLogFormat.custom(
          JSON.stringify({
            requestId: '$context.requestId',
            requestTime: '$context.requestTime',
            ip: '$context.identity.sourceIp',
            userAgent: '$context.identity.userAgent',
            routeKey: '$context.routeKey',
            status: '$context.status',
            protocol: '$context.protocol',
            responseLength: '$context.responseLength',
            responseLatency: '$context.responseLatency',
            integrationStatus: '$context.integrationStatus',
            integrationLatency: '$context.integrationLatency',
            integrationError: '$context.integrationErrorMessage',
            errorMessage: '$context.error.message',
          }),
        ),
      },
    });
    for (const route of [...routes, ...PUBLIC_ROUTES]) {
      this.api.addRoutes({
        path: route.path,
        methods: [apigwv2.HttpMethod[route.method]],
        integration: new HttpLambdaIntegration(`${route.id}Integration`, routeFunctions.get(route.id) ?? this.publicFunctions.get(route.id)!, {
          payloadFormatVersion: apigwv2.PayloadFormatVersion.VERSION_2_0,
        }),
      });
    }
    const consoleIntegration = new HttpLambdaIntegration(`${CONSOLE_ROUTE.id}Integration`, this.consoleFunction, {
      payloadFormatVersion: apigwv2.PayloadFormatVersion.VERSION_2_0,
    });
    for (const routePath of [CONSOLE_ROUTE.path, CONSOLE_ROUTE.assetPath]) {
      this.api.addRoutes({ path: routePath, methods: [apigwv2.HttpMethod.GET], integration: consoleIntegration });
    }
    this.url = this.api.apiEndpoint;
    this.consoleUrl = `${this.api.apiEndpoint}${CONSOLE_ROUTE.path}`;
    this.openApiUrl = `${this.api.apiEndpoint}${OPENAPI_ROUTE.path}`;

    // ---------------------------------------------------------------- alarms & dashboard
    let alarmTopic: sns.ITopic | undefined = props.alarmTopic;
    if (settings.alarmTopicArn) {
      alarmTopic = sns.Topic.fromTopicArn(this, 'AlarmTopic', settings.alarmTopicArn);
    } else if (settings.alarmEmail) {
      const topic = new sns.Topic(this, 'AlarmTopic', { displayName: `${settings.serviceName} alarms`, enforceSSL: true });
      topic.addSubscription(new subscriptions.EmailSubscription(settings.alarmEmail));
      Validations.of(topic).acknowledge({
        id: 'AwsSolutions-SNS2',
        reason:
          'Alarm notifications carry only alarm names and metric values, no customer data; CloudWatch cannot publish to a topic encrypted with the AWS-managed aws/sns key. Pass alarmTopicArn to use your own CMK-encrypted topic.',
      });
      alarmTopic = topic;
    }
    this.alarmTopic = alarmTopic;
    const observability = new Observability(this, 'Observability', {
      api: this.api,
      table: this.table,
      functions: [
        ...routes.map((r) => ({ route: r, fn: routeFunctions.get(r.id)! })),
        { route: CONSOLE_ROUTE, fn: this.consoleFunction },
        ...PUBLIC_ROUTES.map((r) => ({ route: r, fn: this.publicFunctions.get(r.id)! })),
      ],
      alarmTopic,
      serviceName: settings.serviceName,
      api5xxRatePercent: settings.api5xxRatePercent,
      apiLatencyP99Ms: settings.apiLatencyP99Ms,
    });
    this.dashboard = observability.dashboard;
    this.integrityAlarm = observability.integrityAlarm;

    const notify = (alarm: cloudwatch.Alarm) => {
      if (alarmTopic) {
        alarm.addAlarmAction(new cw_actions.SnsAction(alarmTopic));
        alarm.addOkAction(new cw_actions.SnsAction(alarmTopic));
      }
      return alarm;
    };
    const reconcilerErrors = notify(
      new cloudwatch.Alarm(this, 'ReconcilerErrors', {
        alarmDescription: `${settings.serviceName}: the orphan reconciler failed (it resumes on its next run; orphans only cost storage)`,
        metric: this.reconciler.metricErrors({ period: Duration.hours(6), statistic: cloudwatch.Stats.SUM }),
        threshold: 1,
        evaluationPeriods: 2,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      }),
    );
    const retentionErrors = notify(
      new cloudwatch.Alarm(this, 'RetentionErrors', {
        alarmDescription: `${settings.serviceName}: the retention pass failed twice in a row (what failed stays due and is retried; until then it only costs storage)`,
        metric: this.retention.metricErrors({ period: Duration.minutes(Math.max(5, retentionJob.everyMinutes)), statistic: cloudwatch.Stats.SUM }),
        threshold: 1,
        evaluationPeriods: 2,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      }),
    );
    this.alarms = [...observability.alarms, reconcilerErrors, retentionErrors];
  }

  /**
   * One of the service's own metrics (namespace `TranscriptStore`, this instance's `service` dimension,
   * plus `dimensions`, e.g. `{ status: '307' }` for `HydrateResponses`), for your own alarms and
   * dashboards. Sum over 5 minutes unless `props` say otherwise.
   */
  metric(name: ServiceMetricName, dimensions: Readonly<Record<string, string>> = {}, props: cloudwatch.MetricOptions = {}): cloudwatch.Metric {
    return serviceMetric(this.settings.serviceName, name, dimensions, props);
  }

  /** One function with its own role (exactly its statements), log group, tracing and cdk-nag acknowledgements. */
  private createFunction(
    spec: FunctionSpec,
    environment: Record<string, string>,
    ctx: FunctionContext,
    afterBundling?: (inputDir: string, outputDir: string) => string[],
  ): NodejsFunction {
    const { retention, removalPolicy, bucketKey, secret } = ctx;
    const settings = this.settings;
    const role = new iam.Role(this, `${spec.id}Role`, {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      description: `${settings.serviceName}: ${'method' in spec ? `${spec.method} ${spec.path}` : spec.description}`,
    });
    const logGroup = new logs.LogGroup(this, `${spec.id}Logs`, { retention, removalPolicy });
    // Instead of the AWSLambdaBasicExecutionRole managed policy (logs:* on every log group).
    logGroup.grantWrite(role);

    for (const statement of this.accessStatements(spec.access, bucketKey, secret)) role.addToPolicy(statement);
    const bucketLogicalId = Stack.of(this).getLogicalId(this.bucket.node.defaultChild as s3.CfnBucket);
    for (const { prefix } of spec.access.objects) {
      Validations.of(role).acknowledge({
        id: `AwsSolutions-IAM5[Resource::<${bucketLogicalId}.Arn>/${prefix}*]`,
        reason: `Object keys embed per-conversation ids and a content hash, so no fixed ARN exists; access is confined to the ${prefix} prefix and to the listed object actions (no wildcard actions).`,
      });
    }
    // Active tracing adds xray:PutTraceSegments and xray:PutTelemetryRecords on "*".
    Validations.of(role).acknowledge({
      id: 'AwsSolutions-IAM5[Resource::*]',
      reason: 'Only the two X-Ray actions active tracing needs (xray:PutTraceSegments, xray:PutTelemetryRecords), which support no resource-level permissions: AWS documents "*" as their only resource.',
    });

    const fn = new NodejsFunction(this, spec.id, {
      description: `${settings.serviceName}: ${spec.description}`,
      entry: path.join(REPO_ROOT, spec.entry),
      handler: 'handler',
      projectRoot: REPO_ROOT,
      depsLockFilePath: path.join(REPO_ROOT, 'package-lock.json'),
      runtime: lambda.Runtime.NODEJS_22_X,
      architecture: lambda.Architecture.ARM_64,
      memorySize: settings.lambdaMemoryMb,
      timeout: Duration.seconds(spec.timeoutSeconds),
      tracing: lambda.Tracing.ACTIVE,
      role,
      logGroup,
      environment,
      bundling: {
        format: OutputFormat.ESM,
        target: LAMBDA_BUNDLE.target,
        mainFields: [...LAMBDA_BUNDLE.mainFields],
        minify: LAMBDA_BUNDLE.minify,
        sourceMap: LAMBDA_BUNDLE.sourcemap,
        sourcesContent: LAMBDA_BUNDLE.sourcesContent,
        banner: LAMBDA_BUNDLE.banner,
        externalModules: [...LAMBDA_BUNDLE.external],
        ...(afterBundling && {
          commandHooks: { beforeBundling: () => [], beforeInstall: () => [], afterBundling },
        }),
      },
    });
    Validations.of(fn).acknowledge({
      id: 'AwsSolutions-L1',
      reason: `Pinned to Node.js ${NODE_MAJOR} on purpose: the bundles are built (esbuild target node${NODE_MAJOR}) and benchmarked for it; moving to a newer runtime is a deliberate, tested change.`,
    });
    return fn;
  }

  /** Exactly the calls the function's handler makes, each on the narrowest resource. */
  private accessStatements(access: RouteAccess, bucketKey: kms.IKey | undefined, secret: SecretGrant | undefined): iam.PolicyStatement[] {
    const statements: iam.PolicyStatement[] = [];
    if (access.table.length > 0) {
      statements.push(new iam.PolicyStatement({ actions: [...access.table], resources: [this.table.tableArn] }));
    }
    // An index has its own ARN: a grant on the table does not reach it (and one on `index/*` would reach all).
    for (const index of access.indexes ?? []) {
      statements.push(new iam.PolicyStatement({ actions: [...index.actions], resources: [`${this.table.tableArn}/index/${index.index}`] }));
    }
    for (const objects of access.objects) {
      statements.push(new iam.PolicyStatement({ actions: [...objects.actions], resources: [this.bucket.arnForObjects(`${objects.prefix}*`)] }));
    }
    if (access.listPrefixes && access.listPrefixes.length > 0) {
      statements.push(
        new iam.PolicyStatement({
          actions: ['s3:ListBucket'],
          resources: [this.bucket.bucketArn],
          conditions: { StringLike: { 's3:prefix': access.listPrefixes.map((p) => `${p}*`) } },
        }),
      );
    }
    if (bucketKey) {
      const kmsActions = [...new Set(access.objects.flatMap((o) => o.actions.flatMap((a) => KMS_FOR_OBJECT_ACTION[a])))];
      if (kmsActions.length > 0) {
        statements.push(
          new iam.PolicyStatement({
            actions: kmsActions.sort(),
            resources: [bucketKey.keyArn],
            conditions: { StringEquals: { 'kms:ViaService': `s3.${Aws.REGION}.amazonaws.com` } },
          }),
        );
      }
    }
    if (secret) {
      statements.push(new iam.PolicyStatement({ actions: ['secretsmanager:GetSecretValue'], resources: [secret.arn] }));
      if (secret.kmsKeyArn) {
        statements.push(
          new iam.PolicyStatement({
            actions: ['kms:Decrypt'],
            resources: [secret.kmsKeyArn],
            conditions: { StringEquals: { 'kms:ViaService': `secretsmanager.${Aws.REGION}.amazonaws.com` } },
          }),
        );
      }
    }
    return statements;
  }
}
