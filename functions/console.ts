import { Logger } from '@aws-lambda-powertools/logger';
import { consoleRoute, loadConsoleAssets } from './lib/routes/console.js';

/**
 * `GET /console` and `GET /console/{asset}` — API Gateway HTTP API (payload v2) entry point. Needs no
 * configuration and no storage: the built files lie next to this bundle (`console/`, written by the
 * stack's bundling hook, infra/bundling.ts) and are read once per cold start.
 */
export const handler = consoleRoute(
  () => loadConsoleAssets(new URL('./console/', import.meta.url)),
  new Logger({ serviceName: process.env['POWERTOOLS_SERVICE_NAME'] ?? 'transcript-store' }),
);
