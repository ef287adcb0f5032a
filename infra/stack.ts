import { INDEX, INDEX_PROJECTION } from '../functions/lib/store/registry.js';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { Aws, CfnOutput, Duration, RemovalPolicy, Stack, Validations, type StackProps } from 'aws-cdk-lib';
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
import type { Construct } from 'constructs';
import { consoleAfterBundling, LAMBDA_BUNDLE, NODE_MAJOR } from './bundling.js';
import { Observability } from './observability.js';
import { CONSOLE_ASSETS_DIR, CONSOLE_ROUTE, MATERIALIZED_PREFIX, OPENAPI_ROUTE, PUBLIC_ROUTES, RECONCILER, RETENTION as RETENTION_JOB, ROUTES, UPLOADS_PREFIX, type JobSpec, type ObjectAction, type RouteAccess, type RouteSpec } from './routes.js';
import { DEFAULT_RETENTION } from '../functions/lib/store/retention-settings.js';
import type { StoreSettings } from './settings.js';

/** Repository root: handler entries in ROUTES and the lock file are relative to it. */
export const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));

export const SERVICE_NAME = 'transcript-store';

export interface TranscriptStoreStackProps extends StackProps {
  readonly settings: StoreSettings;
  /** Defaults to ROUTES; tests may pass a subset or an extra route. */
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

const RETENTION: Record<number, logs.RetentionDays> = Object.fromEntries(
  Object.values(logs.RetentionDays)
    .filter((v): v is logs.RetentionDays => typeof v === 'number')
    .map((v) => [v, v]),
);

type SecretGrant = { arn: string; kmsKeyArn: string | undefined };
type FunctionSpec = RouteSpec | JobSpec;
interface FunctionContext {
  settings: StoreSettings;
  retention: logs.RetentionDays;
  removalPolicy: RemovalPolicy;
  bucketKey: kms.IKey | undefined;
  secret: SecretGrant | undefined;
}

export class TranscriptStoreStack extends Stack {
  readonly api: apigwv2.HttpApi;
  readonly stage: apigwv2.HttpStage;
  readonly bucket: s3.Bucket;
  readonly table: dynamodb.Table;
  readonly functions: ReadonlyMap<string, NodejsFunction>;
  /** The scheduled orphan reconciler. */
  readonly reconciler: NodejsFunction;
  /** The scheduled retention pass. */
  readonly retention: NodejsFunction;
  /** The operator console's static files (no storage, no secret, no configuration). */
  readonly consoleFunction: NodejsFunction;
  /** `GET /health` and `GET /openapi.json` by route id (no storage, no secret, no configuration). */
  readonly publicFunctions: ReadonlyMap<string, NodejsFunction>;
  /** The secret holding the HS256 key, when one is used (created or given). */
  readonly jwtSecretArn: string | undefined;

  constructor(scope: Construct, id: string, props: TranscriptStoreStackProps) {
    super(scope, id, props);
    const settings = props.settings;
    const routes = props.routes ?? ROUTES;
    const removalPolicy = settings.removalPolicy === 'destroy' ? RemovalPolicy.DESTROY : RemovalPolicy.RETAIN;
    const retention = RETENTION[settings.logRetentionDays];
    if (retention === undefined) throw new Error(`Unsupported log retention: ${settings.logRetentionDays} days`);

    // ---------------------------------------------------------------- storage
    const bucketKey =
      settings.bucketEncryption === 'kms'
        ? new kms.Key(this, 'BucketKey', {
            description: `${SERVICE_NAME}: encrypts snapshot objects`,
            enableKeyRotation: true,
            removalPolicy,
          })
        : undefined;

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
        reason: 'Server access logging was switched off explicitly with the s3AccessLogs=false context setting (e.g. LocalStack or cost-sensitive dev stacks); use CloudTrail S3 data events if request-level audit is needed.',
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
    let secretGrant: { arn: string; kmsKeyArn: string | undefined } | undefined;
    const keySource = settings.jwt.keySource;
    if (keySource.kind === 'generatedSecret') {
      // The value is generated by Secrets Manager at deploy time; the template only holds the
      // generation rule. Operators replace it with their gateway's HS256 key (docs/DEPLOY.md).
      const secret = new secretsmanager.Secret(this, 'JwtSigningSecret', {
        description: `${SERVICE_NAME}: HS256 key that verifies worker JWTs (shared with the token issuer)`,
        generateSecretString: { passwordLength: 64, excludePunctuation: true, includeSpace: false },
        removalPolicy,
      });
      Validations.of(secret).acknowledge({
        id: 'AwsSolutions-SMG4',
        reason:
          'HS256 key shared with the external gateway that signs worker tokens; rotating it must be coordinated with that issuer, so it is rotated manually (docs/DEPLOY.md), not by a rotation Lambda.',
      });
      secretGrant = { arn: secret.secretArn, kmsKeyArn: undefined };
    } else if (keySource.kind === 'secretArn') {
      secretGrant = { arn: keySource.arn, kmsKeyArn: keySource.kmsKeyArn };
    } else {
      jwtEnv.JWKS_URL = keySource.url;
    }
    if (secretGrant) jwtEnv.JWT_SECRET_ARN = secretGrant.arn;
    this.jwtSecretArn = secretGrant?.arn;
    if (settings.jwt.issuer) jwtEnv.JWT_ISSUER = settings.jwt.issuer;
    if (settings.jwt.audience) jwtEnv.JWT_AUDIENCE = settings.jwt.audience;
    if (settings.jwt.algorithms) jwtEnv.JWT_ALGORITHMS = settings.jwt.algorithms;

    const storageEnvironment: Record<string, string> = {
      BUCKET_NAME: this.bucket.bucketName,
      TABLE_NAME: this.table.tableName,
      POWERTOOLS_SERVICE_NAME: SERVICE_NAME,
      POWERTOOLS_LOG_LEVEL: settings.logLevel,
      NODE_OPTIONS: '--enable-source-maps',
    };
    const environment: Record<string, string> = {
      ...storageEnvironment,
      ...jwtEnv,
      ...(settings.maxSnapshotBytes !== undefined ? { MAX_SNAPSHOT_BYTES: String(settings.maxSnapshotBytes) } : {}),
      // The write path stamps runs that did not complete with their DynamoDB TTL (RETAIN_FAILED_DAYS + 1 day).
      ...(settings.retainFailedDays !== DEFAULT_RETENTION.retainFailedDays ? { RETAIN_FAILED_DAYS: String(settings.retainFailedDays) } : {}),
    };

    // ---------------------------------------------------------------- functions
    const makeFunction = (spec: FunctionSpec, env: Record<string, string>, secret: SecretGrant | undefined) =>
      this.createFunction(spec, env, { settings, retention, removalPolicy, bucketKey, secret });
    // Upload ids and operator-API cursors are signed with a key derived from the HS256 secret; a JWKS
    // deployment has no shared secret, so the routes that sign get one of their own (generated, never in
    // the template).
    let uploadIdSecret: SecretGrant | undefined;
    if (keySource.kind === 'jwks' && routes.some(signs)) {
      const secret = new secretsmanager.Secret(this, 'UploadIdSecret', {
        description: `${SERVICE_NAME}: HMAC key that signs presigned-upload ids and operator-API cursors`,
        generateSecretString: { passwordLength: 64, excludePunctuation: true, includeSpace: false },
        removalPolicy,
      });
      Validations.of(secret).acknowledge({
        id: 'AwsSolutions-SMG4',
        reason: 'Signs short-lived upload ids (valid for PRESIGN_TTL_SECONDS) and operator-API listing cursors; rotating it only invalidates uploads and cursors in flight, so it is rotated manually (docs/DEPLOY.md) rather than by a rotation Lambda.',
      });
      uploadIdSecret = { arn: secret.secretArn, kmsKeyArn: undefined };
    }
    const functions = new Map<string, NodejsFunction>();
    for (const route of routes) {
      const own = signs(route) ? uploadIdSecret : undefined;
      functions.set(route.id, makeFunction(route, own ? { ...environment, UPLOAD_ID_SECRET_ARN: own.arn } : environment, own ?? secretGrant));
    }
    this.functions = functions;

    // The orphan reconciler needs storage only: no JWT key, no secret.
    this.reconciler = makeFunction(RECONCILER, { ...storageEnvironment, ORPHAN_GRACE_SECONDS: String(settings.orphanGraceSeconds) }, undefined);
    new events.Rule(this, 'ReconcilerSchedule', {
      description: `${SERVICE_NAME}: delete orphaned snapshot objects every ${RECONCILER.everyMinutes} minutes`,
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
      description: `${SERVICE_NAME}: delete runs the retention settings no longer keep, every ${retentionJob.everyMinutes} minutes`,
      schedule: events.Schedule.rate(Duration.minutes(retentionJob.everyMinutes)),
      // A failed pass is retried by the next one (what failed stays due).
      targets: [new targets.LambdaFunction(this.retention, { retryAttempts: 0 })],
    });
    // The operator console: static files built from console/ by a bundling hook; nothing else.
    const publicEnvironment = { POWERTOOLS_SERVICE_NAME: SERVICE_NAME, POWERTOOLS_LOG_LEVEL: settings.logLevel, NODE_OPTIONS: '--enable-source-maps' };
    this.consoleFunction = this.createFunction(
      CONSOLE_ROUTE,
      publicEnvironment,
      { settings, retention, removalPolicy, bucketKey, secret: undefined },
      (inputDir, outputDir) => consoleAfterBundling(inputDir, outputDir, CONSOLE_ASSETS_DIR),
    );
    // Health and the OpenAPI document: code only; no storage, no secret, no configuration.
    this.publicFunctions = new Map(
      PUBLIC_ROUTES.map((route) => [route.id, this.createFunction(route, publicEnvironment, { settings, retention, removalPolicy, bucketKey, secret: undefined })]),
    );

    // ---------------------------------------------------------------- HTTP API
    const accessLogGroup = new logs.LogGroup(this, 'ApiAccessLogs', { retention, removalPolicy });
    this.api = new apigwv2.HttpApi(this, 'HttpApi', {
      description: `${SERVICE_NAME}: worker transcript snapshots`,
      // The $default stage is created below, with access logs and throttling.
      createDefaultStage: false,
    });
    Validations.of(this.api).acknowledge({
      id: 'AwsSolutions-APIG4',
      reason:
        'Every handler verifies the worker or admin JWT itself (jose, explicit algorithm allowlist, exp/iat required) before any storage call; HTTP API JWT authorizers cannot verify the HS256 shared-secret tokens existing gateways issue. The console routes serve public static files only (the app sends the operator token to the admin routes); /health and /openapi.json answer constant public data and have no storage access.',
    });
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
      const fn = functions.get(route.id) ?? this.publicFunctions.get(route.id)!;
      this.api.addRoutes({
        path: route.path,
        methods: [apigwv2.HttpMethod[route.method]],
        integration: new HttpLambdaIntegration(`${route.id}Integration`, fn, {
          payloadFormatVersion: apigwv2.PayloadFormatVersion.VERSION_2_0,
        }),
      });
    }

    const consoleIntegration = new HttpLambdaIntegration(`${CONSOLE_ROUTE.id}Integration`, this.consoleFunction, {
      payloadFormatVersion: apigwv2.PayloadFormatVersion.VERSION_2_0,
    });
    for (const path of [CONSOLE_ROUTE.path, CONSOLE_ROUTE.assetPath]) {
      this.api.addRoutes({ path, methods: [apigwv2.HttpMethod.GET], integration: consoleIntegration });
    }

    // ---------------------------------------------------------------- alarms & dashboard
    let alarmTopic: sns.ITopic | undefined;
    if (settings.alarmTopicArn) {
      alarmTopic = sns.Topic.fromTopicArn(this, 'AlarmTopic', settings.alarmTopicArn);
    } else if (settings.alarmEmail) {
      const topic = new sns.Topic(this, 'AlarmTopic', { displayName: `${SERVICE_NAME} alarms`, enforceSSL: true });
      topic.addSubscription(new subscriptions.EmailSubscription(settings.alarmEmail));
      Validations.of(topic).acknowledge({
        id: 'AwsSolutions-SNS2',
        reason:
          'Alarm notifications carry only alarm names and metric values, no customer data; CloudWatch cannot publish to a topic encrypted with the AWS-managed aws/sns key. Pass alarmTopicArn to use your own CMK-encrypted topic.',
      });
      alarmTopic = topic;
    }
    new Observability(this, 'Observability', {
      api: this.api,
      table: this.table,
      functions: [
        ...routes.map((r) => ({ route: r, fn: functions.get(r.id)! })),
        { route: CONSOLE_ROUTE, fn: this.consoleFunction },
        ...PUBLIC_ROUTES.map((r) => ({ route: r, fn: this.publicFunctions.get(r.id)! })),
      ],
      alarmTopic,
      api5xxRatePercent: settings.api5xxRatePercent,
      apiLatencyP99Ms: settings.apiLatencyP99Ms,
    });

    const reconcilerErrors = new cloudwatch.Alarm(this, 'ReconcilerErrors', {
      alarmDescription: `${SERVICE_NAME}: the orphan reconciler failed (it resumes on its next run; orphans only cost storage)`,
      metric: this.reconciler.metricErrors({ period: Duration.hours(6), statistic: cloudwatch.Stats.SUM }),
      threshold: 1,
      evaluationPeriods: 2,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    if (alarmTopic) {
      reconcilerErrors.addAlarmAction(new cw_actions.SnsAction(alarmTopic));
      reconcilerErrors.addOkAction(new cw_actions.SnsAction(alarmTopic));
    }

    const retentionErrors = new cloudwatch.Alarm(this, 'RetentionErrors', {
      alarmDescription: `${SERVICE_NAME}: the retention pass failed twice in a row (what failed stays due and is retried; until then it only costs storage)`,
      metric: this.retention.metricErrors({ period: Duration.minutes(Math.max(5, retentionJob.everyMinutes)), statistic: cloudwatch.Stats.SUM }),
      threshold: 1,
      evaluationPeriods: 2,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    if (alarmTopic) {
      retentionErrors.addAlarmAction(new cw_actions.SnsAction(alarmTopic));
      retentionErrors.addOkAction(new cw_actions.SnsAction(alarmTopic));
    }

    // ---------------------------------------------------------------- outputs
    new CfnOutput(this, 'GatewayUrl', {
      // No trailing slash: workers build `${gatewayUrl}/worker/transcript/snapshot`.
      value: this.api.apiEndpoint,
      description: 'API base URL (the workers\' gatewayUrl); routes live under /worker/transcript/snapshot',
    });
    new CfnOutput(this, 'ConsoleUrl', {
      value: `${this.api.apiEndpoint}${CONSOLE_ROUTE.path}`,
      description: 'The operator console (sign in with an admin token: docs/DEPLOY.md)',
    });
    new CfnOutput(this, 'OpenApiUrl', {
      value: `${this.api.apiEndpoint}${OPENAPI_ROUTE.path}`,
      description: 'The OpenAPI 3.1 document of every route (no token)',
    });
    new CfnOutput(this, 'BucketName', { value: this.bucket.bucketName, description: 'S3 bucket holding snapshot objects' });
    new CfnOutput(this, 'TableName', { value: this.table.tableName, description: 'DynamoDB table with one record set per conversation' });
    if (this.jwtSecretArn) {
      new CfnOutput(this, 'JwtSecretArn', {
        value: this.jwtSecretArn,
        description: 'Secrets Manager secret the handlers read the HS256 JWT key from',
      });
    }
    if (alarmTopic) new CfnOutput(this, 'AlarmTopicArn', { value: alarmTopic.topicArn });
  }

  /** One function with its own role (exactly its statements), log group and cdk-nag acknowledgements. */
  private createFunction(
    spec: FunctionSpec,
    environment: Record<string, string>,
    ctx: FunctionContext,
    afterBundling?: (inputDir: string, outputDir: string) => string[],
  ): NodejsFunction {
    const { settings, retention, removalPolicy, bucketKey, secret } = ctx;
    const role = new iam.Role(this, `${spec.id}Role`, {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      description: `${SERVICE_NAME}: ${'method' in spec ? `${spec.method} ${spec.path}` : spec.description}`,
    });
    const logGroup = new logs.LogGroup(this, `${spec.id}Logs`, { retention, removalPolicy });
    // Instead of the AWSLambdaBasicExecutionRole managed policy (logs:* on every log group).
    logGroup.grantWrite(role);

    for (const statement of this.accessStatements(spec.access, bucketKey, secret)) role.addToPolicy(statement);
    const bucketLogicalId = this.getLogicalId(this.bucket.node.defaultChild as s3.CfnBucket);
    for (const { prefix } of spec.access.objects) {
      Validations.of(role).acknowledge({
        id: `AwsSolutions-IAM5[Resource::<${bucketLogicalId}.Arn>/${prefix}*]`,
        reason: `Object keys embed per-conversation ids and a content hash, so no fixed ARN exists; access is confined to the ${prefix} prefix and to the listed object actions (no wildcard actions).`,
      });
    }

    const fn = new NodejsFunction(this, spec.id, {
      description: `${SERVICE_NAME}: ${spec.description}`,
      entry: path.join(REPO_ROOT, spec.entry),
      handler: 'handler',
      projectRoot: REPO_ROOT,
      depsLockFilePath: path.join(REPO_ROOT, 'package-lock.json'),
      runtime: lambda.Runtime.NODEJS_22_X,
      architecture: lambda.Architecture.ARM_64,
      memorySize: settings.lambdaMemoryMb,
      timeout: Duration.seconds(spec.timeoutSeconds),
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
      statements.push(
        new iam.PolicyStatement({ actions: [...objects.actions], resources: [this.bucket.arnForObjects(`${objects.prefix}*`)] }),
      );
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
