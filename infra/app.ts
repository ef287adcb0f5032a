/**
 * CDK entry point (`cdk.json`: `npx tsx infra/app.ts`). Settings come from context (README.md
 * § Configuration); unknown camelCase context keys and invalid values fail synth, naming the key.
 * Synth needs no AWS credentials and no network: the stack is environment-agnostic (no lookups) and
 * handlers are bundled by the local esbuild.
 */
import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { settingsFromContext } from './settings.js';
import { TranscriptStoreStack } from './stack.js';

const app = new App();
const { stackName, ...settings } = settingsFromContext(app.node);
new TranscriptStoreStack(app, 'TranscriptStore', {
  stackName,
  description: 'transcript-store: AI-agent transcript snapshots on S3 + DynamoDB behind an HTTP API',
  settings,
});
// Any unacknowledged AwsSolutions finding (error or warning) fails synthesis.
Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
app.synth();
