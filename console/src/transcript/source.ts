/**
 * A run's lines, fetched page by page from `GET /admin/lines` with the API's opaque cursor. Pages are
 * discovered in order (page k+1's cursor is page k's `nextCursor`), and every discovered cursor is kept,
 * so any page seen once can be fetched again: the transcript view keeps only a window of pages in memory
 * and refetches a page when the reader scrolls back to it.
 */
import type { AdminApi, LineRecord } from '../api.js';

/** Lines per request (the API allows 1–1000 and caps a page at 1 MiB of text). */
export const PAGE_LINES = 500;

export interface Line {
  readonly page: PageInfo;
  readonly line: number;
  readonly offset: number;
  readonly text: string;
  /** Set when the API cut the line (longer than a page may carry): the whole line's length in bytes. */
  readonly truncatedBytes?: number;
}

export interface PageInfo {
  readonly index: number;
  /** Cursor that fetches this page (`null`: the first page). */
  readonly cursor: string | null;
  /** Known once fetched. */
  nextCursor?: string | null;
  firstLine?: number;
  lineCount?: number;
  /** Byte offset just past the page's last line (an estimate: its offset plus its UTF-8 length plus a newline). */
  endOffset?: number;
}

export class LineSource {
  readonly pages: PageInfo[] = [{ index: 0, cursor: null }];
  /** The run's size in bytes, once a page was fetched. */
  bytes: number | undefined;
  /** The run id the API answered with (the latest when none was asked for). */
  runId: number | undefined;
  private readonly inflight = new Map<number, Promise<Line[]>>();

  constructor(
    private readonly api: AdminApi,
    private readonly scope: { agentId: string; conversationId: string; runId?: number },
  ) {}

  /** True once the last page is known. */
  get complete(): boolean {
    const last = this.pages[this.pages.length - 1]!;
    return last.nextCursor === null;
  }

  /** Whether page `index` can be fetched (its cursor is known). */
  has(index: number): boolean {
    return index >= 0 && index < this.pages.length;
  }

  /** Whether a page after `index` exists (or may: `undefined` while `index` is not fetched yet). */
  hasAfter(index: number): boolean | undefined {
    const p = this.pages[index];
    if (!p || p.nextCursor === undefined) return undefined;
    return p.nextCursor !== null;
  }

  /** Fetches page `index` (its cursor must be known), once at a time per page. */
  fetch(index: number, signal?: AbortSignal): Promise<Line[]> {
    const running = this.inflight.get(index);
    if (running) return running;
    const page = this.pages[index];
    if (!page) return Promise.reject(new Error(`page ${index} is not known yet`));
    const p = this.api
      .lines({ ...this.scope, cursor: page.cursor, limit: PAGE_LINES }, signal)
      .then((res) => {
        this.bytes = res.bytes;
        this.runId = res.runId;
        page.nextCursor = res.nextCursor ?? null;
        page.lineCount = res.lines.length;
        const first = res.lines[0];
        const last = res.lines[res.lines.length - 1];
        if (first) page.firstLine = first.line;
        if (last) page.endOffset = last.offset + (last.bytes ?? utf8Length(last.text)) + 1;
        if (page.nextCursor !== null && !this.pages[index + 1]) this.pages.push({ index: index + 1, cursor: page.nextCursor });
        return res.lines.map((l: LineRecord) => ({ page, line: l.line, offset: l.offset, text: l.text, ...(l.truncated === true && { truncatedBytes: l.bytes ?? -1 }) }));
      })
      .finally(() => this.inflight.delete(index));
    this.inflight.set(index, p);
    return p;
  }
}

/** UTF-8 byte length of a string without encoding it. */
export function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}
