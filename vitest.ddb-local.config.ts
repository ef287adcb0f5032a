/**
 * `npm run test:ddb-local`: the integration, fault, load and worker-client suites with DynamoDB on AWS's
 * own emulator (DynamoDB Local, started once for the run by test/ddb-local/global-setup.ts) instead of
 * dynalite; S3 stays on the embedded s3rver. Every service instance gets a table of its own.
 */
import { configDefaults, defineConfig } from 'vitest/config';
import base from './vitest.config.js';

export default defineConfig({
  ...base,
  test: {
    ...base.test,
    include: [
      'test/integration/**/*.test.ts',
      'test/faults/**/*.test.ts',
      'test/load/**/*.test.ts',
      'test/worker-client/**/*.test.ts',
      // Erasure and retention interleavings: they hinge on conditional writes, whose failures DynamoDB Local
      // answers with the item (ReturnValuesOnConditionCheckFailure) where dynalite does not.
      'test/adversarial/erasure-*.test.ts',
      'test/adversarial/retention-*.test.ts',
    ],
    // Packaging and the CLI's command line: nothing there depends on which DynamoDB answers.
    exclude: [...configDefaults.exclude, 'test/worker-client/package.test.ts', 'test/worker-client/cli.test.ts'],
    globalSetup: ['test/ddb-local/global-setup.ts'],
    setupFiles: ['test/ddb-local/setup-env.ts'],
  },
});
