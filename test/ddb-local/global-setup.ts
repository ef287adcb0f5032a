/**
 * Global setup of `npm run test:ddb-local` (vitest.ddb-local.config.ts): one DynamoDB Local for the
 * whole run, its endpoint handed to every test file through `provide` (read by ./setup-env.ts). The
 * process is stopped by pid in the teardown, which vitest runs whether tests passed or failed; an exit
 * hook also kills it if the run is interrupted.
 */
import type { TestProject } from 'vitest/node';
import { javaProblem, startDynamoDbLocal } from './dynamodb-local.js';

declare module 'vitest' {
  export interface ProvidedContext {
    dynamodbLocalEndpoint: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const problem = javaProblem();
  if (problem !== undefined) throw new Error(`test:ddb-local: ${problem}`);
  const t0 = performance.now();
  const ddb = await startDynamoDbLocal();
  const onExit = () => {
    try {
      process.kill(ddb.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  };
  process.once('exit', onExit);
  console.log(`DynamoDB Local ready on ${ddb.endpoint} (pid ${ddb.pid}) in ${Math.round(performance.now() - t0)} ms`);
  project.provide('dynamodbLocalEndpoint', ddb.endpoint);
  return async () => {
    process.off('exit', onExit);
    await ddb.stop();
  };
}
