/**
 * Renderers for the pi `session.jsonl` format (one JSON entry per line; pi-mono
 * packages/coding-agent/docs/session.md): the header (`session`), `message` entries by role (user,
 * assistant, toolResult, bashExecution, custom, branchSummary, compactionSummary) with their content
 * blocks (text, thinking, toolCall, image), `model_change`, `thinking_level_change`, `compaction`,
 * `branch_summary`, `custom`, `custom_message`, `label` and `session_info`. Anything else — an unknown
 * entry type, message role or block type, or a line that is not JSON — is shown raw, never dropped.
 *
 * Each rendering names its renderer (`data-renderer` on the row), so the browser tests can check that
 * every entry type found in a transcript got its own renderer. Tool calls and tool results are collapsed
 * (`<details>`) by default. Text is always inserted as text, never as markup.
 */
import { h, type Child } from '../dom.js';

/** Longest text shown inline per block; the rest is behind "raw JSON" and the download. */
export const MAX_INLINE_CHARS = 100_000;

export interface Rendering {
  /** Which renderer drew it: `session`, `user`, `assistant`, `tool-result`, …, `raw`, `invalid`. */
  renderer: string;
  /** Short label for the row header. */
  label: string;
  /** CSS modifier (`entry--<kind>`). */
  kind: string;
  body: Child[];
  /** Entry timestamp, when it has one. */
  timestamp?: unknown;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

/** Pretty JSON, cut at {@link MAX_INLINE_CHARS}. */
export function prettyJson(value: unknown): string {
  let s: string;
  try {
    s = JSON.stringify(value, null, 2) ?? String(value);
  } catch {
    s = String(value);
  }
  return clip(s);
}

function clip(s: string): string {
  return s.length > MAX_INLINE_CHARS ? `${s.slice(0, MAX_INLINE_CHARS)}\n… ${(s.length - MAX_INLINE_CHARS).toLocaleString('en-US')} more characters (see the download)` : s;
}

function text(s: string, cls = 'text'): HTMLElement {
  return h('div', { class: cls }, clip(s));
}

function meta(...parts: (string | false | undefined | null)[]): HTMLElement | null {
  const items = parts.filter((p): p is string => typeof p === 'string' && p.length > 0);
  return items.length ? h('div', { class: 'meta' }, items.join(' · ')) : null;
}

function collapsible(cls: string, summary: Child[], content: Child[], open = false): HTMLDetailsElement {
  return h('details', { class: cls, open }, h('summary', {}, ...summary), h('div', { class: 'details-body' }, ...content));
}

/** One-line preview of tool-call arguments: `path=src/a.ts, command=ls -la`. */
function argsPreview(args: unknown): string {
  if (!isObj(args)) return args === undefined ? '' : JSON.stringify(args)?.slice(0, 120) ?? '';
  const parts: string[] = [];
  for (const [k, v] of Object.entries(args)) {
    const val = typeof v === 'string' ? v : JSON.stringify(v);
    parts.push(`${k}=${(val ?? '').replace(/\s+/g, ' ').slice(0, 80)}`);
    if (parts.join(', ').length > 160) break;
  }
  const joined = parts.join(', ');
  return joined.length > 160 ? joined.slice(0, 160) + '…' : joined;
}

const IMAGE_TYPES = new Set(['image/png', 'image/jpeg', 'image/gif', 'image/webp']);

/** One content block of a message. */
export function renderBlock(block: unknown): HTMLElement {
  if (typeof block === 'string') return text(block, 'block block-text');
  if (!isObj(block)) return unknownBlock(block);
  switch (block['type']) {
    case 'text':
      return h('div', { class: 'block block-text', 'data-block': 'text' }, clip(str(block['text']) ?? ''));
    case 'thinking': {
      const thought = str(block['thinking']) ?? '';
      const redacted = block['redacted'] === true;
      return collapsible(
        'block block-thinking',
        [h('span', { class: 'tag tag-thinking' }, 'Thinking'), redacted ? ' (redacted)' : ` ${thought.length.toLocaleString('en-US')} characters`],
        [text(redacted ? '(redacted by the provider)' : thought)],
        true,
      );
    }
    case 'toolCall': {
      const name = str(block['name']) ?? '(unnamed)';
      const el = collapsible(
        'block block-tool-call',
        [h('span', { class: 'tag tag-tool' }, 'Tool call'), ' ', h('code', { class: 'tool-name' }, name), ' ', h('span', { class: 'args-preview' }, argsPreview(block['arguments']))],
        [meta(str(block['id']) && `id ${block['id']}`), h('pre', { class: 'json' }, prettyJson(block['arguments'] ?? {}))],
      );
      el.dataset['block'] = 'toolCall';
      return el;
    }
    case 'image': {
      const mime = str(block['mimeType']) ?? '';
      const data = str(block['data']);
      const approx = data ? Math.floor((data.length * 3) / 4) : 0;
      if (data && IMAGE_TYPES.has(mime) && /^[A-Za-z0-9+/=\s]*$/.test(data.slice(0, 200))) {
        return h('figure', { class: 'block block-image', 'data-block': 'image' }, h('img', { src: `data:${mime};base64,${data}`, alt: `Image (${mime})`, loading: 'lazy' }), h('figcaption', {}, `${mime}, ~${approx.toLocaleString('en-US')} bytes`));
      }
      return h('div', { class: 'block block-image', 'data-block': 'image' }, `Image (${mime || 'unknown type'}, ~${approx.toLocaleString('en-US')} bytes, not shown)`);
    }
    default:
      return unknownBlock(block);
  }
}

function unknownBlock(block: unknown): HTMLElement {
  const type = isObj(block) && typeof block['type'] === 'string' ? block['type'] : typeof block;
  return h('div', { class: 'block block-unknown', 'data-block': 'unknown' }, h('span', { class: 'tag tag-unknown' }, `Unknown block "${type}"`), h('pre', { class: 'json' }, prettyJson(block)));
}

function blocks(content: unknown): Child[] {
  if (typeof content === 'string') return [h('div', { class: 'block block-text', 'data-block': 'text' }, clip(content))];
  if (Array.isArray(content)) return content.length ? content.map(renderBlock) : [h('div', { class: 'empty' }, '(no content)')];
  if (content === undefined) return [h('div', { class: 'empty' }, '(no content)')];
  return [unknownBlock(content)];
}

function usageText(usage: unknown): string | undefined {
  if (!isObj(usage)) return undefined;
  const n = (v: unknown) => (typeof v === 'number' ? v : 0);
  const tokens = n(usage['input']) + n(usage['output']) + n(usage['cacheRead']) + n(usage['cacheWrite']);
  const cost = isObj(usage['cost']) && typeof usage['cost']['total'] === 'number' ? usage['cost']['total'] : undefined;
  return `${tokens.toLocaleString('en-US')} tokens (in ${n(usage['input'])}, out ${n(usage['output'])}, cache ${n(usage['cacheRead'])}/${n(usage['cacheWrite'])})${cost !== undefined ? ` $${cost.toFixed(4)}` : ''}`;
}

function renderMessage(entry: Obj): Rendering {
  const m = entry['message'];
  const ts = entry['timestamp'];
  if (!isObj(m)) return raw(entry, 'message without a message object');
  const role = m['role'];
  switch (role) {
    case 'user':
      return { renderer: 'user', label: 'User', kind: 'user', timestamp: ts, body: blocks(m['content']) };
    case 'assistant': {
      const stop = str(m['stopReason']);
      const error = str(m['errorMessage']);
      return {
        renderer: 'assistant',
        label: 'Assistant',
        kind: 'assistant',
        timestamp: ts,
        body: [
          meta(str(m['provider']) && str(m['model']) ? `${m['provider']}/${m['model']}` : str(m['model']), stop && stop !== 'stop' && stop !== 'toolUse' ? `stop: ${stop}` : undefined, usageText(m['usage'])),
          error ? h('div', { class: 'error-text' }, error) : null,
          ...blocks(m['content']),
        ],
      };
    }
    case 'toolResult': {
      const isError = m['isError'] === true;
      const content = m['content'];
      const size = Array.isArray(content) ? content.reduce((a: number, b) => a + (isObj(b) && typeof b['text'] === 'string' ? b['text'].length : 0), 0) : 0;
      return {
        renderer: 'tool-result',
        label: isError ? 'Tool error' : 'Tool result',
        kind: isError ? 'tool-error' : 'tool-result',
        timestamp: ts,
        body: [
          collapsible(
            'tool-result-details',
            [h('span', { class: `tag ${isError ? 'tag-error' : 'tag-tool'}` }, isError ? 'Error' : 'Result'), ' of ', h('code', { class: 'tool-name' }, str(m['toolName']) ?? '(unknown tool)'), ` · ${size.toLocaleString('en-US')} characters`, str(m['toolCallId']) ? ` · ${m['toolCallId']}` : ''],
            [...blocks(content), m['details'] !== undefined ? collapsible('tool-details', ['Details'], [h('pre', { class: 'json' }, prettyJson(m['details']))]) : null],
          ),
        ],
      };
    }
    case 'bashExecution': {
      const exit = m['exitCode'];
      return {
        renderer: 'bash-execution',
        label: 'Bash',
        kind: 'bash',
        timestamp: ts,
        body: [
          h('pre', { class: 'command' }, '$ ', clip(str(m['command']) ?? '')),
          collapsible('bash-output', [`Output · exit ${typeof exit === 'number' ? exit : '–'}`, m['cancelled'] === true ? ' · cancelled' : '', m['truncated'] === true ? ' · truncated' : ''], [h('pre', { class: 'output' }, clip(str(m['output']) ?? ''))]),
        ],
      };
    }
    case 'custom':
      return { renderer: 'custom-message', label: `Extension message (${str(m['customType']) ?? '?'})`, kind: 'custom', timestamp: ts, body: blocks(m['content']) };
    case 'branchSummary':
      return { renderer: 'branch-summary', label: 'Branch summary', kind: 'summary', timestamp: ts, body: [meta(str(m['fromId']) && `from ${m['fromId']}`), text(str(m['summary']) ?? '')] };
    case 'compactionSummary':
      return { renderer: 'compaction', label: 'Compaction summary', kind: 'summary', timestamp: ts, body: [meta(typeof m['tokensBefore'] === 'number' ? `${m['tokensBefore'].toLocaleString('en-US')} tokens before` : undefined), text(str(m['summary']) ?? '')] };
    default:
      return raw(entry, `message with unknown role "${String(role)}"`);
  }
}

function fileLists(details: unknown): HTMLElement | null {
  if (!isObj(details)) return null;
  const list = (name: string) => (Array.isArray(details[name]) ? (details[name] as unknown[]).filter((x): x is string => typeof x === 'string') : []);
  const read = list('readFiles');
  const modified = list('modifiedFiles');
  if (!read.length && !modified.length) return collapsible('details-json', ['Details'], [h('pre', { class: 'json' }, prettyJson(details))]);
  return collapsible('file-lists', [`Files: ${read.length} read, ${modified.length} modified`], [read.length ? h('div', {}, 'Read: ', read.join(', ')) : null, modified.length ? h('div', {}, 'Modified: ', modified.join(', ')) : null]);
}

function raw(entry: unknown, why: string): Rendering {
  return {
    renderer: 'raw',
    label: why,
    kind: 'raw',
    ...(isObj(entry) && { timestamp: entry['timestamp'] }),
    body: [h('div', { class: 'meta' }, 'Shown as stored: no renderer for this entry.'), h('pre', { class: 'json' }, prettyJson(entry))],
  };
}

/** Renders one parsed transcript line. */
export function renderEntry(entry: unknown): Rendering {
  if (!isObj(entry)) return raw(entry, `${Array.isArray(entry) ? 'array' : typeof entry} line`);
  const type = entry['type'];
  const ts = entry['timestamp'];
  switch (type) {
    case 'session':
      return {
        renderer: 'session',
        label: 'Session',
        kind: 'session',
        timestamp: ts,
        body: [
          meta(str(entry['id']) && `id ${entry['id']}`, typeof entry['version'] === 'number' ? `format v${entry['version']}` : undefined, str(entry['parentSession']) && `forked from ${entry['parentSession']}`),
          meta(str(entry['cwd']) && `cwd ${entry['cwd']}`, str(entry['provider']) && str(entry['modelId']) ? `model ${entry['provider']}/${entry['modelId']}` : undefined, str(entry['thinkingLevel']) && `thinking ${entry['thinkingLevel']}`),
        ],
      };
    case 'message':
      return renderMessage(entry);
    case 'model_change':
      return { renderer: 'model-change', label: 'Model changed', kind: 'change', timestamp: ts, body: [h('div', { class: 'change' }, '→ ', h('code', {}, `${str(entry['provider']) ?? '?'}/${str(entry['modelId']) ?? '?'}`))] };
    case 'thinking_level_change':
      return { renderer: 'thinking-level', label: 'Thinking level changed', kind: 'change', timestamp: ts, body: [h('div', { class: 'change' }, '→ ', h('code', {}, str(entry['thinkingLevel']) ?? '?'))] };
    case 'compaction':
      return {
        renderer: 'compaction',
        label: 'Compaction',
        kind: 'summary',
        timestamp: ts,
        body: [
          meta(typeof entry['tokensBefore'] === 'number' ? `${entry['tokensBefore'].toLocaleString('en-US')} tokens summarized` : undefined, str(entry['firstKeptEntryId']) && `kept from ${entry['firstKeptEntryId']}`, entry['fromHook'] === true ? 'by an extension' : undefined),
          text(str(entry['summary']) ?? ''),
          fileLists(entry['details']),
        ],
      };
    case 'branch_summary':
      return { renderer: 'branch-summary', label: 'Branch summary', kind: 'summary', timestamp: ts, body: [meta(str(entry['fromId']) && `from ${entry['fromId']}`), text(str(entry['summary']) ?? ''), fileLists(entry['details'])] };
    case 'custom':
      return { renderer: 'custom', label: `Extension state (${str(entry['customType']) ?? '?'})`, kind: 'custom', timestamp: ts, body: [collapsible('custom-data', ['Data'], [h('pre', { class: 'json' }, prettyJson(entry['data']))])] };
    case 'custom_message':
      return {
        renderer: 'custom-message',
        label: `Extension message (${str(entry['customType']) ?? '?'})`,
        kind: 'custom',
        timestamp: ts,
        body: [meta(entry['display'] === false ? 'hidden in the TUI' : undefined), ...blocks(entry['content'])],
      };
    case 'label':
      return { renderer: 'label', label: 'Label', kind: 'change', timestamp: ts, body: [h('div', { class: 'change' }, typeof entry['label'] === 'string' ? ['“', entry['label'], '” on '] : 'Label cleared on ', h('code', {}, str(entry['targetId']) ?? '?'))] };
    case 'session_info':
      return { renderer: 'session-info', label: 'Session name', kind: 'change', timestamp: ts, body: [h('div', { class: 'change' }, str(entry['name']) ?? '(none)')] };
    default:
      return raw(entry, typeof type === 'string' ? `Unknown entry "${type}"` : 'Entry without a type');
  }
}

/** Renders one raw line: parsed when it is JSON, else shown as the text it is (`invalid`). */
export function renderLine(line: string): Rendering & { entry?: unknown } {
  let entry: unknown;
  try {
    entry = JSON.parse(line);
  } catch {
    return { renderer: 'invalid', label: 'Not JSON', kind: 'invalid', body: [h('pre', { class: 'json' }, clip(line))] };
  }
  return { ...renderEntry(entry), entry };
}

/** A short type key for a parsed line: `message` entries add their role (`message:user`); the row's `data-type`. */
export function entryType(entry: unknown): string {
  if (!isObj(entry)) return '(not an object)';
  const t = typeof entry['type'] === 'string' ? entry['type'] : '(no type)';
  return t === 'message' && isObj(entry['message']) && typeof entry['message']['role'] === 'string' ? `message:${entry['message']['role']}` : t;
}
