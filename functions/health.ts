import { Logger } from '@aws-lambda-powertools/logger';
import { healthRoute } from './lib/routes/health.js';

/**
 * `GET /health` — API Gateway HTTP API (payload v2) entry point. Needs no configuration, no secret and no
 * storage (its role may only write its logs): it must not import `lib/runtime.ts`, which reads the config.
 */
export const handler = healthRoute(new Logger({ serviceName: process.env['POWERTOOLS_SERVICE_NAME'] ?? 'transcript-store' }));
