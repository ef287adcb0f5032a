import { secretsManagerLoader } from './aws.js';
import { loadConfig } from './config.js';
import { lambdaRuntime } from './lambda-runtime.js';
import { createRouteDeps, type RouteDeps } from './routes/deps.js';

/**
 * Production wiring, evaluated once per cold start by each handler module. Reading the config here
 * (not per request) makes a misconfigured function fail at init, naming the missing variable.
 * SDK clients live at module scope and are reused by warm invocations; with active tracing (the stack turns it
 * on) every S3 and DynamoDB call is an X-Ray subsegment (lambda-runtime.ts). Each entry point passes these
 * deps to its own route factory only, so its bundle holds only that route.
 */
const config = loadConfig();
const { logger, clients, telemetry } = await lambdaRuntime(config);

export const deps: RouteDeps = {
  ...createRouteDeps(config, clients, logger, secretsManagerLoader(config.region, config.secretMaxAgeSeconds)),
  telemetry,
};
