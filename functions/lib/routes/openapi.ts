import { createHash } from 'node:crypto';
import type { Logger } from '@aws-lambda-powertools/logger';
import { JSON_CONTENT_TYPE, OPENAPI_PATH } from '../contract.js';
import { header, httpHandler, type LambdaHttpHandler } from '../http.js';
import { etagMatches } from '../negotiation.js';
import { openApiDocument } from '../openapi.js';

/**
 * `GET /openapi.json` — the OpenAPI 3.1 document of every route (openapi.ts): `200` JSON with a strong
 * `etag` (`"<sha256 of the JSON>"`) and `cache-control: no-cache`, `304` on a matching `If-None-Match`.
 * No token, no storage (it is given only a logger); the document is built once, when the route is made.
 */
export function openApiRoute(logger: Logger): LambdaHttpHandler {
  const body = JSON.stringify(openApiDocument());
  const sha256 = createHash('sha256').update(body).digest('hex');
  const headers = { 'cache-control': 'no-cache', etag: `"${sha256}"` };
  return httpHandler(`GET ${OPENAPI_PATH}`, logger, async (event) => {
    if (etagMatches(header(event, 'if-none-match'), sha256)) return { statusCode: 304, headers };
    return { statusCode: 200, headers: { ...headers, 'content-type': JSON_CONTENT_TYPE }, body };
  });
}
