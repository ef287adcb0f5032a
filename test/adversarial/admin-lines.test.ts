/**
 * Adversarial: `GET /admin/lines` (docs/DESIGN.md § Operator API, Lines) over awkward transcripts and stale
 * cursors, in every storage form (a chain run, a gzip object, an identity upload):
 *
 *   - CRLF line ends (the `\r` is part of the line: only `\n` ends one), empty lines, a last line without
 *     `\n`, lines that span chain fragments with multi-byte characters on both sides of every boundary;
 *   - lines longer than a page's 1 MiB of text, of 3-byte characters and of control characters (6 bytes
 *     each once JSON-encoded): cut at a character boundary within the budget, marked truncated, with their
 *     real size, and the next line follows;
 *   - cursors replayed after their run was written again with the same bytes (another stored form: 400),
 *     after it was erased (404), and after retention removed the runs whose boundary the cursor resumes
 *     from (the page goes on, exact).
 */
import { createHash } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_PATHS, ERRORS, errorBody } from '../../functions/lib/contract.js';
import { eraseScope } from '../../functions/lib/store/erasure.js';
import { AdminApi, cursorPayload, type LinesAnswer, type ListedLine } from '../helpers/admin.js';
import { pkOf } from '../helpers/erasure.js';
import { clockedStore, MINUTE } from '../helpers/retention.js';
import { useLocalService, type Scope } from '../helpers/service.js';
import { uploadSnapshot } from '../helpers/uploads.js';

const ctx = useLocalService();
let admin: AdminApi;
let org: string;
let token: string;
let n = 0;
beforeAll(async () => {
  admin = new AdminApi(ctx.svc);
  org = `lines-${process.pid}-${Date.now()}`;
  token = await admin.token(org);
});
const fresh = (tag: string): Scope => ({ org, agent: 'agent', conv: `${tag}-${++n}` });
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

/** The lines of `content` as the API must list them: split on `\n` only; a last line without `\n` is a line. */
function expectedLines(content: string): Omit<ListedLine, 'truncated'>[] {
  const out: Omit<ListedLine, 'truncated'>[] = [];
  const bytes = Buffer.from(content, 'utf8');
  let offset = 0;
  let line = 1;
  while (offset < bytes.length) {
    const nl = bytes.indexOf(0x0a, offset);
    const end = nl < 0 ? bytes.length : nl;
    out.push({ line, offset, bytes: end - offset, text: bytes.subarray(offset, end).toString('utf8') });
    line += 1;
    offset = end + 1;
  }
  return out;
}

/** Every page of a run's lines with `limit`, following the cursors. */
async function allPages(s: Scope, params: Record<string, string | number>): Promise<LinesAnswer[]> {
  const pages: LinesAnswer[] = [];
  let cursor: string | undefined;
  do {
    pages.push(await admin.json<LinesAnswer>(ADMIN_PATHS.lines, { agentId: s.agent, conversationId: s.conv, ...params, ...(cursor && { cursor }) }, token));
    cursor = pages.at(-1)!.nextCursor ?? undefined;
    if (pages.length > 1000) throw new Error('runaway paging');
  } while (cursor);
  return pages;
}

async function ok(res: Promise<Response>): Promise<void> {
  const r = await res;
  expect(r.status, await r.clone().text()).toBe(200);
  await r.body?.cancel();
}

/** The same transcript stored in each form: a chain run, a failed run (gzip object), an identity upload. */
async function storedEveryWay(content: string): Promise<{ scope: Scope; runId: number; form: string }[]> {
  const chain = fresh('chain');
  await ok(ctx.api.write(chain, 1, content));
  const gzip = fresh('gzip');
  await ok(ctx.api.write(gzip, 1, content, 'failed'));
  const identity = fresh('identity');
  await ok(uploadSnapshot(ctx.api, identity, 1, Buffer.from(content, 'utf8'), 'identity'));
  return [
    { scope: chain, runId: 1, form: 'chain' },
    { scope: gzip, runId: 1, form: 'gzip object' },
    { scope: identity, runId: 1, form: 'identity upload' },
  ];
}

describe('line ends', () => {
  const content = 'a\r\n\r\nb\n\n\n{"x":"é 🚀"}\r\nc';

  it('CRLF, empty lines and a last line without \\n, in every storage form and page size', async () => {
    const expected = expectedLines(content).map((l) => ({ ...l, truncated: false }));
    expect(expected.map((l) => l.text)).toEqual(['a\r', '\r', 'b', '', '', '{"x":"é 🚀"}\r', 'c']);
    for (const { scope, runId, form } of await storedEveryWay(content)) {
      for (const limit of [1, 2, 3, 1000]) {
        const pages = await allPages(scope, { runId, limit });
        expect(pages.flatMap((p) => p.lines), `${form}, limit ${limit}`).toEqual(expected);
        expect(pages.length, `${form}, limit ${limit}`).toBe(Math.ceil(expected.length / limit));
        for (const p of pages) expect(p).toMatchObject({ runId, bytes: Buffer.byteLength(content) });
      }
    }
  });

  it('a transcript that ends with \\n has no empty last line; one of only \\n has one empty line per \\n', async () => {
    for (const [text, lines] of [['x\n', ['x']], ['\n', ['']], ['\n\n', ['', '']], ['x', ['x']]] as const) {
      const s = fresh('ends');
      await ok(ctx.api.write(s, 1, text));
      const pages = await allPages(s, { limit: 1 });
      expect(pages.flatMap((p) => p.lines.map((l) => l.text)), JSON.stringify(text)).toEqual(lines);
    }
  });
});

describe('lines across chain fragments', () => {
  it('lines that span fragments, with multi-byte characters on both sides of each boundary, page exactly', async () => {
    const s = fresh('fragments');
    // Each run ends mid-line, right after a multi-byte character; the next run's append starts with one.
    const parts = ['ab\n€', '😀\nc€', 'é\n', 'ü'.repeat(100), '🚀\n\n', 'end€'];
    let content = '';
    for (const [i, part] of parts.entries()) {
      content += part;
      await ok(ctx.api.write(s, i + 1, content));
    }
    const expected = expectedLines(content).map((l) => ({ ...l, truncated: false }));
    const runId = parts.length;
    for (const limit of [1, 2, 1000]) {
      const pages = await allPages(s, { runId, limit });
      expect(pages.flatMap((p) => p.lines), `limit ${limit}`).toEqual(expected);
    }
    // Later pages decode from a fragment boundary (a run's end), not from the start.
    const pages = await allPages(s, { runId, limit: 1 });
    expect(pages.some((p) => p.nextCursor && (cursorPayload(p.nextCursor)['rd'] as number) > 0)).toBe(true);
    // Every earlier run of the chain lists as its own prefix.
    for (let r = 1; r < runId; r++) {
      const prefix = parts.slice(0, r).join('');
      expect((await allPages(s, { runId: r, limit: 2 })).flatMap((p) => p.lines), `run ${r}`).toEqual(expectedLines(prefix).map((l) => ({ ...l, truncated: false })));
    }
  });
});

describe('lines longer than a page may carry', () => {
  it('3-byte characters and control characters past 1 MiB: cut within the budget at a character boundary, truncated, real size kept', async () => {
    const s = fresh('long');
    const euros = '€'.repeat(400_000); // 1,200,000 bytes
    const controls = '\u0001'.repeat(200_000); // 200,000 bytes, 1,200,000 once JSON-encoded
    const content = `${euros}\n${controls}\nshort\n`;
    await ok(ctx.api.write(s, 1, content));
    const pages = await allPages(s, { limit: 1000 });
    const lines = pages.flatMap((p) => p.lines);
    expect(lines.map((l) => [l.line, l.offset, l.bytes, l.truncated])).toEqual([
      [1, 0, 1_200_000, true],
      [2, 1_200_001, 200_000, true],
      [3, 1_400_002, 5, false],
    ]);
    const [first, second, third] = lines as [ListedLine, ListedLine, ListedLine];
    expect(euros.startsWith(first.text)).toBe(true);
    expect(controls.startsWith(second.text)).toBe(true);
    expect(third.text).toBe('short');
    for (const l of [first, second]) {
      const encoded = Buffer.byteLength(JSON.stringify(l.text)) - 2;
      expect(encoded).toBeLessThanOrEqual(1024 * 1024);
      expect(encoded).toBeGreaterThan(1024 * 1024 - 8); // cut as late as the budget allows
      expect(l.text.isWellFormed()).toBe(true);
    }
    // Each long line fills a page of its own; the short one follows on the next.
    expect(pages.map((p) => p.lines.length)).toEqual([1, 1, 1]);
  });
});

describe('cursors replayed after the run changed', () => {
  /** Runs 1–3 of one chain (each extends the one before); the cursor after the first 2 lines of run 3. */
  async function chainWithCursor(s: Scope): Promise<{ content: string; cursor: string }> {
    const contents = ['aaaa\n', 'aaaa\nbbbb\n', 'aaaa\nbbbb\ncccc\ndddd\n'];
    for (const [i, c] of contents.entries()) await ok(ctx.api.write(s, i + 1, c));
    const page = await admin.json<LinesAnswer>(ADMIN_PATHS.lines, { agentId: s.agent, conversationId: s.conv, runId: 3, limit: 2 }, token);
    expect(page.lines.map((l) => l.text)).toEqual(['aaaa', 'bbbb']);
    // It resumes from the end of run 2 (a fragment boundary of the chain), not from the start.
    expect(cursorPayload(page.nextCursor!)['rd']).toBe(10);
    return { content: contents[2]!, cursor: page.nextCursor! };
  }

  it('written again with the same bytes after a clear (another chain, other fragments): 400 invalid_cursor, never a 500', async () => {
    const s = fresh('rewritten');
    const { content, cursor } = await chainWithCursor(s);
    await ctx.api.clear(s);
    // Same run id, same bytes (same sha256), stored as one fragment of a new chain.
    await ok(ctx.api.write(s, 3, content));
    const res = await admin.get(ADMIN_PATHS.lines, { agentId: s.agent, conversationId: s.conv, cursor }, token);
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual(errorBody(ERRORS.invalidCursor));
    // A new listing of the new run is exact.
    expect((await allPages(s, { runId: 3, limit: 2 })).flatMap((p) => p.lines.map((l) => l.text))).toEqual(['aaaa', 'bbbb', 'cccc', 'dddd']);
    expect((await admin.json<{ runs: { runId: number; sha256: string }[] }>(ADMIN_PATHS.runs, { agentId: s.agent, conversationId: s.conv }, token)).runs).toEqual([
      expect.objectContaining({ runId: 3, sha256: sha256(content) }),
    ]);
  });

  it('after an erasure of the conversation: 404 not_found', async () => {
    const s = fresh('erased');
    const { cursor } = await chainWithCursor(s);
    await eraseScope(ctx.svc.store, { organizationId: s.org, agentId: s.agent, conversationId: s.conv });
    for (const params of [{ cursor }, { cursor, runId: 3 }]) {
      const res = await admin.get(ADMIN_PATHS.lines, { agentId: s.agent, conversationId: s.conv, ...params }, token);
      expect(res.status).toBe(404);
      expect(await res.json()).toEqual(errorBody(ERRORS.notFound));
    }
  });

  it('after retention removed the runs whose boundary it resumes from: the next page is exact', async () => {
    const s = fresh('retained');
    const { cursor } = await chainWithCursor(s);
    const grace = ctx.svc.store.retention.graceSeconds * 1000;
    const removed = await clockedStore(ctx.svc, () => Date.now() + grace + MINUTE, { retention: { retainCompletedRuns: 1 } }).retainConversation(pkOf(s));
    expect(removed).toMatchObject({ runs: 2, objects: 0 });
    const page = await admin.json<LinesAnswer>(ADMIN_PATHS.lines, { agentId: s.agent, conversationId: s.conv, cursor }, token);
    expect(page.lines).toEqual([
      { line: 3, offset: 10, bytes: 4, text: 'cccc', truncated: false },
      { line: 4, offset: 15, bytes: 4, text: 'dddd', truncated: false },
    ]);
    expect(page.nextCursor).toBeNull();
  });
});
