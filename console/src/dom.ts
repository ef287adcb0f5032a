/** Tiny DOM helpers. Text always goes in as text nodes (never innerHTML), so transcript content cannot inject markup. */

type Attrs = Record<string, string | number | boolean | undefined | null | ((ev: Event) => void)>;
export type Child = Node | string | number | null | undefined | false | readonly Child[];

/**
 * `h('button', {class: 'x', onclick: fn, 'aria-label': 'Close'}, 'text', child)`: an element with
 * attributes (`on*` functions become listeners; `true` sets an empty attribute, `false`/`null`/`undefined`
 * skip it) and children (strings become text nodes; arrays are flattened; falsy children are skipped).
 */
export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (typeof value === 'function') el.addEventListener(name.slice(2), value);
    else if (value === true) el.setAttribute(name, '');
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

/** Appends children as {@link h} does. */
export function append(parent: Node, children: readonly Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(parent, c);
    else if (c instanceof Node) parent.appendChild(c);
    else parent.appendChild(document.createTextNode(String(c)));
  }
}

/** Replaces all children of `parent`. */
export function replace(parent: Element, ...children: Child[]): void {
  parent.replaceChildren();
  append(parent, children);
}

/** `1234567` → `1.2 MB` (decimal units, as a file manager shows them). */
export function formatBytes(n: number | undefined | null): string {
  if (typeof n !== 'number' || !Number.isFinite(n)) return '–';
  if (n < 1000) return `${n} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let v = n;
  let u = -1;
  do {
    v /= 1000;
    u++;
  } while (v >= 1000 && u < units.length - 1);
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}

/** A timestamp (ISO string or epoch ms) as local date and time, or `–`. */
export function formatTime(t: unknown): string {
  const d = typeof t === 'number' || typeof t === 'string' ? new Date(t) : undefined;
  if (!d || Number.isNaN(d.getTime())) return '–';
  return d.toLocaleString(undefined, { year: 'numeric', month: 'short', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

/** Thousands separators. */
export function formatCount(n: number | undefined | null): string {
  return typeof n === 'number' && Number.isFinite(n) ? n.toLocaleString('en-US') : '–';
}
