import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, BrowserContext, Locator, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SNAPSHOT_PATH } from '../../functions/lib/contract.js';
import { CONSOLE_CSP } from '../../functions/lib/routes/console-files.js';
import { loadOrCreateDevSecret, mintDevToken } from '../../local/dev-secret.js';

/**
 * The operator console in a real browser (Debian's `chromium`, driven by playwright-core, no browser
 * download, closed network) against `npm start` (scripts/local.ts in a child process, as a developer runs
 * it): sign in with the printed console URL and by pasting the token, list and page conversations, open a
 * conversation's runs, the real pi fixture transcript (every entry type it holds rendered by its own
 * renderer), a failed run holding every other pi entry type plus unknown and broken lines, keyboard paths,
 * search (in the loaded lines and further), download (inline and assembled from lines), and a 55,000-line
 * transcript paged through with the DOM bounded. Screenshots go to `.ci/artifacts/` (CI artifacts).
 *
 * No timing in assertions: every wait is for a state (a selector, a data attribute), with generous limits.
 */
// Callbacks passed to page.evaluate run in the page; the test project has no DOM types, so these name
// what they use (module scope only).
interface PageElement {
  id: string;
  disabled: boolean;
  open: boolean;
  dataset: Record<string, string | undefined>;
  scrollTop: number;
  scrollHeight: number;
  getAttribute(name: string): string | null;
  querySelector(selector: string): PageElement | null;
  querySelectorAll(selector: string): { length: number };
}
declare const document: { activeElement: PageElement | null; getElementById(id: string): PageElement | null; querySelector(selector: string): PageElement | null };
declare const sessionStorage: { length: number };

const CHROMIUM = '/usr/bin/chromium';
const root = new URL('../../', import.meta.url).pathname;
const artifacts = join(root, '.ci/artifacts');
const haveChromium = existsSync(CHROMIUM);
const mustRun = process.env['CI'] === 'true';

if (!haveChromium && !mustRun) {
  console.warn(`test/browser/console.test.ts skipped: ${CHROMIUM} is missing (apt-get install -y --no-install-recommends chromium; .ci/run installs it).`);
}

if (!haveChromium && mustRun) {
  describe('browser tests under CI', () => {
    it('need Debian chromium', () => {
      throw new Error(`${CHROMIUM} is missing: .ci/run must install it (apt-get install -y --no-install-recommends chromium)`);
    });
  });
}

const ORG = 'console-org';
const fixture = await readFile(join(root, 'test/fixtures/pi-large-session.jsonl'), 'utf8');
const fixtureLines = fixture.split('\n').filter((l) => l !== '');
const LARGE_LINES = 55_000;

/** Every other pi entry type and message role, one per line, then an unknown type, an unknown role and a line that is not JSON. */
const OTHER_TYPES: [string, string][] = [
  [JSON.stringify({ type: 'session', version: 3, id: 's-2', timestamp: '2025-12-01T10:00:00.000Z', cwd: '/work' }), 'session'],
  [JSON.stringify({ type: 'compaction', id: 'c1', parentId: null, timestamp: '2025-12-01T10:00:01.000Z', summary: 'Goal: port the selector. Done: theme.', firstKeptEntryId: 'm9', tokensBefore: 51234, details: { readFiles: ['a.ts'], modifiedFiles: ['b.ts'] } }), 'compaction'],
  [JSON.stringify({ type: 'branch_summary', id: 'b1', parentId: 'c1', timestamp: '2025-12-01T10:00:02.000Z', fromId: 'm3', summary: 'Tried approach A first' }), 'branch-summary'],
  [JSON.stringify({ type: 'custom', id: 'x1', parentId: 'b1', timestamp: '2025-12-01T10:00:03.000Z', customType: 'todo-ext', data: { open: 3 } }), 'custom'],
  [JSON.stringify({ type: 'custom_message', id: 'x2', parentId: 'x1', timestamp: '2025-12-01T10:00:04.000Z', customType: 'todo-ext', content: 'Remember the tests', display: true }), 'custom-message'],
  [JSON.stringify({ type: 'label', id: 'l1', parentId: 'x2', timestamp: '2025-12-01T10:00:05.000Z', targetId: 'm3', label: 'checkpoint-1' }), 'label'],
  [JSON.stringify({ type: 'session_info', id: 'i1', parentId: 'l1', timestamp: '2025-12-01T10:00:06.000Z', name: 'Selector port' }), 'session-info'],
  [JSON.stringify({ type: 'message', id: 'm1', timestamp: '2025-12-01T10:00:07.000Z', message: { role: 'bashExecution', command: 'npm test', output: 'ok', exitCode: 0, cancelled: false, truncated: false, timestamp: 1 } }), 'bash-execution'],
  [JSON.stringify({ type: 'message', id: 'm2', timestamp: '2025-12-01T10:00:08.000Z', message: { role: 'custom', customType: 'todo-ext', content: [{ type: 'text', text: 'custom role' }], display: true, timestamp: 1 } }), 'custom-message'],
  [JSON.stringify({ type: 'message', id: 'm3', timestamp: '2025-12-01T10:00:09.000Z', message: { role: 'branchSummary', summary: 'Branch role summary', fromId: 'm1', timestamp: 1 } }), 'branch-summary'],
  [JSON.stringify({ type: 'message', id: 'm4', timestamp: '2025-12-01T10:00:10.000Z', message: { role: 'compactionSummary', summary: 'Compaction role summary', tokensBefore: 9000, timestamp: 1 } }), 'compaction'],
  [JSON.stringify({ type: 'message', id: 'm5', timestamp: '2025-12-01T10:00:11.000Z', message: { role: 'toolResult', toolCallId: 't1', toolName: 'bash', content: [{ type: 'text', text: 'boom' }], isError: true, timestamp: 1 } }), 'tool-result'],
  [JSON.stringify({ type: 'hologram_projection', id: 'u1', timestamp: '2025-12-01T10:00:12.000Z', payload: { kept: 'never dropped' } }), 'raw'],
  [JSON.stringify({ type: 'message', id: 'u2', timestamp: '2025-12-01T10:00:13.000Z', message: { role: 'oracle', content: 'unknown role' } }), 'raw'],
  ['this line is not JSON {', 'invalid'],
];
const failedRun = OTHER_TYPES.map(([l]) => l).join('\n') + '\n';

/** The renderer each (type, role) of the fixture must get. */
const FIXTURE_RENDERERS: Record<string, string> = {
  session: 'session',
  'message:user': 'user',
  'message:assistant': 'assistant',
  'message:toolResult': 'tool-result',
  model_change: 'model-change',
  thinking_level_change: 'thinking-level',
};

function fixtureKinds(): { types: Set<string>; blocks: Set<string> } {
  const types = new Set<string>();
  const blocks = new Set<string>();
  for (const line of fixtureLines) {
    const e = JSON.parse(line) as { type: string; message?: { role: string; content: unknown } };
    types.add(e.type === 'message' ? `message:${e.message!.role}` : e.type);
    if (e.type === 'message' && Array.isArray(e.message!.content)) for (const b of e.message!.content as { type: string }[]) blocks.add(b.type);
  }
  return { types, blocks };
}

const describeBrowser = haveChromium ? describe : describe.skip;

describeBrowser('operator console in headless Chromium against npm start', { timeout: 90_000 }, () => {
  let dataDir: string;
  let child: ChildProcess;
  let baseUrl: string;
  let consoleUrl: string;
  let adminToken: string;
  let secret: string;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  const pageErrors: string[] = [];
  const offOrigin: string[] = [];

  async function write(agent: string, conv: string, runId: number, snapshotJsonl: string, terminalStatus = 'completed'): Promise<void> {
    const token = await mintDevToken(secret, { org: ORG, agent, conv, runId });
    const res = await fetch(`${baseUrl}${SNAPSHOT_PATH}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ terminalStatus, snapshotJsonl, runId }),
    });
    expect(res.status, await res.clone().text()).toBe(200);
    await res.body?.cancel();
  }

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'console-browser-'));
    await mkdir(artifacts, { recursive: true });
    secret = await loadOrCreateDevSecret(dataDir, {});
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      DATA_DIR: dataDir,
      PORT: '0',
      CONSOLE_ORG: ORG,
      // Small, so the fixture's download answers 307 and the console assembles it from lines.
      INLINE_RESPONSE_MAX_BYTES: '100000',
    };
    for (const k of ['JWT_SECRET', 'AWS_ENDPOINT_URL', 'AWS_ENDPOINT_URL_S3', 'AWS_ENDPOINT_URL_DYNAMODB']) delete env[k];
    child = spawn(join(root, 'node_modules/.bin/tsx'), ['scripts/local.ts'], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`npm start printed no console URL in 45 s: ${err}`)), 45_000);
      const check = () => {
        const url = /^(http:\/\/127\.0\.0\.1:\d+)$/m.exec(out)?.[1];
        const con = /^\s+console:\s+(\S+)$/m.exec(err)?.[1];
        if (url && con) {
          clearTimeout(timer);
          baseUrl = url;
          consoleUrl = con;
          resolve();
        }
      };
      child.stdout!.on('data', check);
      child.stderr!.on('data', check);
      child.once('exit', (code) => reject(new Error(`npm start exited early (${code}): ${err}`)));
    });
    adminToken = new URL(consoleUrl).hash.replace(/^#token=/, '');

    // Seed through the worker API, oldest activity first.
    let large = '';
    for (let i = 1; i <= LARGE_LINES; i++) large += `{"type":"custom","customType":"gen","data":{"n":${i}}}\n`;
    await write('gen-agent', 'conv-large', 1, large);
    await write('pi-agent', 'conv-fixture', 1, fixtureLines.slice(0, 3).join('\n') + '\n');
    await write('pi-agent', 'conv-fixture', 2, failedRun, 'failed');
    await write('pi-agent', 'conv-fixture', 3, fixtureLines.slice(0, 2).join('\n') + '\n', 'timeout');
    await write('pi-agent', 'conv-fixture', 4, fixtureLines.slice(0, 1).join('\n') + '\n', 'cancelled');
    await write('pi-agent', 'conv-fixture', 5, fixture);
    for (let i = 1; i <= 26; i++) await write('bulk-agent', `conv-bulk-${String(i).padStart(2, '0')}`, 1, '{"type":"session"}\n');
    await write('pi-agent', 'conv-newest', 1, fixtureLines.slice(0, 5).join('\n') + '\n');

    const { chromium } = await import('playwright-core');
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-sync', '--disable-quic', '--disable-dev-shm-usage'],
    });
    context = await browser.newContext({ viewport: { width: 1280, height: 860 }, acceptDownloads: true });
    page = await context.newPage();
    page.setDefaultTimeout(30_000); // waits are for states; the limit only bounds a broken run on a busy machine
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('console', (m) => {
      // The refused worker token's 403 is expected (sign-in test); anything else (a CSP violation, …) is not.
      if (m.type() === 'error' && !m.text().includes('status of 403')) pageErrors.push(m.text());
    });
    // Requests that left the origin and got an answer. (The download's `redirect: 'manual'` fetch shows
    // its 307 target as a request aborted before it was sent: not counted.)
    page.on('requestfinished', (r) => {
      if (!r.url().startsWith(baseUrl) && !r.url().startsWith('blob:') && !r.url().startsWith('data:')) offOrigin.push(r.url());
    });
  }, 120_000);

  afterAll(async () => {
    await browser?.close().catch(() => {});
    if (child && child.exitCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    }
    await rm(dataDir, { recursive: true, force: true });
  });

  const shot = (name: string) => page.screenshot({ path: join(artifacts, `console-${name}.png`) });
  const transcript = () => page.locator('#transcript');
  const windowData = () =>
    transcript().evaluate((el) => ({
      first: Number(el.dataset['windowFirstLine']),
      last: Number(el.dataset['windowLastLine']),
      lines: Number(el.dataset['windowLines']),
      complete: el.dataset['complete'] === 'true',
      rendered: el.querySelectorAll('article.entry').length,
    }));

  it('serves the page with the strict CSP; npm start prints a console URL whose token is in the fragment only', async () => {
    expect(consoleUrl.startsWith(`${baseUrl}/console#token=`)).toBe(true);
    expect(new URL(consoleUrl).search).toBe('');
    const res = await fetch(`${baseUrl}/console`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-security-policy')).toBe(CONSOLE_CSP);
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    expect(res.headers.get('referrer-policy')).toBe('no-referrer');
    expect(await res.text()).not.toMatch(/https?:\/\//); // nothing from elsewhere: works offline
  });

  it('signs in from the printed URL (token read from the fragment, then removed) and by pasting a token', async () => {
    await page.goto(consoleUrl);
    await page.locator('#conversations tbody tr').first().waitFor();
    expect(page.url()).not.toContain('token');
    expect(await page.evaluate(() => sessionStorage.length)).toBe(1);
    expect(await page.locator('#org').textContent()).toBe(ORG);

    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByLabel('Admin token').waitFor();
    expect(await page.evaluate(() => sessionStorage.length)).toBe(0);
    await shot('signin');
    // A worker token is refused with the reason; the admin token signs in.
    // (Enter in the token box submits: a token is one line.)
    await page.getByLabel('Admin token').fill(await mintDevToken(secret, { org: ORG, agent: 'a', conv: 'c' }));
    await page.keyboard.press('Enter');
    await expect.poll(() => page.locator('#signin-error').textContent()).toContain('transcripts:admin');
    await page.getByLabel('Admin token').fill(adminToken);
    await page.keyboard.press('Tab'); // to the Sign in button
    expect(await page.evaluate(() => document.activeElement?.id)).toBe('signin');
    await page.keyboard.press('Enter');
    await page.locator('#conversations tbody tr').first().waitFor();
  });

  it('lists the organization\'s conversations newest first, pages through them and filters by agent', async () => {
    await page.getByLabel('Per page').selectOption('25');
    await expect.poll(() => page.locator('#conversations tbody tr').count()).toBe(25);
    const firstPage = await page.locator('#conversations tbody tr').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-conversation')));
    expect(firstPage[0]).toBe('conv-newest');
    expect(firstPage.slice(1, 25)).toEqual(Array.from({ length: 24 }, (_, i) => `conv-bulk-${String(26 - i).padStart(2, '0')}`));
    await shot('conversations');
    await page.getByRole('button', { name: 'Older →' }).click();
    await expect.poll(() => page.locator('#conversations tbody tr').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-conversation')))).toEqual([
      'conv-bulk-02',
      'conv-bulk-01',
      'conv-fixture',
      'conv-large',
    ]);
    expect(await page.getByRole('button', { name: 'Older →' }).isDisabled()).toBe(true);
    await page.getByRole('button', { name: '← Newer' }).click();
    await expect.poll(() => page.locator('#conversations tbody tr').count()).toBe(25);

    await page.getByLabel('Agent').selectOption('pi-agent');
    await expect.poll(() => page.locator('#conversations tbody tr').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-conversation')))).toEqual(['conv-newest', 'conv-fixture']);
  });

  it("shows a conversation's runs newest first with status and state badges", async () => {
    await page.getByRole('link', { name: 'conv-fixture' }).click();
    await page.locator('#runs tbody tr').first().waitFor();
    const rows = await page.locator('#runs tbody tr').evaluateAll((trs) => trs.map((r) => [r.getAttribute('data-run'), r.getAttribute('data-status'), r.getAttribute('data-state')]));
    expect(rows).toEqual([
      ['5', 'completed', 'latest'],
      ['4', 'cancelled', 'superseded'],
      ['3', 'timeout', 'superseded'],
      ['2', 'failed', 'superseded'],
      ['1', 'completed', 'superseded'],
    ]);
    for (const status of ['completed', 'failed', 'timeout', 'cancelled']) expect(await page.locator(`#runs .badge[data-status="${status}"]`).count()).toBeGreaterThan(0);
    await shot('runs');
  });

  it('renders the real fixture transcript: every entry type with its own renderer, collapsed tool calls, raw JSON of a line, keyboard navigation', async () => {
    await page.getByRole('link', { name: 'Run 5' }).click();
    await page.locator('article.entry').first().waitFor();
    // The keys work right after the run opens (focus is on <main>, not in the list): the first j selects
    // the first visible entry, the next one moves on.
    expect(await page.evaluate(() => document.activeElement?.id)).toBe('main');
    await page.keyboard.press('j');
    expect(await page.evaluate(() => document.activeElement!.dataset['line'])).toBe('1');
    await page.keyboard.press('j');
    expect(await page.evaluate(() => document.activeElement!.dataset['line'])).toBe('2');
    const { types, blocks } = fixtureKinds();
    expect([...types].sort()).toEqual(Object.keys(FIXTURE_RENDERERS).sort());
    expect([...blocks].sort()).toEqual(['text', 'thinking', 'toolCall']);

    // Line 1 is the session header.
    const first = page.locator('article.entry[data-line="1"]');
    expect(await first.getAttribute('data-type')).toBe('session');
    expect(await first.getAttribute('data-renderer')).toBe('session');

    // The first line of each kind, found with the console's search (in the loaded lines, then further),
    // from line 1 each time: "Search further" until the current match is of that kind (the query may also
    // occur inside text, e.g. a tool result quoting a session file).
    const find = async (query: string, isKind: (row: Locator) => Promise<boolean>) => {
      await transcript().focus();
      await page.keyboard.press('Home');
      await page.locator('article.entry[data-line="1"].current').waitFor();
      await page.keyboard.press('/');
      expect(await page.evaluate(() => document.activeElement?.id)).toBe('search');
      await page.keyboard.press('ControlOrMeta+a');
      await page.keyboard.type(query);
      for (let i = 0; i < 50; i++) {
        const previous = await page.evaluate(() => document.querySelector('article.entry.current-match')?.getAttribute('data-line') ?? null);
        await page.getByRole('button', { name: 'Search further' }).click();
        await page.waitForFunction((prev) => {
          const cur = document.querySelector('article.entry.current-match');
          return cur !== null && cur.getAttribute('data-line') !== prev && !document.getElementById('search-further')!.disabled;
        }, previous);
        const row = page.locator('article.entry.current-match');
        if (await isKind(row)) return row;
      }
      throw new Error(`no ${query} line of the expected kind found`);
    };
    const firstLineOf = (pred: (e: { type: string; message?: { role?: string; content?: unknown } }) => boolean) =>
      fixtureLines.findIndex((l) => pred(JSON.parse(l) as { type: string })) + 1;
    const queries: Record<string, string> = {
      'message:user': '"role":"user"',
      'message:assistant': '"role":"assistant"',
      'message:toolResult': '"role":"toolResult"',
      model_change: '"type":"model_change"',
      thinking_level_change: '"type":"thinking_level_change"',
    };
    for (const [type, query] of Object.entries(queries)) {
      const row = await find(query, async (r) => (await r.getAttribute('data-type')) === type);
      const expected = firstLineOf((e) => (e.type === 'message' ? `message:${e.message?.role}` : e.type) === type);
      expect(Number(await row.getAttribute('data-line')), type).toBe(expected);
      expect(await row.getAttribute('data-renderer'), type).toBe(FIXTURE_RENDERERS[type]);
    }
    const hasBlock = (block: string) => (e: { type: string; message?: { content?: unknown } }) =>
      e.type === 'message' && Array.isArray(e.message?.content) && (e.message.content as { type: string }[]).some((b) => b.type === block);
    const thinking = await find('"type":"thinking"', async (r) => (await r.locator('details.block-thinking').count()) > 0);
    expect(Number(await thinking.getAttribute('data-line'))).toBe(firstLineOf(hasBlock('thinking')));
    expect(await thinking.getAttribute('data-renderer')).toBe('assistant');
    await shot('thinking');

    // A tool call: collapsed by default; Enter on the entry expands it; r shows the line's raw JSON.
    const call = await find('"type":"toolCall"', async (r) => (await r.locator('details.block-tool-call').count()) > 0);
    const callLine = Number(await call.getAttribute('data-line'));
    expect(callLine).toBe(firstLineOf(hasBlock('toolCall')));
    await transcript().focus();
    await call.focus();
    const details = call.locator('details.block-tool-call').first();
    expect(await details.evaluate((d) => (d as unknown as PageElement).open)).toBe(false);
    await page.keyboard.press('Enter');
    expect(await details.evaluate((d) => (d as unknown as PageElement).open)).toBe(true);
    expect(await details.locator('pre.json').textContent()).toContain('"path"');
    // The query matched only the stored JSON (a field name), so the match shows the line's raw JSON,
    // with the match marked; r hides it and shows it again.
    const raw = page.locator(`article.entry[data-line="${callLine}"] pre.raw-json`);
    expect(await raw.textContent()).toBe(fixtureLines[callLine - 1]);
    expect(await raw.locator('mark').first().textContent()).toBe('"type":"toolCall"');
    await page.keyboard.press('r');
    await expect.poll(() => raw.count()).toBe(0);
    await page.keyboard.press('r');
    expect(await raw.textContent()).toBe(fixtureLines[callLine - 1]);
    await shot('transcript');

    // j / k move between entries and keep focus on the current one.
    await page.keyboard.press('j');
    await page.keyboard.press('j');
    expect(await page.evaluate(() => document.activeElement!.dataset['line'])).toBe(String(callLine + 2));
    await page.keyboard.press('k');
    expect(await page.evaluate(() => document.activeElement!.dataset['line'])).toBe(String(callLine + 1));
    await page.keyboard.press('ArrowDown');
    expect(await page.evaluate(() => document.activeElement!.dataset['line'])).toBe(String(callLine + 2));
  });

  it('searches within the loaded lines, then further, and says which', async () => {
    const query = 'user-message-selector';
    const expected = fixtureLines.map((l, i) => (l.toLowerCase().includes(query) ? i + 1 : 0)).filter(Boolean);
    await transcript().focus();
    await page.keyboard.press('Home');
    await page.keyboard.press('/');
    await page.keyboard.press('ControlOrMeta+a');
    await page.keyboard.type(query);
    await page.keyboard.press('Enter');
    await expect.poll(() => page.locator('#search-status').textContent()).toMatch(/^Match 1 of \d+ in the loaded lines \(lines 1–/);
    expect(await page.locator('article.entry.current-match').getAttribute('data-line')).toBe(String(expected[0]));
    expect(await page.locator('article.entry.current-match mark').count()).toBeGreaterThan(0);
    await page.keyboard.press('Enter');
    await expect.poll(() => page.locator('article.entry.current-match').getAttribute('data-line')).toBe(String(expected[1]));
    await page.keyboard.press('Shift+Enter');
    await expect.poll(() => page.locator('article.entry.current-match').getAttribute('data-line')).toBe(String(expected[0]));
    await shot('search');
    // Past the loaded lines: "Search further" reads on to the last match, then reports the end.
    const last = expected[expected.length - 1]!;
    for (let i = 0; i < expected.length + 2; i++) {
      if (Number(await page.locator('article.entry.current-match').getAttribute('data-line')) === last) break;
      await page.getByRole('button', { name: 'Search further' }).click();
      await page.waitForFunction(() => !document.getElementById('search-further')!.disabled);
    }
    expect(Number(await page.locator('article.entry.current-match').getAttribute('data-line'))).toBe(last);
    await page.getByRole('button', { name: 'Search further' }).click();
    await expect.poll(() => page.locator('#search-status').textContent()).toBe('No further match: searched to the end of the transcript.');
    await page.keyboard.press('Escape');
  });

  it('downloads the run byte for byte, assembled from lines when the API redirects to storage', async () => {
    const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Download .jsonl' }).click()]);
    expect(download.suggestedFilename()).toBe('pi-agent_conv-fixture_run-5.jsonl');
    expect(await readFile((await download.path())!, 'utf8')).toBe(fixture);
    await expect.poll(() => page.locator('#download-status').textContent()).toContain('(sha256 verified)');
  });

  it('opens the failed run: every other pi entry type by its own renderer, unknown entries and broken lines shown raw', async () => {
    await page.goto(`${baseUrl}/console#/conversation?agent=pi-agent&conv=conv-fixture`);
    await page.getByRole('link', { name: 'Run 2' }).click();
    await page.locator(`article.entry[data-line="${OTHER_TYPES.length}"]`).waitFor();
    expect(await page.locator('#run-info .badge[data-status="failed"]').count()).toBe(1);
    const renderers = await page.locator('article.entry').evaluateAll((rows) => rows.map((r) => [Number(r.getAttribute('data-line')), r.getAttribute('data-renderer')] as const).sort((a, b) => a[0] - b[0]));
    expect(renderers).toEqual(OTHER_TYPES.map(([, renderer], i) => [i + 1, renderer]));
    expect(await page.locator('article.entry[data-line="13"] pre.json').textContent()).toContain('never dropped');
    expect(await page.locator('article.entry[data-line="15"]').textContent()).toContain('this line is not JSON {');
    await shot('failed-run');
    const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Download .jsonl' }).click()]);
    expect(await readFile((await download.path())!, 'utf8')).toBe(failedRun);
  });

  it(`pages through a ${LARGE_LINES.toLocaleString('en-US')}-line transcript with bounded memory and DOM`, async () => {
    await page.goto(`${baseUrl}/console#/transcript?agent=gen-agent&conv=conv-large&run=1`);
    await page.locator('article.entry[data-line="1"]').waitFor();
    let maxRendered = 0;
    let maxWindow = 0;
    let seenEviction = false;
    for (let i = 0; i < 400; i++) {
      const before = await windowData();
      if (before.last >= 8000 && seenEviction) break;
      await transcript().evaluate((el) => (el.scrollTop = el.scrollHeight));
      await page.waitForFunction((last) => Number(document.getElementById('transcript')!.dataset['windowLastLine']) > last, before.last);
      const after = await windowData();
      maxRendered = Math.max(maxRendered, after.rendered);
      maxWindow = Math.max(maxWindow, after.lines);
      if (after.first > 1) seenEviction = true;
    }
    const deep = await windowData();
    expect(deep.last).toBeGreaterThanOrEqual(8000);
    expect(deep.first).toBeGreaterThan(1); // early pages left memory
    expect(maxRendered).toBeGreaterThan(0);
    expect(maxRendered).toBeLessThanOrEqual(120);
    expect(maxWindow).toBeLessThanOrEqual(6 * 500);
    await shot('large');

    // Scrolling back up refetches the pages that left, in order, without losing the place.
    const top = deep.first;
    await transcript().evaluate((el) => (el.scrollTop = 0));
    await page.waitForFunction((first) => Number(document.getElementById('transcript')!.dataset['windowFirstLine']) < first, top);
    const back = await windowData();
    expect(back.first).toBe(top - 500);
    expect(back.rendered).toBeLessThanOrEqual(120);

    // Search further reads on to the very last line (all 110 pages, none held at once).
    await page.keyboard.press('/');
    await page.keyboard.type(`"n":${LARGE_LINES}}`);
    await page.getByRole('button', { name: 'Search further' }).click();
    await page.locator(`article.entry.current-match[data-line="${LARGE_LINES}"]`).waitFor({ timeout: 60_000 });
    const end = await windowData();
    expect(end.complete).toBe(true);
    expect(end.lines).toBeLessThanOrEqual(2 * 500); // the window moved there: the pages in between were read, not kept
    expect(end.rendered).toBeLessThanOrEqual(120);
    // Home goes back to line 1.
    await transcript().focus();
    await page.keyboard.press('Home');
    await page.locator('article.entry.current[data-line="1"]').waitFor();
  }, 120_000);

  it('made no request outside its origin and raised no page errors', () => {
    expect(offOrigin).toEqual([]);
    expect(pageErrors).toEqual([]);
  });
});
