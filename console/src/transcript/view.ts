/**
 * The transcript view: a run's `session.jsonl` rendered entry by entry (entries.ts) in a virtual list
 * (virtual-list.ts) fed page by page from `GET /admin/lines` (source.ts).
 *
 * Memory and DOM stay bounded whatever the transcript's size: at most {@link MAX_WINDOW_PAGES} pages of
 * lines are held (a window that slides as the reader scrolls; pages that leave it are dropped and
 * refetched with their saved cursor when the reader comes back), and at most MAX_RENDERED rows exist in
 * the DOM. A 200 MB transcript is never fetched whole.
 *
 * Search: Enter searches the loaded lines (the window); "Search further" then reads the following pages
 * one at a time without rendering them and moves the window to the next match. A line matches when its
 * stored text or any string in it (JSON-unescaped) contains the query, case-insensitively.
 *
 * Keyboard: j / ↓ next entry, k / ↑ previous, Enter expands or collapses the entry's tool calls, results
 * and thinking, r shows its raw JSON, Home goes to the first line, End to the last loaded one, / focuses
 * the search box (Escape there returns to the entries). The entry keys also work while nothing in
 * particular has focus (right after the view opens).
 */
import { ApiError, type AdminApi, type RunSummary } from '../api.js';
import { formatBytes, formatCount, formatTime, h, replace } from '../dom.js';
import { entryType, renderLine, type Rendering } from './entries.js';
import { LineSource, type Line } from './source.js';
import { VirtualList } from './virtual-list.js';

/** Pages of lines kept in memory (the window); each page is ≤ 500 lines and ≤ 1 MiB. */
export const MAX_WINDOW_PAGES = 6;

export interface TranscriptScope {
  agentId: string;
  conversationId: string;
  runId?: number;
}

interface SearchState {
  query: string;
  matches: Line[];
  set: Set<Line>;
  stale: boolean;
}

export class TranscriptView {
  readonly root: HTMLElement;
  private readonly source: LineSource;
  private readonly list: VirtualList<Line>;
  private lo = 0;
  private hi = 0;
  private loading = false;
  private current: Line | undefined;
  private readonly openState = new WeakMap<Line, Map<number, boolean>>();
  private readonly rawShown = new WeakSet<Line>();
  private search: SearchState = { query: '', matches: [], set: new Set(), stale: true };
  private further: AbortController | undefined;
  private readonly statusEl: HTMLElement;
  private readonly downloadStatus: HTMLElement;
  private readonly searchStatus: HTMLElement;
  private readonly searchInput: HTMLInputElement;
  private readonly furtherButton: HTMLButtonElement;
  private readonly stopButton: HTMLButtonElement;
  private readonly downloadButton: HTMLButtonElement;
  private readonly runInfo: HTMLElement;
  private readonly disposers: (() => void)[] = [];
  private destroyed = false;

  constructor(
    private readonly api: AdminApi,
    private readonly scope: TranscriptScope,
    private readonly onError: (err: unknown) => void,
  ) {
    this.source = new LineSource(api, scope);
    this.statusEl = h('p', { class: 'status', id: 'transcript-status', 'aria-live': 'polite' }, 'Loading…');
    this.searchStatus = h('p', { class: 'search-status', id: 'search-status', 'aria-live': 'polite' }, 'Searches the loaded lines; "Search further" reads on to the end of the transcript.');
    this.searchInput = h('input', { id: 'search', type: 'search', placeholder: 'Search (/)', autocomplete: 'off', spellcheck: 'false', 'aria-describedby': 'search-status' });
    this.furtherButton = h('button', { type: 'button', id: 'search-further', onclick: () => void this.searchFurther() }, 'Search further');
    this.stopButton = h('button', { type: 'button', id: 'search-stop', hidden: true, onclick: () => this.further?.abort() }, 'Stop');
    this.downloadButton = h('button', { type: 'button', id: 'download', onclick: () => void this.download() }, 'Download .jsonl');
    this.downloadStatus = h('span', { class: 'status', id: 'download-status', 'aria-live': 'polite' });
    this.runInfo = h('div', { class: 'run-info', id: 'run-info' });

    const viewport = h('div', {
      class: 'transcript',
      id: 'transcript',
      role: 'feed',
      tabindex: 0,
      'aria-label': 'Transcript entries',
      'aria-busy': 'true',
      'aria-describedby': 'transcript-help',
    });
    this.list = new VirtualList<Line>(viewport, {
      estimate: estimateHeight,
      render: (line) => this.renderRow(line),
      onLayout: (info) => this.onLayout(info),
    });
    viewport.addEventListener('keydown', (e) => this.onKey(e));
    viewport.addEventListener('focus', (e) => {
      if (e.target !== viewport) return;
      const target = this.current ?? this.firstVisible();
      if (target) this.select(target, true);
    });
    viewport.addEventListener('toggle', (e) => this.onToggle(e), true);

    const form = h(
      'form',
      { class: 'search', role: 'search', 'aria-label': 'Search in this transcript', onsubmit: (e: Event) => e.preventDefault() },
      h('label', { for: 'search' }, 'Search'),
      this.searchInput,
      h('button', { type: 'button', id: 'search-prev', onclick: () => this.step(-1), 'aria-label': 'Previous match' }, '↑'),
      h('button', { type: 'button', id: 'search-next', onclick: () => this.step(1), 'aria-label': 'Next match' }, '↓'),
      this.furtherButton,
      this.stopButton,
    );
    this.searchInput.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') {
        e.preventDefault();
        if (e.altKey) void this.searchFurther();
        else this.step(e.shiftKey ? -1 : 1);
      } else if (e.key === 'Escape') {
        e.preventDefault();
        viewport.focus();
      }
    });
    this.searchInput.addEventListener('input', () => {
      this.search = { query: '', matches: [], set: new Set(), stale: true };
      this.repaintMatches();
    });

    this.root = h(
      'section',
      { class: 'transcript-view', 'aria-labelledby': 'transcript-title' },
      h('div', { class: 'transcript-head' }, h('h1', { id: 'transcript-title' }, `Run ${scope.runId ?? '(latest)'}`), this.runInfo, this.downloadStatus, this.downloadButton),
      form,
      this.searchStatus,
      viewport,
      h('div', { class: 'transcript-foot' }, this.statusEl, h('p', { class: 'help', id: 'transcript-help' }, 'Keys: j/k or ↓/↑ move between entries · Enter expands · r raw JSON · Home first line · End last loaded · / search (Esc back to the entries)')),
    );

    const onDocKey = (e: KeyboardEvent) => {
      if (e.key === '/' && !isTyping(e.target)) {
        e.preventDefault();
        this.searchInput.focus();
        this.searchInput.select();
      } else if (ENTRY_KEYS.has(e.key) && !e.ctrlKey && !e.metaKey && !e.altKey && isPageLevel(e.target)) {
        // Nothing in particular has focus (the router focuses <main> on every new view): the entry keys
        // act on the transcript, as the help line promises. The first j/k/↓/↑ selects the first visible
        // entry (focusing the list does that); Home and End then act as usual.
        e.preventDefault();
        const fresh = this.current === undefined;
        viewport.focus({ preventScroll: true });
        if (!(fresh && (e.key === 'j' || e.key === 'k' || e.key === 'ArrowDown' || e.key === 'ArrowUp'))) this.onKey(e);
      }
    };
    document.addEventListener('keydown', onDocKey);
    this.disposers.push(() => document.removeEventListener('keydown', onDocKey));
  }

  /** Starts loading (first page and the run's details). */
  async start(): Promise<void> {
    void this.loadRunInfo();
    try {
      const lines = await this.source.fetch(0);
      if (this.destroyed) return;
      this.lo = 0;
      this.hi = 1;
      this.list.reset(lines);
      this.list.viewport.setAttribute('aria-busy', 'false');
      (this.root.querySelector('#transcript-title') as HTMLElement).textContent = `Run ${this.source.runId ?? this.scope.runId ?? ''}`;
      if (!lines.length) this.statusEl.textContent = 'This run is empty.';
    } catch (err) {
      this.fail(err);
    }
  }

  destroy(): void {
    this.destroyed = true;
    this.further?.abort();
    for (const d of this.disposers) d();
  }

  // ------------------------------------------------------------------ rows

  private renderRow(line: Line): HTMLElement {
    const r: Rendering & { entry?: unknown } =
      line.truncatedBytes !== undefined
        ? { renderer: 'truncated', label: 'Line too long to show', kind: 'invalid', body: [h('p', { class: 'meta' }, `This line is ${formatBytes(line.truncatedBytes)}; only its beginning is shown. Download the run for all of it.`), h('pre', { class: 'json' }, line.text)] }
        : renderLine(line.text);
    const n = displayLine(line);
    const rawButton = h('button', { type: 'button', class: 'raw-toggle', 'aria-pressed': String(this.rawShown.has(line)), 'aria-label': `Raw JSON of line ${n}`, title: 'Raw JSON (r)' }, '{ }');
    const headId = `entry-${line.page.index}-${line.line}`;
    const row = h(
      'article',
      {
        class: `entry entry--${r.kind}`,
        'data-type': 'entry' in r ? entryType(r.entry) : '(not JSON)',
        'data-renderer': r.renderer,
        'data-line': n,
        tabindex: -1,
        'aria-labelledby': headId,
        'aria-posinset': n,
        'aria-setsize': this.source.complete ? this.totalLines() ?? -1 : -1,
      },
      h('header', { class: 'entry-head', id: headId }, h('span', { class: 'line-no' }, `#${n}`), ' ', h('span', { class: 'entry-label' }, r.label), h('span', { class: 'spacer' }), r.timestamp !== undefined ? h('time', { class: 'entry-time' }, formatTime(r.timestamp)) : null, rawButton),
      h('div', { class: 'entry-body' }, ...r.body),
    );
    rawButton.addEventListener('click', (e) => {
      e.stopPropagation();
      this.toggleRaw(line);
    });
    row.addEventListener('mousedown', (e) => {
      if (!(e.target as HTMLElement).closest('summary,button,a')) this.select(line, false);
    });
    row.addEventListener('focus', () => this.select(line, false));
    if (this.rawShown.has(line)) row.appendChild(h('pre', { class: 'raw-json', 'aria-label': `Raw JSON of line ${n}` }, line.text));
    const overrides = this.openState.get(line);
    if (overrides) {
      const all = row.querySelectorAll('details');
      for (const [i, open] of overrides) if (all[i]) all[i].open = open;
    }
    if (line === this.current) {
      row.classList.add('current');
      row.tabIndex = 0;
    }
    if (this.search.query && this.search.set.has(line)) {
      row.classList.add('match');
      highlight(row, this.search.query);
      if (line === this.current) row.classList.add('current-match');
    }
    return row;
  }

  private onToggle(e: Event): void {
    const details = e.target as HTMLDetailsElement;
    const row = details.closest('article.entry') as (HTMLElement & { __item?: Line }) | null;
    const line = row?.__item;
    if (!row || !line) return;
    const all = Array.from(row.querySelectorAll('details'));
    const i = all.indexOf(details);
    let m = this.openState.get(line);
    if (!m) this.openState.set(line, (m = new Map()));
    m.set(i, details.open);
  }

  private toggleRaw(line: Line): void {
    if (this.rawShown.has(line)) this.rawShown.delete(line);
    else this.rawShown.add(line);
    this.list.refresh(line);
    if (line === this.current) this.list.rowOf(line)?.focus({ preventScroll: true });
  }

  /** Enter: opens every collapsed part of the entry, or closes them all when all are open. */
  private toggleExpand(line: Line): void {
    const row = this.list.rowOf(line);
    if (!row) return;
    const all = Array.from(row.querySelectorAll('details'));
    if (!all.length) return;
    const open = all.some((d) => !d.open);
    const m = new Map<number, boolean>();
    all.forEach((d, i) => {
      d.open = open;
      m.set(i, open);
    });
    this.openState.set(line, m);
  }

  private select(line: Line, focus: boolean): void {
    if (this.current && this.current !== line) {
      const old = this.list.rowOf(this.current);
      if (old) {
        old.classList.remove('current', 'current-match');
        old.tabIndex = -1;
      }
    }
    this.current = line;
    const row = this.list.rowOf(line);
    if (row) {
      row.classList.add('current');
      row.tabIndex = 0;
      if (focus && document.activeElement !== row) row.focus({ preventScroll: true });
    }
  }

  private firstVisible(): Line | undefined {
    const vp = this.list.viewport;
    const top = vp.getBoundingClientRect().top;
    let best: { line: Line; y: number } | undefined;
    for (const row of vp.querySelectorAll<HTMLElement & { __item?: Line }>('article.entry')) {
      const y = row.getBoundingClientRect().bottom - top;
      if (y > 0 && row.__item && (!best || y < best.y)) best = { line: row.__item, y };
    }
    return best?.line ?? this.list.at(0);
  }

  private onKey(e: KeyboardEvent): void {
    if (isTyping(e.target) || e.ctrlKey || e.metaKey || e.altKey) return;
    const onRow = (e.target as HTMLElement).matches('article.entry');
    switch (e.key) {
      case 'j':
      case 'ArrowDown':
        e.preventDefault();
        this.move(1);
        break;
      case 'k':
      case 'ArrowUp':
        e.preventDefault();
        this.move(-1);
        break;
      case 'Enter':
        if (onRow && this.current) {
          e.preventDefault();
          this.toggleExpand(this.current);
        }
        break;
      case 'r':
        if (this.current) {
          e.preventDefault();
          this.toggleRaw(this.current);
        }
        break;
      case 'Home':
        e.preventDefault();
        void this.goFirst();
        break;
      case 'End': {
        e.preventDefault();
        const last = this.list.at(this.list.length - 1);
        if (last) {
          this.list.reveal(last, 'nearest');
          this.select(last, true);
        }
        break;
      }
    }
  }

  private move(delta: number): void {
    const from = this.current && this.list.indexOf(this.current) >= 0 ? this.list.indexOf(this.current) : this.list.indexOf(this.firstVisible()!) - (delta > 0 ? 1 : -1);
    const i = Math.max(0, Math.min(this.list.length - 1, from + delta));
    const line = this.list.at(i);
    if (!line) return;
    this.list.reveal(line, 'nearest');
    this.select(line, true);
  }

  private async goFirst(): Promise<void> {
    if (this.lo === 0) {
      const first = this.list.at(0);
      if (first) {
        this.list.reveal(first, 'start');
        this.select(first, true);
      }
      return;
    }
    await this.jumpTo(0, (lines) => lines[0]);
  }

  // ------------------------------------------------------------------ window

  private onLayout(info: { nearTop: boolean; nearBottom: boolean }): void {
    this.updateStatus();
    if (this.loading || this.destroyed || this.hi === 0) return;
    if (info.nearBottom && this.source.hasAfter(this.hi - 1) === true) void this.loadBelow();
    else if (info.nearTop && this.lo > 0) void this.loadAbove();
  }

  private async loadBelow(): Promise<void> {
    this.loading = true;
    try {
      const lines = await this.source.fetch(this.hi);
      if (this.destroyed) return;
      this.list.append(lines);
      this.hi++;
      while (this.hi - this.lo > MAX_WINDOW_PAGES) {
        this.list.drop(this.pageCount(this.lo));
        this.lo++;
      }
      this.search.stale = true;
    } catch (err) {
      this.fail(err);
      return;
    } finally {
      this.loading = false;
    }
    this.list.update();
  }

  private async loadAbove(): Promise<void> {
    this.loading = true;
    try {
      const lines = await this.source.fetch(this.lo - 1);
      if (this.destroyed) return;
      this.list.prepend(lines);
      this.lo--;
      while (this.hi - this.lo > MAX_WINDOW_PAGES) {
        this.list.drop(-this.pageCount(this.hi - 1));
        this.hi--;
      }
      this.search.stale = true;
    } catch (err) {
      this.fail(err);
      return;
    } finally {
      this.loading = false;
    }
    this.list.update();
  }

  /** Replaces the window by page `index` (its `lines` when already fetched) and selects the line `pick` chooses in it. */
  private async jumpTo(index: number, pick: (lines: Line[]) => Line | undefined, fetched?: Line[]): Promise<Line | undefined> {
    this.loading = true;
    try {
      const lines = fetched ?? (await this.source.fetch(index));
      if (this.destroyed) return undefined;
      this.lo = index;
      this.hi = index + 1;
      this.current = undefined;
      const target = pick(lines);
      this.search.stale = true;
      this.list.reset(lines);
      if (target) {
        this.list.reveal(target, 'center');
        this.select(target, true);
      }
      return target;
    } finally {
      this.loading = false;
      this.list.update();
    }
  }

  private pageCount(index: number): number {
    return this.source.pages[index]?.lineCount ?? 0;
  }

  private totalLines(): number | undefined {
    if (!this.source.complete) return undefined;
    let n = 0;
    for (const p of this.source.pages) n += p.lineCount ?? 0;
    return n;
  }

  private updateStatus(): void {
    const first = this.list.at(0);
    const last = this.list.at(this.list.length - 1);
    const vp = this.list.viewport;
    vp.dataset['windowFirstLine'] = first ? String(displayLine(first)) : '';
    vp.dataset['windowLastLine'] = last ? String(displayLine(last)) : '';
    vp.dataset['windowLines'] = String(this.list.length);
    vp.dataset['rendered'] = String(this.list.renderedCount);
    const atEnd = this.source.hasAfter(this.hi - 1) === false;
    vp.dataset['complete'] = String(atEnd);
    if (!first || !last) return;
    const bytes = this.source.bytes;
    const end = last.page.endOffset;
    const pct = bytes && end !== undefined ? Math.min(100, Math.round((Math.min(end, bytes) / bytes) * 100)) : undefined;
    this.statusEl.textContent =
      `Lines ${formatCount(displayLine(first))}–${formatCount(displayLine(last))} in memory` +
      (atEnd ? ' · end of transcript' : ' · more below (scroll to load)') +
      (this.lo > 0 ? ' · earlier lines reload when you scroll up' : '') +
      (bytes !== undefined && end !== undefined ? ` · ${formatBytes(Math.min(end, bytes))} of ${formatBytes(bytes)}${pct !== undefined ? ` (${pct}%)` : ''}` : '');
  }

  // ------------------------------------------------------------------ search

  private refreshMatches(): void {
    const query = this.searchInput.value.trim().toLowerCase();
    if (query !== this.search.query || this.search.stale) {
      const matches = query ? this.list.all.filter((l) => lineMatches(l.text, query)) : [];
      this.search = { query, matches, set: new Set(matches), stale: false };
      this.repaintMatches();
    }
  }

  private repaintMatches(): void {
    for (const line of this.list.all) if (this.list.rowOf(line)) this.list.refresh(line);
  }

  /** Next (+1) or previous (−1) match in the loaded lines. */
  step(dir: 1 | -1): void {
    this.refreshMatches();
    const { query, matches } = this.search;
    if (!query) {
      this.searchStatus.textContent = 'Type something to search for.';
      return;
    }
    const at = this.current ? this.list.indexOf(this.current) : -1;
    const candidates = dir > 0 ? matches.filter((m) => this.list.indexOf(m) > at) : matches.filter((m) => this.list.indexOf(m) < at).reverse();
    const target = candidates[0];
    const range = this.rangeText();
    if (!target) {
      this.searchStatus.textContent = matches.length
        ? `No ${dir > 0 ? 'further' : 'earlier'} match in the loaded lines (${range}); ${matches.length} match${matches.length === 1 ? '' : 'es'} there in all.${dir > 0 && !this.atEnd() ? ' "Search further" reads on.' : ''}`
        : `No match in the loaded lines (${range}).${this.atEnd() && this.lo === 0 ? '' : ' "Search further" reads the rest of the transcript.'}`;
      return;
    }
    this.focusMatch(target);
    const k = matches.indexOf(target) + 1;
    this.searchStatus.textContent = `Match ${k} of ${matches.length} in the loaded lines (${range}), line ${displayLine(target)}.`;
  }

  private focusMatch(target: Line): void {
    this.list.reveal(target, 'center');
    this.select(target, false);
    let row = this.list.rowOf(target);
    if (row && !row.querySelector('mark')) {
      // The query is only in the stored JSON (a field name, escaped text): show the raw line.
      this.rawShown.add(target);
      this.list.refresh(target);
      row = this.list.rowOf(target);
    }
    if (row) {
      row.classList.add('current-match');
      const mark = row.querySelector('mark');
      for (let d = mark?.parentElement?.closest('details'); d; d = d.parentElement?.closest('details')) {
        if (!d.open) d.open = true;
      }
      this.list.reveal(target, 'center');
    }
  }

  private atEnd(): boolean {
    return this.source.hasAfter(this.hi - 1) === false;
  }

  private rangeText(): string {
    const first = this.list.at(0);
    const last = this.list.at(this.list.length - 1);
    return first && last ? `lines ${formatCount(displayLine(first))}–${formatCount(displayLine(last))}` : 'none';
  }

  /** The next match after the current one: in the loaded lines, else reading the following pages. */
  async searchFurther(): Promise<void> {
    this.refreshMatches();
    const { query, matches } = this.search;
    if (!query) {
      this.searchStatus.textContent = 'Type something to search for.';
      return;
    }
    const at = this.current ? this.list.indexOf(this.current) : -1;
    if (matches.some((m) => this.list.indexOf(m) > at)) return this.step(1);
    if (this.atEnd()) {
      this.searchStatus.textContent = 'No further match: searched to the end of the transcript.';
      return;
    }
    this.further?.abort();
    const ctl = new AbortController();
    this.further = ctl;
    this.furtherButton.disabled = true;
    this.stopButton.hidden = false;
    try {
      for (let p = this.hi; this.source.has(p); p++) {
        const lines = await this.source.fetch(p, ctl.signal);
        if (ctl.signal.aborted || this.destroyed) return;
        const hit = lines.find((l) => lineMatches(l.text, query));
        if (hit) {
          const target = await this.jumpTo(p, () => hit, lines);
          this.refreshMatches();
          if (target) {
            this.focusMatch(target);
            this.list.rowOf(target)?.focus({ preventScroll: true });
          }
          this.searchStatus.textContent = `Found at line ${displayLine(hit)} (read on from the loaded lines).`;
          return;
        }
        const last = lines[lines.length - 1];
        const bytes = this.source.bytes;
        this.searchStatus.textContent = `Searching further… line ${last ? formatCount(displayLine(last)) : '?'}${bytes && last?.page.endOffset !== undefined ? `, ${Math.round((Math.min(last.page.endOffset, bytes) / bytes) * 100)}%` : ''}`;
        if (this.source.hasAfter(p) === false) break;
      }
      this.searchStatus.textContent = 'No further match: searched to the end of the transcript.';
    } catch (err) {
      if ((err as Error).name === 'AbortError') this.searchStatus.textContent = 'Search stopped.';
      else this.fail(err);
    } finally {
      this.furtherButton.disabled = false;
      this.stopButton.hidden = true;
      if (this.further === ctl) this.further = undefined;
    }
  }

  // ------------------------------------------------------------------ run info and download

  private async loadRunInfo(): Promise<void> {
    let run: RunSummary | undefined;
    try {
      let cursor: string | null = null;
      for (let i = 0; i < 5 && !run; i++) {
        const page: { runs: RunSummary[]; nextCursor: string | null } = await this.api.runs({ agentId: this.scope.agentId, conversationId: this.scope.conversationId, limit: 100, cursor });
        run = this.scope.runId === undefined ? page.runs.find((r) => r.state === 'latest') : page.runs.find((r) => r.runId === this.scope.runId);
        cursor = page.nextCursor;
        if (!cursor) break;
      }
    } catch (err) {
      if (!(err instanceof ApiError) || (err.status !== 401 && err.status !== 403)) return;
      throw err;
    }
    if (!run || this.destroyed) return;
    this.run = run;
    replace(
      this.runInfo,
      statusBadge(run.terminalStatus),
      ' ',
      stateBadge(run.state),
      h('span', { class: 'meta' }, ` ${formatBytes(run.bytes)} · created ${formatTime(run.createdAt)} · sha256 `, h('code', { title: run.sha256 }, run.sha256.slice(0, 12) + '…')),
    );
  }

  private run: RunSummary | undefined;

  private async download(): Promise<void> {
    const btn = this.downloadButton;
    btn.disabled = true;
    const runId = this.source.runId ?? this.scope.runId;
    try {
      if (runId === undefined) throw new Error('the run is not known yet');
      this.downloadStatus.textContent = 'Preparing the download…';
      let blob = await this.api.runBlob({ agentId: this.scope.agentId, conversationId: this.scope.conversationId, runId });
      if (!blob) blob = await this.assembleFromLines(runId);
      let verified = '';
      if (this.run?.sha256 && crypto.subtle) {
        const digest = Array.from(new Uint8Array(await crypto.subtle.digest('SHA-256', await blob.arrayBuffer())), (b) => b.toString(16).padStart(2, '0')).join('');
        verified = digest === this.run.sha256 ? ' (sha256 verified)' : ' (WARNING: sha256 differs from the stored run)';
      }
      const url = URL.createObjectURL(blob);
      const a = h('a', { href: url, download: `${safeName(this.scope.agentId)}_${safeName(this.scope.conversationId)}_run-${runId}.jsonl`, hidden: true });
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
      this.downloadStatus.textContent = `Downloaded ${formatBytes(blob.size)}${verified}.`;
    } catch (err) {
      this.downloadStatus.textContent = `Download failed: ${err instanceof Error ? err.message : String(err)}`;
      this.onError(err);
    } finally {
      btn.disabled = false;
    }
  }

  /** The whole run rebuilt from its lines (for runs the API redirects to storage). */
  private async assembleFromLines(runId: number): Promise<Blob> {
    const parts: string[] = [];
    const src = new LineSource(this.api, { ...this.scope, runId });
    for (let p = 0; src.has(p); p++) {
      const lines = await src.fetch(p);
      for (const l of lines) {
        if (l.truncatedBytes !== undefined) throw new Error(`line ${l.line} is too long to assemble here (${formatBytes(l.truncatedBytes)}); fetch the run with the API instead`);
        parts.push(l.text, '\n');
      }
      this.downloadStatus.textContent = `Preparing the download… ${formatBytes(src.pages[p]?.endOffset)} of ${formatBytes(src.bytes)}`;
      if (src.hasAfter(p) === false) break;
    }
    // The last line has a newline only if the run ends with one.
    const total = src.bytes ?? 0;
    const last = src.pages[src.pages.length - 1];
    if (parts.length && last?.endOffset !== undefined && last.endOffset > total) parts.pop();
    return new Blob(parts, { type: 'application/x-ndjson' });
  }

  private fail(err: unknown): void {
    if (this.destroyed) return;
    const msg = err instanceof ApiError ? `${err.message} (${err.code})` : err instanceof Error ? err.message : String(err);
    this.statusEl.textContent = `Error: ${msg}`;
    this.list.viewport.setAttribute('aria-busy', 'false');
    this.onError(err);
  }
}

/** Line number for display: the API's (1-based). */
export function displayLine(line: Line): number {
  return line.line;
}

function estimateHeight(line: Line): number {
  const t = line.text;
  if (t.length < 200) return 56;
  if (t.includes('"role":"toolResult"')) return 64;
  if (t.includes('"role":"assistant"')) return Math.min(400, 90 + t.length / 12);
  return Math.min(400, 64 + t.length / 10);
}

/** Does a stored line match the (lower-case) query: in its text, or in its JSON strings unescaped. */
export function lineMatches(text: string, query: string): boolean {
  const lower = text.toLowerCase();
  if (lower.includes(query)) return true;
  if (!text.includes('\\')) return false;
  try {
    const strings: string[] = [];
    collectStrings(JSON.parse(text), strings);
    return strings.join('\n').toLowerCase().includes(query);
  } catch {
    return false;
  }
}

function collectStrings(v: unknown, out: string[]): void {
  if (typeof v === 'string') out.push(v);
  else if (Array.isArray(v)) for (const x of v) collectStrings(x, out);
  else if (v && typeof v === 'object') for (const x of Object.values(v)) collectStrings(x, out);
}

/** Wraps each occurrence of `query` (lower-case) in the row's text in `<mark>`. */
function highlight(row: HTMLElement, query: string): void {
  const walker = document.createTreeWalker(row, NodeFilter.SHOW_TEXT, {
    acceptNode: (n) => ((n.parentElement?.closest('button,.entry-head') ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT)),
  });
  const nodes: Text[] = [];
  for (let n = walker.nextNode(); n; n = walker.nextNode()) nodes.push(n as Text);
  let budget = 200;
  for (const node of nodes) {
    const value = node.data;
    const lower = value.toLowerCase();
    let i = lower.indexOf(query);
    if (i < 0) continue;
    const frag = document.createDocumentFragment();
    let last = 0;
    while (i >= 0 && budget-- > 0) {
      frag.append(value.slice(last, i), h('mark', {}, value.slice(i, i + query.length)));
      last = i + query.length;
      i = lower.indexOf(query, last);
    }
    frag.append(value.slice(last));
    node.replaceWith(frag);
    if (budget <= 0) break;
  }
}

function isTyping(t: EventTarget | null): boolean {
  return t instanceof HTMLElement && (t.matches('input,textarea,select') || t.isContentEditable);
}

/** Keys that move between entries (handled by the list; see the help line). */
const ENTRY_KEYS = new Set(['j', 'k', 'ArrowDown', 'ArrowUp', 'Home', 'End']);

/** True for a key event on the page itself (body or the focused <main> a new view starts at), not on a control. */
function isPageLevel(t: EventTarget | null): boolean {
  return t === document.body || (t instanceof HTMLElement && t.id === 'main');
}

function safeName(s: string): string {
  return s.replace(/[^A-Za-z0-9._-]+/g, '_').slice(0, 80) || 'x';
}

/** Badge for a run's terminal status. */
export function statusBadge(status: string): HTMLElement {
  const known = ['completed', 'failed', 'timeout', 'cancelled'].includes(status);
  return h('span', { class: `badge status-${known ? status : 'unknown'}`, 'data-status': status }, status);
}

/** Badge for a run's state (latest / superseded / fenced). */
export function stateBadge(state: string): HTMLElement {
  const known = ['latest', 'superseded', 'fenced'].includes(state);
  return h('span', { class: `badge state-${known ? state : 'unknown'}`, 'data-state': state, title: STATE_HELP[state] ?? '' }, state);
}

const STATE_HELP: Record<string, string> = {
  latest: 'The run workers hydrate from',
  superseded: 'Not the latest: a later run exists, or the run did not complete',
  fenced: 'From before the conversation was last cleared',
};
