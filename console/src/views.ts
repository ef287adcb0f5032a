/** The console's list views: sign-in, conversations of the organization, and one conversation's runs. */
import { ApiError, type AdminApi, type AgentSummary, type ConversationSummary, type RunSummary } from './api.js';
import { formatBytes, formatCount, formatTime, h, replace } from './dom.js';
import { stateBadge, statusBadge } from './transcript/view.js';

/** Hash routes: `#/`, `#/conversation?agent=…&conv=…`, `#/transcript?agent=…&conv=…&run=…`. */
export function href(route: string, params: Record<string, string | number | undefined> = {}): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== '') q.set(k, String(v));
  const s = q.toString();
  return `#/${route}${s ? `?${s}` : ''}`;
}

export function signInView(onToken: (token: string) => Promise<void>, message?: string): HTMLElement {
  const input = h('textarea', { id: 'token', rows: 4, required: true, autocomplete: 'off', spellcheck: 'false', 'aria-describedby': 'token-help signin-error' });
  const error = h('p', { id: 'signin-error', class: 'error-text', role: 'alert' }, message ?? '');
  const button = h('button', { type: 'submit', id: 'signin' }, 'Sign in');
  const form = h(
    'form',
    { class: 'signin', 'aria-labelledby': 'signin-title' },
    h('h1', { id: 'signin-title' }, 'Sign in'),
    h('label', { for: 'token' }, 'Admin token'),
    input,
    h('p', { id: 'token-help', class: 'help' }, 'A JWT with the transcripts:admin scope for your organization. It stays in this tab (sessionStorage) and is only ever sent in the Authorization header.'),
    error,
    button,
  );
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const token = input.value.trim().replace(/^Bearer\s+/i, '');
    if (!token) {
      error.textContent = 'Paste a token first.';
      input.focus();
      return;
    }
    button.disabled = true;
    error.textContent = '';
    onToken(token)
      .catch((err: unknown) => {
        error.textContent = err instanceof ApiError ? `${err.message} (${err.code})` : String(err);
        input.focus();
      })
      .finally(() => (button.disabled = false));
  });
  // A token is one line: Enter signs in (Shift+Enter is still a newline), as in any one-field form.
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
  queueMicrotask(() => input.focus());
  return form;
}

/** Conversations, newest activity first, optionally of one agent; paging with the API's cursor. */
export function conversationsView(api: AdminApi, params: URLSearchParams, onError: (e: unknown) => void): HTMLElement {
  const agent = params.get('agent') ?? '';
  const limit = clampLimit(params.get('limit'));
  const select = h('select', { id: 'agent-filter' }, h('option', { value: '' }, 'All agents'));
  if (agent) select.appendChild(h('option', { value: agent, selected: true }, agent));
  const limitSelect = h('select', { id: 'page-size' }, ...[25, 50, 100].map((n) => h('option', { value: n, selected: n === limit }, String(n))));
  const tbody = h('tbody', {});
  const status = h('p', { class: 'status', 'aria-live': 'polite', id: 'conversations-status' }, 'Loading…');
  const prev = h('button', { type: 'button', id: 'prev-page', disabled: true }, '← Newer');
  const next = h('button', { type: 'button', id: 'next-page', disabled: true }, 'Older →');
  const cursors: (string | null)[] = [null];
  let pageIndex = 0;

  const go = () => {
    location.hash = href('', { agent: select.value, limit: limitSelect.value === '50' ? undefined : limitSelect.value });
  };
  select.addEventListener('change', go);
  limitSelect.addEventListener('change', go);

  const load = async () => {
    status.textContent = 'Loading…';
    prev.disabled = next.disabled = true;
    try {
      const res = await api.conversations({ ...(agent && { agentId: agent }), limit, cursor: cursors[pageIndex] ?? null });
      replace(tbody, ...res.conversations.map(conversationRow));
      if (res.nextCursor) cursors[pageIndex + 1] = res.nextCursor;
      else cursors.length = pageIndex + 1;
      prev.disabled = pageIndex === 0;
      next.disabled = !res.nextCursor;
      status.textContent = res.conversations.length
        ? `Page ${pageIndex + 1}: ${res.conversations.length} conversation${res.conversations.length === 1 ? '' : 's'}${res.nextCursor ? '; more on the next page' : ''}.`
        : pageIndex === 0
          ? 'No conversations yet.'
          : 'No more conversations.';
    } catch (err) {
      status.textContent = `Error: ${err instanceof Error ? err.message : String(err)}`;
      onError(err);
    }
  };
  prev.addEventListener('click', () => {
    pageIndex = Math.max(0, pageIndex - 1);
    void load();
  });
  next.addEventListener('click', () => {
    pageIndex++;
    void load();
  });
  void load();
  void loadAgents(api, select, agent);

  return h(
    'section',
    { class: 'list-view', 'aria-labelledby': 'conversations-title' },
    h('h1', { id: 'conversations-title' }, 'Conversations'),
    h('div', { class: 'toolbar' }, h('label', { for: 'agent-filter' }, 'Agent'), select, h('label', { for: 'page-size' }, 'Per page'), limitSelect),
    h(
      'table',
      { class: 'grid', id: 'conversations' },
      h('caption', { class: 'visually-hidden' }, 'Conversations, newest activity first'),
      h('thead', {}, h('tr', {}, ...['Conversation', 'Agent', 'Last activity', 'Latest run', 'Runs', 'Stored'].map((t) => h('th', { scope: 'col' }, t)))),
      tbody,
    ),
    h('nav', { class: 'pager', 'aria-label': 'Conversation pages' }, prev, next),
    status,
  );
}

function conversationRow(c: ConversationSummary): HTMLElement {
  return h(
    'tr',
    { 'data-conversation': c.conversationId },
    h('td', {}, h('a', { href: href('conversation', { agent: c.agentId, conv: c.conversationId }) }, c.conversationId)),
    h('td', {}, h('a', { href: href('', { agent: c.agentId }), title: `Only ${c.agentId}` }, c.agentId)),
    h('td', {}, formatTime(c.lastActivityAt)),
    h('td', { class: 'num' }, c.latestRunId === null || c.latestRunId === undefined ? '–' : h('a', { href: href('transcript', { agent: c.agentId, conv: c.conversationId, run: c.latestRunId }) }, `#${c.latestRunId}`)),
    h('td', { class: 'num' }, formatCount(c.runs)),
    h('td', { class: 'num' }, formatBytes(c.bytes)),
  );
}

async function loadAgents(api: AdminApi, select: HTMLSelectElement, current: string): Promise<void> {
  const agents: AgentSummary[] = [];
  try {
    let cursor: string | null = null;
    for (let i = 0; i < 20; i++) {
      const res: { agents: AgentSummary[]; nextCursor: string | null } = await api.agents({ cursor });
      agents.push(...res.agents);
      cursor = res.nextCursor;
      if (!cursor) break;
    }
  } catch {
    return; // the filter keeps "All agents" (and the current one)
  }
  for (const a of agents) {
    if (a.agentId === current) continue;
    select.appendChild(h('option', { value: a.agentId }, `${a.agentId} (${formatCount(a.conversations)})`));
  }
}

/** One conversation's runs, newest first, with status and state badges. */
export function runsView(api: AdminApi, params: URLSearchParams, onError: (e: unknown) => void): HTMLElement {
  const agentId = params.get('agent') ?? '';
  const conversationId = params.get('conv') ?? '';
  const tbody = h('tbody', {});
  const status = h('p', { class: 'status', 'aria-live': 'polite', id: 'runs-status' }, 'Loading…');
  const prev = h('button', { type: 'button', id: 'prev-page', disabled: true }, '← Newer');
  const next = h('button', { type: 'button', id: 'next-page', disabled: true }, 'Older →');
  const cursors: (string | null)[] = [null];
  let pageIndex = 0;
  const load = async () => {
    status.textContent = 'Loading…';
    prev.disabled = next.disabled = true;
    try {
      const res = await api.runs({ agentId, conversationId, limit: 50, cursor: cursors[pageIndex] ?? null });
      replace(tbody, ...res.runs.map((r) => runRow(agentId, conversationId, r)));
      if (res.nextCursor) cursors[pageIndex + 1] = res.nextCursor;
      prev.disabled = pageIndex === 0;
      next.disabled = !res.nextCursor;
      status.textContent = res.runs.length ? `Page ${pageIndex + 1}: ${res.runs.length} run${res.runs.length === 1 ? '' : 's'}.` : 'No runs stored.';
    } catch (err) {
      status.textContent = `Error: ${err instanceof Error ? err.message : String(err)}`;
      onError(err);
    }
  };
  prev.addEventListener('click', () => {
    pageIndex = Math.max(0, pageIndex - 1);
    void load();
  });
  next.addEventListener('click', () => {
    pageIndex++;
    void load();
  });
  void load();
  return h(
    'section',
    { class: 'list-view', 'aria-labelledby': 'runs-title' },
    h('h1', { id: 'runs-title' }, 'Conversation ', h('code', {}, conversationId)),
    h('p', { class: 'meta' }, 'Agent ', h('a', { href: href('', { agent: agentId }) }, agentId)),
    h(
      'table',
      { class: 'grid', id: 'runs' },
      h('caption', { class: 'visually-hidden' }, 'Runs, newest first'),
      h('thead', {}, h('tr', {}, ...['Run', 'Status', 'State', 'Size', 'Created', 'sha256'].map((t) => h('th', { scope: 'col' }, t)))),
      tbody,
    ),
    h('nav', { class: 'pager', 'aria-label': 'Run pages' }, prev, next),
    status,
  );
}

function runRow(agentId: string, conversationId: string, r: RunSummary): HTMLElement {
  return h(
    'tr',
    { 'data-run': r.runId, 'data-status': r.terminalStatus, 'data-state': r.state },
    h('td', {}, h('a', { href: href('transcript', { agent: agentId, conv: conversationId, run: r.runId }) }, `Run ${r.runId}`)),
    h('td', {}, statusBadge(r.terminalStatus)),
    h('td', {}, stateBadge(r.state)),
    h('td', { class: 'num' }, formatBytes(r.bytes)),
    h('td', {}, formatTime(r.createdAt)),
    h('td', {}, h('code', { title: r.sha256 }, (r.sha256 ?? '').slice(0, 12))),
  );
}

function clampLimit(raw: string | null): number {
  const n = Number(raw ?? 50);
  return [25, 50, 100].includes(n) ? n : 50;
}
