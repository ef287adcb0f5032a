/**
 * A virtual list of variable-height rows: only the rows in (or near) the viewport exist in the DOM, each
 * absolutely placed at the sum of the heights above it. Heights start as estimates and are replaced by
 * measurements (ResizeObserver), so expanding a row or an image loading just re-lays the list out.
 *
 * Every change to the items or to heights keeps the row at the top of the viewport where it was (scroll
 * anchoring done here; the browser's own `overflow-anchor` is off for the viewport), so prepending a page
 * above or dropping one far away never moves what the reader is looking at.
 *
 * Bounded DOM: at most {@link MAX_RENDERED} rows at any time, whatever the number of items.
 */

export const MAX_RENDERED = 120;
const OVERSCAN_PX = 600;

export interface VirtualListOptions<T> {
  /** Initial height guess for an item not yet measured, in px. */
  estimate(item: T): number;
  /** Creates the row element for an item (called when it scrolls into range). */
  render(item: T): HTMLElement;
  /** Called after every layout with the rendered range and whether the viewport is near either end. */
  onLayout?(info: { first: number; last: number; nearTop: boolean; nearBottom: boolean }): void;
}

export class VirtualList<T extends object> {
  readonly viewport: HTMLElement;
  private readonly canvas: HTMLElement;
  private items: T[] = [];
  private heights = new WeakMap<T, number>();
  private pos: number[] = [0];
  private index = new Map<T, number>();
  private dirty = true;
  private rows = new Map<T, HTMLElement>();
  private readonly observer: ResizeObserver;
  private scheduled = 0;

  constructor(
    viewport: HTMLElement,
    private readonly opts: VirtualListOptions<T>,
  ) {
    this.viewport = viewport;
    viewport.classList.add('vlist');
    this.canvas = document.createElement('div');
    this.canvas.className = 'vlist-canvas';
    viewport.replaceChildren(this.canvas);
    viewport.addEventListener('scroll', () => this.schedule(), { passive: true });
    this.observer = new ResizeObserver((entries) => {
      let changed = false;
      for (const e of entries) {
        const item = (e.target as HTMLElement & { __item?: T }).__item;
        if (!item || !this.rows.has(item)) continue;
        const size = e.borderBoxSize?.[0]?.blockSize ?? (e.target as HTMLElement).offsetHeight;
        if (Math.abs((this.heights.get(item) ?? -1) - size) > 0.5) {
          this.heights.set(item, size);
          changed = true;
        }
      }
      if (changed) this.anchored(() => (this.dirty = true));
    });
    new ResizeObserver(() => this.schedule()).observe(viewport);
  }

  get length(): number {
    return this.items.length;
  }

  get all(): readonly T[] {
    return this.items;
  }

  at(i: number): T | undefined {
    return this.items[i];
  }

  indexOf(item: T): number {
    this.layoutPositions();
    return this.index.get(item) ?? -1;
  }

  /** The DOM row of an item, when it is rendered. */
  rowOf(item: T): HTMLElement | undefined {
    return this.rows.get(item);
  }

  /** Number of rows in the DOM right now (bounded by {@link MAX_RENDERED}). */
  get renderedCount(): number {
    return this.rows.size;
  }

  /** Replaces every item; the viewport goes to the top (or to `scrollTo`). */
  reset(items: T[], scrollTo?: T): void {
    for (const [, row] of this.rows) this.unrender(row);
    this.rows.clear();
    this.items = items;
    this.dirty = true;
    this.layoutPositions();
    this.viewport.scrollTop = 0;
    if (scrollTo) this.reveal(scrollTo, 'start');
    this.update();
  }

  append(items: T[]): void {
    if (!items.length) return;
    this.anchored(() => {
      this.items = this.items.concat(items);
      this.dirty = true;
    });
  }

  prepend(items: T[]): void {
    if (!items.length) return;
    this.anchored(() => {
      this.items = items.concat(this.items);
      this.dirty = true;
    });
  }

  /** Drops `n` items from the front (n > 0) or `-n` from the back (n < 0). */
  drop(n: number): void {
    if (n === 0) return;
    this.anchored(() => {
      const gone = n > 0 ? this.items.slice(0, n) : this.items.slice(this.items.length + n);
      this.items = n > 0 ? this.items.slice(n) : this.items.slice(0, this.items.length + n);
      for (const item of gone) {
        const row = this.rows.get(item);
        if (row) this.unrender(row);
        this.rows.delete(item);
      }
      this.dirty = true;
    });
  }

  /** Re-renders an item's row (its content changed), keeping the viewport anchored. */
  refresh(item: T): void {
    const row = this.rows.get(item);
    if (!row) return;
    const fresh = this.create(item);
    row.replaceWith(fresh);
    this.unrender(row);
    this.rows.set(item, fresh);
    this.place(item, fresh);
  }

  /** Scrolls so the item is visible (`nearest`: only as much as needed; `start`: at the top). */
  reveal(item: T, how: 'nearest' | 'start' | 'center' = 'nearest'): void {
    this.layoutPositions();
    const i = this.index.get(item);
    if (i === undefined) return;
    const top = this.pos[i]!;
    const bottom = this.pos[i + 1]!;
    const vp = this.viewport;
    if (how === 'start') vp.scrollTop = top;
    else if (how === 'center') vp.scrollTop = Math.max(0, top - vp.clientHeight / 3);
    else if (top < vp.scrollTop) vp.scrollTop = top;
    else if (bottom > vp.scrollTop + vp.clientHeight) vp.scrollTop = Math.min(top, bottom - vp.clientHeight);
    this.update();
  }

  /** Lays out now (normally done on the next animation frame after a scroll or change). */
  update(): void {
    if (this.scheduled) {
      cancelAnimationFrame(this.scheduled);
      this.scheduled = 0;
    }
    this.layoutPositions();
    const vp = this.viewport;
    const total = this.pos[this.items.length]!;
    this.canvas.style.height = `${total}px`;
    const top = vp.scrollTop;
    const bottom = top + vp.clientHeight;
    let first = this.search(Math.max(0, top - OVERSCAN_PX));
    let last = Math.min(this.items.length - 1, this.search(bottom + OVERSCAN_PX));
    if (last - first + 1 > MAX_RENDERED) {
      // Too many tiny rows: keep the ones around the viewport.
      const firstVisible = this.search(top);
      first = Math.max(0, firstVisible - 20);
      last = Math.min(this.items.length - 1, first + MAX_RENDERED - 1);
    }
    const wanted = new Set<T>();
    for (let i = first; i <= last && i >= 0; i++) wanted.add(this.items[i]!);
    for (const [item, row] of this.rows) {
      if (!wanted.has(item)) {
        this.unrender(row);
        this.rows.delete(item);
      }
    }
    for (const item of wanted) {
      let row = this.rows.get(item);
      if (!row) {
        row = this.create(item);
        this.rows.set(item, row);
        this.canvas.appendChild(row);
      }
      this.place(item, row);
    }
    this.opts.onLayout?.({ first, last, nearTop: top < OVERSCAN_PX, nearBottom: bottom > total - OVERSCAN_PX * 2 });
  }

  private create(item: T): HTMLElement {
    const row = this.opts.render(item) as HTMLElement & { __item?: T };
    row.__item = item;
    row.classList.add('vlist-row');
    this.observer.observe(row);
    return row;
  }

  private unrender(row: HTMLElement): void {
    this.observer.unobserve(row);
    row.remove();
  }

  private place(item: T, row: HTMLElement): void {
    const i = this.index.get(item);
    if (i !== undefined) row.style.transform = `translateY(${this.pos[i]}px)`;
  }

  private schedule(): void {
    if (!this.scheduled) this.scheduled = requestAnimationFrame(() => {
      this.scheduled = 0;
      this.update();
    });
  }

  /** Runs a mutation keeping the first visible item at the same place on screen. */
  private anchored(mutate: () => void): void {
    this.layoutPositions();
    const top = this.viewport.scrollTop;
    const i = this.items.length ? this.search(top) : -1;
    const anchor = i >= 0 ? this.items[i] : undefined;
    const offset = anchor ? top - this.pos[i]! : 0;
    mutate();
    this.layoutPositions();
    if (anchor) {
      const j = this.index.get(anchor);
      if (j !== undefined) {
        this.canvas.style.height = `${this.pos[this.items.length]}px`;
        const want = Math.max(0, this.pos[j]! + offset);
        if (Math.abs(this.viewport.scrollTop - want) > 0.5) this.viewport.scrollTop = want;
      }
    }
    this.update();
  }

  private layoutPositions(): void {
    if (!this.dirty) return;
    const n = this.items.length;
    const pos = new Array<number>(n + 1);
    pos[0] = 0;
    this.index.clear();
    for (let i = 0; i < n; i++) {
      const item = this.items[i]!;
      this.index.set(item, i);
      let hgt = this.heights.get(item);
      if (hgt === undefined) hgt = this.opts.estimate(item);
      pos[i + 1] = pos[i]! + hgt;
    }
    this.pos = pos;
    this.dirty = false;
  }

  /** Index of the item at vertical position y (clamped). */
  private search(y: number): number {
    const n = this.items.length;
    if (n === 0) return -1;
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.pos[mid + 1]! <= y) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}
