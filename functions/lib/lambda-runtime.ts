import type { Context } from 'aws-lambda';
import { Logger } from '@aws-lambda-powertools/logger';
import { Tracer } from '@aws-lambda-powertools/tracer';
import { createClients, type Clients } from './aws.js';
import type { StorageConfig } from './config.js';
import { powertoolsTelemetry, type Telemetry } from './telemetry.js';

/**
 * What every Lambda function shares: the route functions (runtime.ts) and the scheduled ones (reconciler,
 * retention).
 */
export interface LambdaRuntime {
  readonly logger: Logger;
  /** SDK clients, each S3 and DynamoDB call an X-Ray subsegment (Powertools Tracer). */
  readonly clients: Clients;
  readonly telemetry: Telemetry;
  /** Puts the Lambda context on every log line of this invocation (when it is a real Lambda context). */
  addContext(context: Partial<Context> | undefined): void;
  /** The deadline of this invocation: its remaining time minus `reserveMs` (at least 1 s from now), epoch ms. */
  deadlineAt(context: Partial<Context> | undefined, reserveMs: number): number;
}

/** Production wiring of a function, once per cold start: logger, traced SDK clients, metrics. */
export async function lambdaRuntime(config: StorageConfig): Promise<LambdaRuntime> {
  const serviceName = process.env['POWERTOOLS_SERVICE_NAME'] ?? 'transcript-store';
  const logger = new Logger({ serviceName });
  const clients = createClients(config);
  const tracer = new Tracer({ serviceName });
  tracer.captureAWSv3Client(clients.s3);
  tracer.captureAWSv3Client(clients.ddb);
  return {
    logger,
    clients,
    telemetry: await powertoolsTelemetry(serviceName),
    addContext(context) {
      if (context?.awsRequestId !== undefined && context.functionName !== undefined) logger.addContext(context as Context);
    },
    deadlineAt(context, reserveMs) {
      const remaining = context?.getRemainingTimeInMillis?.() ?? 60_000;
      return Date.now() + Math.max(1_000, remaining - reserveMs);
    },
  };
}
