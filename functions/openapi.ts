import { Logger } from '@aws-lambda-powertools/logger';
import { openApiRoute } from './lib/routes/openapi.js';

/**
 * `GET /openapi.json` — API Gateway HTTP API (payload v2) entry point. Needs no configuration, no secret and
 * no storage (its role may only write its logs): it must not import `lib/runtime.ts`, which reads the config.
 */
export const handler = openApiRoute(new Logger({ serviceName: process.env['POWERTOOLS_SERVICE_NAME'] ?? 'transcript-store' }));
