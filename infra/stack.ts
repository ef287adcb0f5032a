import { CfnOutput, Stack, type StackProps } from 'aws-cdk-lib';
import type * as apigwv2 from 'aws-cdk-lib/aws-apigatewayv2';
import type * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import type { NodejsFunction } from 'aws-cdk-lib/aws-lambda-nodejs';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import type { Construct } from 'constructs';
import { TranscriptStore } from './construct.js';
import type { RouteSpec } from './routes.js';
import type { TranscriptStoreSettings } from './settings.js';

export { REPO_ROOT, SERVICE_NAME } from './construct.js';

export interface TranscriptStoreStackProps extends StackProps {
  /** Every setting (README.md § Configuration); the app reads them from CDK context. Default: all defaults. */
  readonly settings?: TranscriptStoreSettings;
  /** Defaults to ROUTES; tests may pass a subset or an extra route. */
  readonly routes?: readonly RouteSpec[];
}

/**
 * This repository's stack: one {@link TranscriptStore} and the stack outputs.
 *
 * The construct's id is `Default`, which CDK leaves out of logical ids: every resource keeps the
 * logical id it had when the stack created them itself, so existing deployments update in place
 * (a changed logical id would replace the bucket and the table).
 */
export class TranscriptStoreStack extends Stack {
  readonly store: TranscriptStore;
  readonly api: apigwv2.HttpApi;
  readonly stage: apigwv2.HttpStage;
  readonly bucket: s3.Bucket;
  readonly table: dynamodb.Table;
  /** The route functions by route id. */
  readonly functions: ReadonlyMap<string, NodejsFunction>;
  readonly reconciler: NodejsFunction;
  readonly retention: NodejsFunction;
  readonly consoleFunction: NodejsFunction;
  readonly publicFunctions: ReadonlyMap<string, NodejsFunction>;
  readonly jwtSecretArn: string | undefined;

  constructor(scope: Construct, id: string, props: TranscriptStoreStackProps = {}) {
    super(scope, id, props);
    const store = new TranscriptStore(this, 'Default', { ...props.settings, ...(props.routes ? { routes: props.routes } : {}) });
    this.store = store;
    this.api = store.api;
    this.stage = store.stage;
    this.bucket = store.bucket;
    this.table = store.table;
    this.functions = store.routeFunctions;
    this.reconciler = store.reconciler;
    this.retention = store.retention;
    this.consoleFunction = store.consoleFunction;
    this.publicFunctions = store.publicFunctions;
    this.jwtSecretArn = store.jwtSecretArn;

    new CfnOutput(this, 'GatewayUrl', {
      // No trailing slash: workers build `${gatewayUrl}/worker/transcript/snapshot`.
      value: store.url,
      description: 'API base URL (the workers\' gatewayUrl); routes live under /worker/transcript/snapshot',
    });
    new CfnOutput(this, 'ConsoleUrl', {
      value: store.consoleUrl,
      description: 'The operator console (sign in with an admin token: docs/DEPLOY.md)',
    });
    new CfnOutput(this, 'OpenApiUrl', {
      value: store.openApiUrl,
      description: 'The OpenAPI 3.1 document of every route (no token)',
    });
    new CfnOutput(this, 'BucketName', { value: store.bucket.bucketName, description: 'S3 bucket holding snapshot objects' });
    new CfnOutput(this, 'TableName', { value: store.table.tableName, description: 'DynamoDB table with one record set per conversation' });
    if (store.jwtSecretArn) {
      new CfnOutput(this, 'JwtSecretArn', {
        value: store.jwtSecretArn,
        description: 'Secrets Manager secret the handlers read the HS256 JWT key from',
      });
    }
    if (store.alarmTopic) new CfnOutput(this, 'AlarmTopicArn', { value: store.alarmTopic.topicArn });
  }
}
