import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ERRORS, errorBody } from '../../functions/lib/contract.js';
import { freshScope, shuffle, useLocalService } from '../helpers/service.js';

const ctx = useLocalService();
const fixture = readFileSync(new URL('../fixtures/pi-large-session.jsonl', import.meta.url));

describe('byte-exact round trips (I1)', () => {
  const cases: [string, string][] = [
    ['unicode: CJK, emoji, combining marks, RTL', '{"t":"日本語 🚀 👩‍👩‍👧 é ﷺ עברית"}\n'],
    ['CRLF line endings', '{"a":1}\r\n{"b":2}\r\n'],
    ['a UTF-8 byte order mark', '\uFEFF{"a":1}\n'],
    ['U+2028 and U+2029 inside strings', '{"a":"x\u2028y\u2029z"}\n'],
    ['empty lines and no trailing newline', '\n\n{"a":1}\n\n\n{"b":2}'],
    ['NUL and control characters', '{"a":"\u0000\u0001\u001f"}\n'],
    ['one very long line (1 MiB)', `{"a":"${'y'.repeat(1024 * 1024)}"}\n`],
    ['JSON escapes that must not be re-interpreted', '{"a":"\\"quoted\\" \\\\ \\n \\u0041"}\n'],
  ];
  for (const [name, text] of cases) {
    it(`returns exactly the written bytes: ${name}`, async () => {
      const { api } = ctx;
      const scope = freshScope();
      expect((await api.write(scope, 1, text)).status).toBe(200);
      const got = await api.hydrate(scope);
      expect(got?.body.equals(Buffer.from(text, 'utf8'))).toBe(true);
    });
  }

  it('round-trips the real 974 KB agent transcript byte for byte', async () => {
    const { api } = ctx;
    const scope = freshScope();
    expect((await api.write(scope, 1, fixture.toString('utf8'))).status).toBe(200);
    const got = await api.hydrate(scope);
    expect(got?.body.length).toBe(974_031);
    expect(got?.body.equals(fixture)).toBe(true);
  });

  it('round-trips a ~3 MB snapshot', async () => {
    const { api } = ctx;
    const scope = freshScope();
    const three = Buffer.concat([fixture, fixture, fixture]).toString('utf8');
    expect(Buffer.byteLength(three)).toBeGreaterThan(2_900_000);
    expect((await api.write(scope, 1, three)).status).toBe(200);
    expect((await api.hydrate(scope))?.body.toString('utf8') === three).toBe(true);
  });
});

describe('latest means highest runId (I1, I5)', () => {
  it('serves the highest completed runId whatever the arrival order', async () => {
    const { api } = ctx;
    const scope = freshScope();
    for (const runId of shuffle([4, 9, 1, 7, 3, 8, 2, 6, 5], 7)) {
      expect((await api.write(scope, runId, `run ${runId}\n`)).status).toBe(200);
      const got = await api.hydrate(scope);
      expect(got).toBeDefined();
    }
    const got = await api.hydrate(scope);
    expect(got?.runId).toBe(9);
    expect(got?.body.toString()).toBe('run 9\n');
  });

  it('a lower run that arrives late is stored but not served', async () => {
    const { api } = ctx;
    const scope = freshScope();
    await api.write(scope, 10, 'ten\n');
    const late = await api.write(scope, 4, 'four\n');
    expect(late.status).toBe(200);
    expect(((await late.json()) as { latest: boolean }).latest).toBe(false);
    expect((await api.hydrate(scope))?.body.toString()).toBe('ten\n');
  });

  it('never serves a non-completed run, even one with a higher runId', async () => {
    const { api } = ctx;
    const scope = freshScope();
    await api.write(scope, 1, 'good\n');
    await api.write(scope, 2, 'failed\n', 'failed');
    await api.write(scope, 3, 'timeout\n', 'timeout');
    await api.write(scope, 4, 'cancelled\n', 'cancelled');
    const got = await api.hydrate(scope);
    expect(got?.runId).toBe(1);
    expect(got?.body.toString()).toBe('good\n');
  });
});

describe('isolation (I6)', () => {
  const tricky = ['a/b', '..', '../..', '%2F', '%252F', 'a%2Fb', 'nul\u0000x', '.', 'a b', '~x', 'ü', '😀'];

  it('no two scopes that differ in any id see each other, even with path tricks', async () => {
    const { api } = ctx;
    const base = freshScope('iso');
    const scopes = [
      { org: `${base.conv}/a`, agent: 'b', conv: 'c' },
      { org: base.conv, agent: 'a/b', conv: 'c' },
      { org: base.conv, agent: 'a', conv: 'b/c' },
      { org: base.conv, agent: 'a%2Fb', conv: 'c' },
      ...tricky.map((t) => ({ org: base.conv, agent: t, conv: t })),
      ...tricky.map((t) => ({ org: base.conv, agent: 'agent', conv: t })),
    ];
    for (const [i, scope] of scopes.entries()) {
      expect((await api.write(scope, 1, `scope ${i}\n`)).status).toBe(200);
    }
    for (const [i, scope] of scopes.entries()) {
      expect((await api.hydrate(scope))?.body.toString()).toBe(`scope ${i}\n`);
    }
    // Clearing one scope leaves every other one intact.
    expect(await api.clear(scopes[0]!)).toBe(1);
    expect(await api.hydrate(scopes[0]!)).toBeUndefined();
    for (const [i, scope] of scopes.slice(1).entries()) {
      expect((await api.hydrate(scope))?.body.toString()).toBe(`scope ${i + 1}\n`);
    }
  });

  it('orgs, agents and conversations with the same other ids are separate', async () => {
    const { api } = ctx;
    const s = freshScope();
    const variants = [s, { ...s, org: `${s.org}-2` }, { ...s, agent: `${s.agent}-2` }, { ...s, conv: `${s.conv}-2` }];
    await api.write(variants[0]!, 1, 'original\n');
    for (const v of variants.slice(1)) {
      expect(await api.hydrate(v)).toBeUndefined();
      expect(await api.clear(v)).toBe(0);
    }
    expect((await api.hydrate(s))?.body.toString()).toBe('original\n');
  });

  it('keys in S3 stay under the conversation prefix and never contain raw path tricks', async () => {
    const { api, svc } = ctx;
    const scope = { org: '../../etc', agent: '%2F..%2F', conv: 'a//b' };
    expect((await api.write(scope, 1, 'x\n')).status).toBe(200);
    const { ListObjectsV2Command } = await import('@aws-sdk/client-s3');
    const list = await svc.s3.send(new ListObjectsV2Command({ Bucket: svc.config.bucketName, Prefix: 'snapshots/%2E%2E%2F' }));
    const keys = (list.Contents ?? []).map((o) => o.Key!);
    expect(keys).toHaveLength(1);
    expect(keys[0]).toMatch(/^snapshots\/%2E%2E%2F%2E%2E%2Fetc\/%252F%2E%2E%252F\/a%2F%2Fb\/0000000000000001\/g\d+-[0-9a-f-]+(\.jsonl\.gz|~[0-9a-f-]+\.deflate)$/);
  });
});

describe('reset fence (I4)', () => {
  it('after DELETE, a run whose token was issued before the clear cannot bring the old history back', async () => {
    const { api } = ctx;
    const scope = freshScope();
    const startedBefore = Math.floor(Date.now() / 1000) - 5;
    await api.write(scope, 1, 'old history\n', 'completed', { issuedAt: startedBefore });
    expect(await api.clear(scope)).toBe(1);
    // Run 2 started before the clear: its snapshot holds the old transcript.
    const late = await api.write(scope, 2, 'old history + more\n', 'completed', { issuedAt: startedBefore });
    expect(late.status).toBe(409);
    expect(await late.json()).toEqual(errorBody(ERRORS.resetFenced));
    expect(await api.hydrate(scope)).toBeUndefined();
    // And nothing of it is left behind for a later clear to count.
    expect(await api.clear(scope)).toBe(0);
  });

  it('a run started after the clear publishes normally, even with a lower runId than before', async () => {
    const { api } = ctx;
    const scope = freshScope();
    const before = Math.floor(Date.now() / 1000) - 5;
    await api.write(scope, 50, 'old\n', 'completed', { issuedAt: before });
    await api.clear(scope);
    const res = await api.write(scope, 3, 'new life\n', 'completed', { issuedAt: Math.floor(Date.now() / 1000) + 1 });
    expect(res.status).toBe(200);
    const got = await api.hydrate(scope);
    expect(got?.runId).toBe(3);
    expect(got?.body.toString()).toBe('new life\n');
  });

  it('a token issued in the same second as the clear is treated as after it (documented choice)', async () => {
    const { api } = ctx;
    const scope = freshScope();
    await api.write(scope, 1, 'old\n', 'completed', { issuedAt: Math.floor(Date.now() / 1000) - 5 });
    await api.clear(scope);
    const sameSecond = Math.floor(Date.now() / 1000);
    const res = await api.write(scope, 2, 'new\n', 'completed', { issuedAt: sameSecond });
    // If the second rolled over between the clear and minting, the token is simply "after": still 200.
    expect(res.status).toBe(200);
    expect((await api.hydrate(scope))?.body.toString()).toBe('new\n');
  });

  it('DELETE removes every stored object of the conversation, not only the records', async () => {
    const { api, svc } = ctx;
    const scope = freshScope();
    for (const runId of [1, 2, 3]) await api.write(scope, runId, `r${runId}\n`);
    await api.write(scope, 4, 'f\n', 'failed');
    const { ListObjectsV2Command } = await import('@aws-sdk/client-s3');
    const { conversationKey } = await import('../../functions/lib/ids.js');
    const prefix = `snapshots/${conversationKey({ organizationId: scope.org, agentId: scope.agent, conversationId: scope.conv })}/`;
    const count = async () => (await svc.s3.send(new ListObjectsV2Command({ Bucket: svc.config.bucketName, Prefix: prefix }))).KeyCount ?? 0;
    expect(await count()).toBe(4);
    expect(await api.clear(scope)).toBe(4);
    expect(await count()).toBe(0);
  });
});
