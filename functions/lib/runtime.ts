import { Logger } from '@aws-lambda-powertools/logger';
import { Tracer } from '@aws-lambda-powertools/tracer';
import { createClients, secretsManagerLoader } from './aws.js';
import { loadConfig } from './config.js';
import { createRouteDeps, type RouteDeps } from './routes/deps.js';
import { powertoolsTelemetry } from './telemetry.js';

/**
 * Production wiring, evaluated once per cold start by each handler module. Reading the config here
 * (not per request) makes a misconfigured function fail at init, naming the missing variable.
 * SDK clients live at module scope and are reused by warm invocations; with active tracing (the stack turns it
 * on) every S3 and DynamoDB call is an X-Ray subsegment (Powertools Tracer). Each entry point passes these
 * deps to its own route factory only, so its bundle holds only that route.
 */
const config = loadConfig();
const serviceName = process.env['POWERTOOLS_SERVICE_NAME'] ?? 'transcript-store';
const logger = new Logger({ serviceName });
export const tracer = new Tracer({ serviceName });
const clients = createClients(config);
tracer.captureAWSv3Client(clients.s3);
tracer.captureAWSv3Client(clients.ddb);

export const deps: RouteDeps = {
  ...createRouteDeps(config, clients, logger, secretsManagerLoader(config.region, config.secretMaxAgeSeconds)),
  telemetry: await powertoolsTelemetry(serviceName),
};
