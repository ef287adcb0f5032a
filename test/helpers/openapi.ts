import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import type { Json } from '../../functions/lib/openapi.js';

/**
 * Checks real HTTP answers against an OpenAPI 3.1 document (functions/lib/openapi.ts) and records which
 * documented answers were seen, so a test can demand that every one of them was.
 *
 * JSON Schemas (draft 2020-12, as OpenAPI 3.1 uses them) are compiled with ajv's 2020-12 validator in strict
 * mode (with ajv-formats for `uri`/`date-time`), after the document's local `$ref`s are inlined.
 */

/** One documented answer: `GET /path 200`, or `GET /path 400 invalid_query` for an error code. */
export type AnswerKey = string;

export interface Checked {
  /** The operation's key in the document: `GET /admin/erasures/{receiptId}`. */
  readonly operation: string;
  readonly status: number;
  /** The error `code`, for error answers. */
  readonly code: string | undefined;
  /** The parsed JSON body, the text of another body, or undefined without one. */
  readonly body: unknown;
  readonly headers: Headers;
}

/** A request as sent, for checking a successful one against the operation's parameters and request body. */
export interface SentRequest {
  readonly query?: URLSearchParams;
  /** The JSON value sent as the body (before any content coding). */
  readonly body?: unknown;
}

type Validate = (value: unknown) => string[];

const METHODS = ['get', 'put', 'post', 'delete', 'patch', 'head', 'options'] as const;

/** A schema that never names another: every local `$ref` of `doc` inlined (the document has no cycles). */
export function inlineRefs(doc: Json, value: unknown, seen: readonly string[] = []): unknown {
  if (Array.isArray(value)) return value.map((v) => inlineRefs(doc, v, seen));
  if (typeof value !== 'object' || value === null) return value;
  const o = value as Record<string, unknown>;
  if (typeof o['$ref'] === 'string') {
    const target = o['$ref'];
    if (seen.includes(target)) throw new Error(`cyclic $ref ${target}`);
    const { $ref: _, ...rest } = o;
    return { ...(inlineRefs(doc, resolvePointer(doc, target), [...seen, target]) as object), ...(inlineRefs(doc, rest, seen) as object) };
  }
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [k, inlineRefs(doc, v, seen)]));
}

function resolvePointer(doc: Json, ref: string): unknown {
  if (!ref.startsWith('#/')) throw new Error(`only local $refs are supported: ${ref}`);
  let node: unknown = doc;
  for (const raw of ref.slice(2).split('/')) {
    const key = raw.replaceAll('~1', '/').replaceAll('~0', '~');
    if (typeof node !== 'object' || node === null || !Object.hasOwn(node, key)) throw new Error(`unresolvable $ref ${ref}`);
    node = (node as Record<string, unknown>)[key];
  }
  return node;
}

/** A validator of one (already inlined) JSON Schema: the list of problems, empty when `value` is valid. */
export function compileSchema(schema: unknown): Validate {
  const validate = ajv.compile(schema as object);
  return (value) => (validate(value) ? [] : (validate.errors ?? []).map((e) => `${e.instancePath || '(root)'}: ${e.message ?? e.keyword}`));
}

/** One ajv for every schema of the document (strict: an unknown keyword in the document is an error). */
const ajv = new Ajv2020({ allErrors: true, strict: true });
(addFormats as unknown as (a: Ajv2020) => void)(ajv);

/** The media type of a `content-type` value: `application/json; charset=utf-8` → `application/json`. */
const essence = (contentType: string | null) => contentType?.split(';')[0]!.trim().toLowerCase();
const isJsonType = (mediaType: string) => mediaType === 'application/json' || mediaType.endsWith('+json');

export class OpenApiChecker {
  /** Every answer documented: operation, status and (for errors) code. */
  readonly documented: ReadonlySet<AnswerKey>;
  private readonly seen = new Set<AnswerKey>();
  private readonly validators = new Map<unknown, Validate>();
  private readonly operations: { method: string; template: string; matcher: RegExp; op: Json }[] = [];

  constructor(readonly doc: Json) {
    const documented = new Set<AnswerKey>();
    for (const [template, item] of Object.entries(doc['paths'] as Record<string, Json>)) {
      for (const method of METHODS) {
        const op = item[method] as Json | undefined;
        if (!op) continue;
        const matcher = new RegExp(`^${template.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\{[^}]+\}/g, '([^/]+)')}$`);
        this.operations.push({ method: method.toUpperCase(), template, matcher, op });
        for (const key of this.answerKeys(`${method.toUpperCase()} ${template}`, op)) documented.add(key);
      }
    }
    this.documented = documented;
  }

  /** Every `"<METHOD> <path template>"` of the document. */
  operationKeys(): string[] {
    return this.operations.map((o) => `${o.method} ${o.template}`);
  }

  /** The operation answering `method` `path` (a concrete path: templates match one segment per parameter; exact paths win). */
  find(method: string, path: string): { key: string; op: Json } | undefined {
    const candidates = this.operations.filter((o) => o.method === method && o.matcher.test(path));
    const best = candidates.find((o) => !o.template.includes('{')) ?? candidates[0];
    return best && { key: `${best.method} ${best.template}`, op: best.op };
  }

  /** Documented answers never seen by {@link check}. */
  unseen(): AnswerKey[] {
    return [...this.documented].filter((k) => !this.seen.has(k)).sort();
  }

  /** Answers seen that the document does not list (each also failed its own {@link check}). */
  seenUndocumented(): AnswerKey[] {
    return [...this.seen].filter((k) => !this.documented.has(k)).sort();
  }

  /**
   * Checks one real answer (its body is read here) of `method` `url` against the document and records it.
   * Returns the problems (empty when it matches) with what was read. A problem: an undocumented operation
   * or status; a body whose media type is not documented for that status, or a JSON body its schema refuses;
   * a body where none is documented; a documented required header missing, or any documented header whose
   * value its schema refuses. For a 2xx answer, `sent` is checked too: query parameters documented and valid,
   * required ones present, the JSON body valid for the request body's schema.
   */
  async check(method: string, url: string, res: Response, sent: SentRequest = {}): Promise<{ problems: string[]; answer: Checked }> {
    const path = new URL(url).pathname;
    const text = await res.text();
    const problems: string[] = [];
    const found = this.find(method, path);
    const type = essence(res.headers.get('content-type'));
    let body: unknown = text === '' ? undefined : text;
    if (body !== undefined && type !== undefined && isJsonType(type)) {
      try {
        body = JSON.parse(text);
      } catch {
        problems.push(`body is not JSON although ${type}`);
      }
    }
    const code = res.status >= 400 && typeof body === 'object' && body !== null ? String((body as Record<string, unknown>)['code']) : undefined;
    const answer: Checked = { operation: found?.key ?? `${method} ${path}`, status: res.status, code, body, headers: res.headers };
    if (!found) return { problems: [`${method} ${path} is not documented`], answer };
    const key = code === undefined ? `${found.key} ${res.status}` : `${found.key} ${res.status} ${code}`;
    this.seen.add(key);
    const response = this.inline((found.op['responses'] as Json)[String(res.status)]) as Json | undefined;
    if (!response) return { problems: [`${found.key}: status ${res.status} is not documented`], answer };

    const content = response['content'] as Record<string, Json> | undefined;
    if (content === undefined) {
      if (text !== '') problems.push(`${res.status}: a body where none is documented`);
    } else {
      const media = type === undefined ? undefined : Object.entries(content).find(([t]) => t.toLowerCase() === type);
      if (!media) problems.push(`${res.status}: content-type ${type ?? '(none)'} is not one of ${Object.keys(content).join(', ')}`);
      else if (isJsonType(media[0])) problems.push(...this.validate(media[1]['schema'], body).map((p) => `${res.status} body ${p}`));
      else if (text === '' && res.status !== 226) problems.push(`${res.status}: empty ${type} body`);
    }
    for (const [name, raw] of Object.entries((response['headers'] as Record<string, Json> | undefined) ?? {})) {
      const h = raw as Json;
      const value = res.headers.get(name);
      if (value === null) {
        if (h['required'] === true) problems.push(`${res.status}: header ${name} missing`);
        continue;
      }
      problems.push(...this.validate(h['schema'], value).map((p) => `${res.status} header ${name}=${JSON.stringify(value)}: ${p}`));
    }
    if (res.status >= 200 && res.status < 300) problems.push(...this.checkRequest(found.op, sent));
    return { problems, answer };
  }

  private checkRequest(op: Json, sent: SentRequest): string[] {
    const problems: string[] = [];
    const params = ((op['parameters'] as Json[] | undefined) ?? []).filter((p) => p['in'] === 'query');
    const given = sent.query ?? new URLSearchParams();
    for (const [name, value] of given) {
      const param = params.find((p) => p['name'] === name);
      if (!param) {
        problems.push(`request: query parameter ${name} is not documented`);
        continue;
      }
      const schema = this.inline(param['schema']) as Json;
      const typed = schema['type'] === 'integer' && /^-?\d+$/.test(value) ? Number(value) : value;
      problems.push(...this.validate(schema, typed).map((p) => `request: query ${name}=${value}: ${p}`));
    }
    for (const p of params) if (p['required'] === true && !given.has(String(p['name']))) problems.push(`request: required query parameter ${String(p['name'])} missing`);
    const requestBody = this.inline(op['requestBody']) as Json | undefined;
    if (sent.body !== undefined) {
      const schema = (requestBody?.['content'] as Record<string, Json> | undefined)?.['application/json']?.['schema'];
      if (schema === undefined) problems.push('request: a JSON body where none is documented');
      else problems.push(...this.validate(schema, sent.body).map((p) => `request body ${p}`));
    } else if (requestBody?.['required'] === true) problems.push('request: the required body is missing');
    return problems;
  }

  /** The answers an operation documents, one per success status and one per error code. */
  private answerKeys(opKey: string, op: Json): AnswerKey[] {
    const keys: AnswerKey[] = [];
    for (const [status, raw] of Object.entries(op['responses'] as Record<string, Json>)) {
      const schema = this.inline((raw['content'] as Record<string, Json> | undefined)?.['application/json']?.['schema']) as Json | undefined;
      const variants = Number(status) >= 400 && schema ? ((schema['oneOf'] as Json[] | undefined) ?? [schema]) : [];
      const codes = variants.map((v) => ((v['properties'] as Record<string, Json> | undefined)?.['code'] as Json | undefined)?.['const']).filter((c) => c !== undefined);
      if (codes.length > 0) for (const c of codes) keys.push(`${opKey} ${status} ${String(c)}`);
      else keys.push(`${opKey} ${status}`);
    }
    return keys;
  }

  private inline(value: unknown): unknown {
    return value === undefined ? undefined : inlineRefs(this.doc, value);
  }

  private validate(schema: unknown, value: unknown): string[] {
    let v = this.validators.get(schema);
    if (!v) {
      v = compileSchema(this.inline(schema));
      this.validators.set(schema, v);
    }
    return v(value);
  }
}
