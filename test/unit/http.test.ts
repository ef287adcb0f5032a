import type { Logger } from '@aws-lambda-powertools/logger';
import { describe, expect, it } from 'vitest';
import { ERRORS, JSON_CONTENT_TYPE, errorBody } from '../../functions/lib/contract.js';
import { HttpError, invalidToken } from '../../functions/lib/errors.js';
import { header, httpHandler, isTransientStorageError, json, type HttpEvent, type HttpResult } from '../../functions/lib/http.js';

const TOKEN = 'eyJhbGciOiJIUzI1NiJ9.eyJTRUNSRVRfVE9LRU5fTUFSS0VSIjp0cnVlfQ.c2lnbmF0dXJlLW1hcmtlci14eXo';
const BODY_MARKER = 'BODY-SECRET-MARKER-7f3a91';

interface LogCall {
  level: 'debug' | 'info' | 'warn' | 'error';
  args: unknown[];
}

function fakeLogger(): { logger: Logger; calls: LogCall[] } {
  const calls: LogCall[] = [];
  const record = (level: LogCall['level']) => (...args: unknown[]) => {
    calls.push({ level, args });
  };
  const logger = { debug: record('debug'), info: record('info'), warn: record('warn'), error: record('error') };
  return { logger: logger as unknown as Logger, calls };
}

function event(overrides: Partial<HttpEvent> = {}): HttpEvent {
  return {
    version: '2.0',
    routeKey: 'POST /worker/transcript/snapshot',
    rawPath: '/worker/transcript/snapshot',
    rawQueryString: '',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    requestContext: { requestId: 'req-123' } as HttpEvent['requestContext'],
    body: JSON.stringify({ terminalStatus: 'completed', snapshotJsonl: `{"secret":"${BODY_MARKER}"}\n`, runId: 1 }),
    isBase64Encoded: false,
    ...overrides,
  };
}

const parse = (r: HttpResult) => JSON.parse(r.body as string) as unknown;

describe('httpHandler', () => {
  it('passes a successful result through and logs it once at info', async () => {
    const { logger, calls } = fakeLogger();
    const handler = httpHandler('post', logger, async (_e, log) => {
      log.fields['runId'] = 1;
      return json(200, { id: 1 });
    });
    const result = await handler(event());
    expect(result.statusCode).toBe(200);
    expect(parse(result)).toEqual({ id: 1 });
    expect(result.headers['content-type']).toBe(JSON_CONTENT_TYPE);
    expect(calls).toHaveLength(1);
    expect(calls[0]!.level).toBe('info');
    expect(calls[0]!.args[1]).toMatchObject({ route: 'post', status: 200, requestId: 'req-123', runId: 1 });
  });

  it('prefers the Lambda request id from the context', async () => {
    const { logger, calls } = fakeLogger();
    await httpHandler('get', logger, async () => json(200, {}))(event(), { awsRequestId: 'lambda-req-9' });
    expect(calls[0]!.args[1]).toMatchObject({ requestId: 'lambda-req-9' });
  });

  it.each(Object.entries(ERRORS).filter(([, spec]) => spec.status < 500))(
    'maps HttpError %s to its status, body and code',
    async (_name, spec) => {
      const { logger, calls } = fakeLogger();
      const result = await httpHandler('post', logger, async () => {
        throw new HttpError(spec);
      })(event());
      expect(result.statusCode).toBe(spec.status);
      expect(parse(result)).toEqual(errorBody(spec));
      expect(parse(result)).toEqual({ error: spec.message, code: spec.code });
      expect(result.headers['content-type']).toBe(JSON_CONTENT_TYPE);
      expect(calls).toHaveLength(1);
      expect(calls[0]!.level).toBe('info');
      expect(calls[0]!.args[1]).toMatchObject({ status: spec.status, code: spec.code });
    },
  );

  it('adds the HttpError headers to the response', async () => {
    const { logger } = fakeLogger();
    const result = await httpHandler('get', logger, async () => {
      throw invalidToken(new Error('jose detail'));
    })(event());
    expect(result.statusCode).toBe(401);
    expect(result.headers['www-authenticate']).toBe('Bearer');
    expect(parse(result)).toEqual({ error: 'Invalid token', code: 'invalid_token' });
    expect(result.body).not.toContain('jose detail');
  });

  it('maps a plain Error to a generic 500 without its message in the body', async () => {
    const { logger, calls } = fakeLogger();
    const result = await httpHandler('post', logger, async () => {
      throw new Error('ddb table arn:aws:dynamodb:eu-west-1:123:table/x is on fire');
    })(event());
    expect(result.statusCode).toBe(500);
    expect(result.body).toBe('{"error":"Internal error","code":"internal_error"}');
    expect(parse(result)).toEqual(errorBody(ERRORS.internal));
    expect(calls).toHaveLength(1);
    expect(calls[0]!.level).toBe('error');
    // The detail goes to the log instead.
    expect(JSON.stringify(calls[0]!.args)).toContain('is on fire');
  });

  it('maps a thrown non-Error value to a generic 500', async () => {
    const { logger, calls } = fakeLogger();
    const result = await httpHandler('post', logger, async () => {
      throw 'a string';
    })(event());
    expect(result.statusCode).toBe(500);
    expect(parse(result)).toEqual(errorBody(ERRORS.internal));
    expect(calls).toHaveLength(1);
  });

  it('maps an SDK throttling error to 503 with Retry-After', async () => {
    const { logger, calls } = fakeLogger();
    const result = await httpHandler('post', logger, async () => {
      throw Object.assign(new Error('Rate exceeded'), { name: 'ThrottlingException', $metadata: { httpStatusCode: 400 } });
    })(event());
    expect(result.statusCode).toBe(503);
    expect(parse(result)).toEqual(errorBody(ERRORS.unavailable));
    expect(result.headers['retry-after']).toBe('1');
    expect(result.body).not.toContain('Rate exceeded');
    expect(calls).toHaveLength(1);
    expect(calls[0]!.level).toBe('error');
  });

  it('maps a plain-object SDK throttling error to 503 with Retry-After', async () => {
    const { logger } = fakeLogger();
    const result = await httpHandler('post', logger, async () => {
      throw { name: 'ThrottlingException', $metadata: { httpStatusCode: 400 } };
    })(event());
    expect(result.statusCode).toBe(503);
    expect(result.headers['retry-after']).toBe('1');
  });

  it('writes exactly one log entry per request, without the token or the body', async () => {
    const { logger, calls } = fakeLogger();
    const outcomes: (() => Promise<HttpResult>)[] = [
      async () => json(200, { id: 1 }),
      async () => {
        throw new HttpError(ERRORS.alreadyExists);
      },
      async () => {
        throw invalidToken();
      },
      async () => {
        throw new Error('boom');
      },
      async () => {
        throw { name: 'SlowDown', $metadata: { httpStatusCode: 503 } };
      },
    ];
    for (const [i, outcome] of outcomes.entries()) {
      const handler = httpHandler('post', logger, async (e, log) => {
        // A handler that reads both, as the real ones do, must still not leak them into the log.
        expect(header(e, 'Authorization')).toBe(`Bearer ${TOKEN}`);
        expect(e.body).toContain(BODY_MARKER);
        log.fields['bytes'] = e.body?.length;
        return outcome();
      });
      await handler(event({ headers: { Authorization: `Bearer ${TOKEN}` } }));
      expect(calls).toHaveLength(i + 1);
    }
    expect(calls.map((c) => c.level)).toEqual(['info', 'info', 'info', 'error', 'error']);
    const logged = JSON.stringify(calls);
    expect(logged).not.toContain(TOKEN);
    expect(logged).not.toContain(TOKEN.split('.')[2]);
    expect(logged).not.toContain(BODY_MARKER);
  });

  it('does not log a base64-encoded body either', async () => {
    const { logger, calls } = fakeLogger();
    const raw = Buffer.from(JSON.stringify({ snapshotJsonl: BODY_MARKER })).toString('base64');
    await httpHandler('post', logger, async () => {
      throw new Error('boom');
    })(event({ body: raw, isBase64Encoded: true }));
    expect(calls).toHaveLength(1);
    expect(JSON.stringify(calls)).not.toContain(raw);
    expect(JSON.stringify(calls)).not.toContain(BODY_MARKER);
  });
});

describe('isTransientStorageError', () => {
  it.each([
    ['ThrottlingException', { name: 'ThrottlingException', $metadata: { httpStatusCode: 400 } }],
    ['ProvisionedThroughputExceededException', { name: 'ProvisionedThroughputExceededException' }],
    ['S3 SlowDown', { name: 'SlowDown' }],
    ['a 5xx from the service', { name: 'Whatever', $metadata: { httpStatusCode: 502 } }],
    ['a 429', { name: 'Whatever', $metadata: { httpStatusCode: 429 } }],
    ['connection refused', Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' })],
    ['an abort', Object.assign(new Error('aborted'), { name: 'AbortError' })],
    ['an SDK-retryable error', { name: 'X', $retryable: { throttling: false } }],
  ])('treats %s as transient', (_name, err) => {
    expect(isTransientStorageError(err)).toBe(true);
  });

  it.each([
    ['a plain Error', new Error('bug')],
    ['a conditional check failure', { name: 'ConditionalCheckFailedException', $metadata: { httpStatusCode: 400 } }],
    ['NoSuchKey', { name: 'NoSuchKey', $metadata: { httpStatusCode: 404 } }],
    ['AccessDenied', { name: 'AccessDenied', $metadata: { httpStatusCode: 403 } }],
    ['null', null],
    ['a string', 'ThrottlingException'],
  ])('treats %s as not transient', (_name, err) => {
    expect(isTransientStorageError(err)).toBe(false);
  });
});

describe('header', () => {
  it('finds headers case-insensitively and returns undefined when absent', () => {
    const e = event({ headers: { 'X-Snapshot-Run-Id': '7' } });
    expect(header(e, 'x-snapshot-run-id')).toBe('7');
    expect(header(e, 'X-SNAPSHOT-RUN-ID')).toBe('7');
    expect(header(e, 'authorization')).toBeUndefined();
    expect(header(event({ headers: undefined as unknown as HttpEvent['headers'] }), 'authorization')).toBeUndefined();
  });
});
