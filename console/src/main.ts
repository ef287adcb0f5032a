/**
 * The operator console (docs/DESIGN.md § Operator console): a static single-page app served at
 * `/console` that reads the operator API with an admin token. Routing is by URL fragment
 * (`#/…`), so the page works behind any base path and the server only ever serves one page.
 */
import './style.css';
import { AdminApi, ApiError } from './api.js';
import { describeToken, forgetToken, storeToken, storedToken, takeTokenFromFragment } from './auth.js';
import { h, replace } from './dom.js';
import { TranscriptView } from './transcript/view.js';
import { conversationsView, href, runsView, signInView } from './views.js';

const main = document.getElementById('main')!;
const crumbs = document.getElementById('crumbs')!;
const whoami = document.getElementById('whoami')!;

let token: string | undefined;
let api: AdminApi | undefined;
let transcript: TranscriptView | undefined;

function useToken(t: string): void {
  token = t;
  storeToken(t);
  api = new AdminApi(t, (err) => {
    if (err.status === 401) signOut('The token was rejected (expired or not valid here). Sign in again.');
    else if (err.code === 'admin_scope_required') signOut('That token has no transcripts:admin scope.');
  });
  const claims = describeToken(t);
  replace(
    whoami,
    claims.org ? h('span', {}, 'Organization ', h('strong', { id: 'org' }, claims.org)) : null,
    claims.exp ? h('span', { class: 'meta' }, ` · token expires ${new Date(claims.exp * 1000).toLocaleTimeString()}`) : null,
    ' ',
    h('button', { type: 'button', id: 'signout', onclick: () => signOut() }, 'Sign out'),
  );
}

function signOut(message?: string): void {
  token = undefined;
  api = undefined;
  forgetToken();
  whoami.replaceChildren();
  renderSignIn(message);
}

function renderSignIn(message?: string): void {
  transcript?.destroy();
  transcript = undefined;
  crumbs.replaceChildren();
  replace(
    main,
    signInView(async (t) => {
      const probe = new AdminApi(t, () => {});
      try {
        await probe.conversations({ limit: 1 });
      } catch (err) {
        if (err instanceof ApiError && err.status === 401) throw new ApiError(401, err.code, 'This token is not valid here (expired, or signed with another key)');
        if (err instanceof ApiError && err.code === 'admin_scope_required') throw new ApiError(403, err.code, 'This token has no transcripts:admin scope');
        throw err;
      }
      useToken(t);
      if (!location.hash.startsWith('#/')) history.replaceState(null, '', '#/');
      route();
    }, message),
  );
}

function onError(err: unknown): void {
  if (err instanceof ApiError && (err.status === 401 || err.status === 403)) return; // handled by signOut
  toast(err instanceof Error ? err.message : String(err));
}

let toastTimer: ReturnType<typeof setTimeout> | undefined;
function toast(message: string): void {
  const el = document.getElementById('toast')!;
  el.textContent = message;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (el.hidden = true), 6000);
}

function route(): void {
  if (!api || !token) return renderSignIn();
  transcript?.destroy();
  transcript = undefined;
  const raw = location.hash.replace(/^#\/?/, '');
  const [path = '', query = ''] = raw.split('?', 2);
  const params = new URLSearchParams(query);
  const agent = params.get('agent') ?? '';
  const conv = params.get('conv') ?? '';
  const crumb = (label: string, link?: string) => (link ? h('a', { href: link }, label) : h('span', { 'aria-current': 'page' }, label));
  if (path === 'conversation' && agent && conv) {
    replace(crumbs, crumb('Conversations', href('')), ' / ', crumb(agent, href('', { agent })), ' / ', crumb(conv));
    replace(main, runsView(api, params, onError));
  } else if (path === 'transcript' && agent && conv) {
    const run = Number(params.get('run'));
    const runId = Number.isSafeInteger(run) && run > 0 ? run : undefined;
    replace(crumbs, crumb('Conversations', href('')), ' / ', crumb(agent, href('', { agent })), ' / ', crumb(conv, href('conversation', { agent, conv })), ' / ', crumb(`Run ${runId ?? 'latest'}`));
    transcript = new TranscriptView(api, { agentId: agent, conversationId: conv, ...(runId !== undefined && { runId }) }, onError);
    replace(main, transcript.root);
    void transcript.start();
  } else {
    replace(crumbs, crumb('Conversations'), agent ? [' / ', crumb(agent)] : null);
    replace(main, conversationsView(api, params, onError));
  }
  document.title = `${(main.querySelector('h1')?.textContent ?? 'Console').trim()} · transcript-store console`;
}

const fromFragment = takeTokenFromFragment();
const initial = fromFragment ?? storedToken();
if (initial) useToken(initial);
window.addEventListener('hashchange', () => {
  route();
  // A new view: start keyboard and screen-reader users at its content.
  main.focus({ preventScroll: true });
});
route();
