/**
 * Hostile request bodies end to end (docs/DESIGN.md § HTTP contract, POST order): oversized, malformed, non-UTF-8,
 * prototype-pollution keys, wrong types. Each gets its documented 4xx — never a 500 — and the store
 * is unchanged (every S3 key and DynamoDB item identical; the conversation's snapshot still served).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { ERRORS, type ErrorSpec } from '../../functions/lib/contract.js';
import { LAMBDA_PAYLOAD_LIMIT } from '../../local/adapter.js';
import { freshScope, useLocalService, type Scope } from '../helpers/service.js';
import { expectError, storeFingerprint } from './support.js';

const MAX = 64 * 1024;
const ORIGINAL = '{"type":"message","text":"original"}\n';

describe('hostile POST bodies', () => {
  const ctx = useLocalService({ env: { ...process.env, MAX_SNAPSHOT_BYTES: String(MAX) } });
  let scope: Scope;
  let token: string;
  beforeAll(async () => {
    scope = freshScope('bodies');
    expect((await ctx.api.write(scope, 1, ORIGINAL)).status).toBe(200);
    token = await ctx.api.token(scope, { runId: 2 });
  });

  const post = (body: string | Uint8Array, headers: Record<string, string> = {}) =>
    fetch(ctx.api.url, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...headers }, body });

  async function expectRejected(body: string | Uint8Array, spec: ErrorSpec, headers: Record<string, string> = {}): Promise<void> {
    const before = await storeFingerprint(ctx.svc);
    await expectError(await post(body, headers), spec);
    expect(await storeFingerprint(ctx.svc)).toBe(before);
    expect((await ctx.api.hydrate(scope))?.body.toString()).toBe(ORIGINAL);
  }

  const ok = (extra: Record<string, unknown>) => JSON.stringify({ terminalStatus: 'completed', snapshotJsonl: 'x\n', runId: 2, ...extra });

  const cases: [string, string | Uint8Array, ErrorSpec][] = [
    ['an empty body', '', ERRORS.invalidJson],
    ['truncated JSON', '{"terminalStatus":"completed","snapshotJsonl":"x', ERRORS.invalidJson],
    ['JSON null', 'null', ERRORS.invalidJson],
    ['a JSON array', '[{"terminalStatus":"completed"}]', ERRORS.invalidJson],
    ['a JSON string', '"completed"', ERRORS.invalidJson],
    ['trailing garbage', `${ok({})}xyz`, ERRORS.invalidJson],
    ['100,000 nested arrays', '['.repeat(100_000) + ']'.repeat(100_000), ERRORS.invalidJson],
    ['raw non-UTF-8 bytes', new Uint8Array([0xff, 0xfe, 0x7b, 0x7d, 0xc3, 0x28]), ERRORS.invalidJson],
    ['valid JSON whose string holds an invalid UTF-8 sequence', Buffer.concat([Buffer.from('{"terminalStatus":"completed","snapshotJsonl":"'), Buffer.from([0xc3, 0x28]), Buffer.from('","runId":2}')]), ERRORS.invalidJson],
    ['an overlong UTF-8 encoding of "/"', Buffer.concat([Buffer.from('{"terminalStatus":"completed","snapshotJsonl":"'), Buffer.from([0xc0, 0xaf]), Buffer.from('","runId":2}')]), ERRORS.invalidJson],
    ['fields hidden behind __proto__', JSON.stringify({}).replace('{}', '{"__proto__":{"terminalStatus":"completed","snapshotJsonl":"x\\n","runId":2}}'), ERRORS.invalidTerminalStatus],
    ['runId hidden behind __proto__', '{"terminalStatus":"completed","snapshotJsonl":"x\\n","__proto__":{"runId":2}}', ERRORS.invalidRunId],
    ['constructor/prototype keys', '{"constructor":{"prototype":{"terminalStatus":"completed"}},"snapshotJsonl":"x"}', ERRORS.invalidTerminalStatus],
    ['terminalStatus in another case', ok({ terminalStatus: 'COMPLETED' }), ERRORS.invalidTerminalStatus],
    ['terminalStatus null', ok({ terminalStatus: null }), ERRORS.invalidTerminalStatus],
    ['an empty snapshotJsonl', ok({ snapshotJsonl: '' }), ERRORS.missingSnapshot],
    ['a numeric snapshotJsonl', ok({ snapshotJsonl: 5 }), ERRORS.missingSnapshot],
    ['a lone surrogate in snapshotJsonl', '{"terminalStatus":"completed","snapshotJsonl":"\\ud800","runId":2}', ERRORS.missingSnapshot],
    ['a snapshot one byte over the limit', ok({ snapshotJsonl: 'x'.repeat(MAX + 1) }), ERRORS.tooLarge],
    ['runId as a string', ok({ runId: '2' }), ERRORS.invalidRunId],
    ['runId 2.5', ok({ runId: 2.5 }), ERRORS.invalidRunId],
    ['runId 0', ok({ runId: 0 }), ERRORS.invalidRunId],
    ['runId -2', ok({ runId: -2 }), ERRORS.invalidRunId],
    ['runId 1e300', '{"terminalStatus":"completed","snapshotJsonl":"x","runId":1e300}', ERRORS.invalidRunId],
    ['runId 2^53', ok({ runId: 2 ** 53 }), ERRORS.invalidRunId],
    ['a runId other than the token’s', ok({ runId: 3 }), ERRORS.runOutOfScope],
  ];
  for (const [name, body, spec] of cases) {
    it(`answers ${spec.status} ${spec.code} for ${name}, store unchanged`, async () => {
      await expectRejected(body, spec);
    });
  }

  it('answers 413 for a body over the Lambda payload limit, store unchanged', async () => {
    await expectRejected(ok({ snapshotJsonl: 'x'.repeat(LAMBDA_PAYLOAD_LIMIT) }), ERRORS.tooLarge);
  });

  it('answers 415 for an unknown Content-Encoding and 400 for a body that claims gzip but is not', async () => {
    await expectRejected(ok({}), ERRORS.unsupportedEncoding, { 'content-encoding': 'zstd' });
    await expectRejected(ok({}), ERRORS.invalidJson, { 'content-encoding': 'gzip' });
    await expectRejected(ok({}), ERRORS.invalidJson, { 'content-encoding': 'br' });
  });

  it('still accepts the valid body afterwards (the rejections did not poison anything)', async () => {
    const res = await post(ok({ snapshotJsonl: 'next\n' }));
    expect(res.status).toBe(200);
    expect((await ctx.api.hydrate(scope))?.body.toString()).toBe('next\n');
    expect(({} as Record<string, unknown>)['terminalStatus']).toBeUndefined(); // no prototype pollution in this process
  });
});
