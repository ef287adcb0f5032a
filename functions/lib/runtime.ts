import { Logger } from '@aws-lambda-powertools/logger';
import { createApp, type Routes } from './app.js';
import { createClients, loadSecretFromSecretsManager } from './aws.js';
import { loadConfig } from './config.js';

/**
 * Production wiring, evaluated once per cold start by each handler module. Reading the config here
 * (not per request) makes a misconfigured function fail at init, naming the missing variable.
 * SDK clients live at module scope and are reused by warm invocations.
 */
const config = loadConfig();
const logger = new Logger({ serviceName: process.env['POWERTOOLS_SERVICE_NAME'] ?? 'transcript-store' });

export const { routes }: { routes: Routes } = createApp(config, createClients(config), logger, (arn) =>
  loadSecretFromSecretsManager(config.region, arn),
);
