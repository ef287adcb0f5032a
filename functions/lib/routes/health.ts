import type { Logger } from '@aws-lambda-powertools/logger';
import { HEALTH_PATH } from '../contract.js';
import { httpHandler, json, type LambdaHttpHandler } from '../http.js';
import { SERVICE_NAME, SERVICE_VERSION } from '../service-info.js';

/** The body of `GET /health`. */
export interface HealthBody {
  readonly status: 'ok';
  /** `package.json` `name`: `transcript-store`. */
  readonly service: string;
  /** `package.json` `version`. */
  readonly version: string;
}

/**
 * `GET /health` — liveness of the API and its functions: `200 {"status": "ok", "service", "version"}` with
 * `cache-control: no-store`. Checks no token and touches no storage (it is given none: only a logger), so it
 * costs no AWS call and tells nothing about any organization; storage health is what the alarms watch
 * (docs/DEPLOY.md). Never answers anything else.
 */
export function healthRoute(logger: Logger): LambdaHttpHandler {
  const body: HealthBody = Object.freeze({ status: 'ok', service: SERVICE_NAME, version: SERVICE_VERSION });
  return httpHandler(`GET ${HEALTH_PATH}`, logger, async () => json(200, body));
}
