import { Logger } from '@aws-lambda-powertools/logger';
import { createClients, secretsManagerLoader } from './aws.js';
import { loadConfig } from './config.js';
import { createRouteDeps, type RouteDeps } from './routes/deps.js';

/**
 * Production wiring, evaluated once per cold start by each handler module. Reading the config here
 * (not per request) makes a misconfigured function fail at init, naming the missing variable.
 * SDK clients live at module scope and are reused by warm invocations. Each entry point passes these
 * deps to its own route factory only, so its bundle holds only that route.
 */
const config = loadConfig();
const logger = new Logger({ serviceName: process.env['POWERTOOLS_SERVICE_NAME'] ?? 'transcript-store' });

export const deps: RouteDeps = createRouteDeps(config, createClients(config), logger, secretsManagerLoader(config.region, config.secretMaxAgeSeconds));
