import { header, httpHandler, json, type LambdaHttpHandler } from '../http.js';
import { clearConversation } from '../store/clear.js';
import { handlerOptions, scopeFields, type RouteDeps } from './deps.js';

/** `DELETE /worker/transcript/snapshot` — reset the conversation: `200 {"deleted": n}`, idempotent. */
export function deleteSnapshotRoute(deps: RouteDeps): LambdaHttpHandler {
  return httpHandler('DELETE /worker/transcript/snapshot', deps.logger, async (event, ctx) => {
    const scope = await deps.verify(header(event, 'authorization'));
    ctx.fields = scopeFields(scope);
    const { deleted } = await clearConversation(deps.store, scope, { signal: ctx.signal });
    ctx.fields['deleted'] = deleted;
    return json(200, { deleted });
  }, handlerOptions(deps));
}
