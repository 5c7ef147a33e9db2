import { isMap, isNode, isPair, isScalar, isSeq, LineCounter, parseAllDocuments, type Document, type Node } from 'yaml';

/** A YAML document parsed with positions, so errors can name file:line:column. */
export interface SourceDocument {
  file: string;
  doc: Document.Parsed;
  lines: LineCounter;
}

/** Largest alias expansion accepted: stops "billion laughs" documents. */
const MAX_ALIAS_COUNT = 100;

/** An input error that names where it is, printed as one line. */
export class InputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InputError';
  }
}

/** Options of {@link parseYamlSource}. */
export interface ParseOptions {
  /** Accept `<<` merge keys (off by default, as in YAML 1.2). */
  merge?: boolean;
}

/** Every document of a text, and every problem found, each one line naming `file:line:column`. */
export interface ParsedYaml {
  docs: SourceDocument[];
  problems: string[];
}

/**
 * Parses YAML text into documents with positions, collecting every syntax
 * error, warning (such as an unknown tag) and duplicate key as a one-line
 * problem. Documents with a syntax error are left out of `docs`.
 *
 * Duplicate keys are found here in one pass rather than by the parser's
 * `uniqueKeys`, whose check is quadratic in the size of a mapping (a hostile
 * file with a 40,000-key mapping takes seconds).
 */
export function parseYamlSource(file: string, text: string, options: ParseOptions = {}): ParsedYaml {
  const lines = new LineCounter();
  const parsed = parseAllDocuments(text, { lineCounter: lines, uniqueKeys: false, prettyErrors: false, merge: options.merge ?? false });
  const list = Array.isArray(parsed) ? parsed : [parsed];
  const docs: SourceDocument[] = [];
  const problems: string[] = [];
  const at = (offset: number) => {
    const pos = lines.linePos(offset);
    return `${file}:${pos.line}:${pos.col}`;
  };
  for (const doc of list) {
    const before = problems.length;
    for (const error of doc.errors) {
      const message = error.code === 'RESOURCE_EXHAUSTION' ? `document too large or nested too deeply (${firstLine(error.message)})` : firstLine(error.message);
      problems.push(`${at(error.pos[0])} ${message}`);
    }
    for (const warning of doc.warnings) problems.push(`${at(warning.pos[0])} ${firstLine(warning.message)}`);
    if (doc.errors.length > 0) continue;
    const source = { file, doc, lines };
    problems.push(...duplicateKeys(source));
    if (problems.length === before) docs.push(source);
  }
  return { docs, problems };
}

/**
 * Parses YAML text into documents with positions. Syntax errors and duplicate
 * keys become an {@link InputError} naming `file:line:column`.
 */
export function parseYamlDocuments(file: string, text: string): SourceDocument[] {
  const { docs, problems } = parseYamlSource(file, text);
  if (problems[0] !== undefined) throw new InputError(problems[0]);
  return docs;
}

/**
 * Converts a document to plain data, refusing alias bombs: the error names
 * the document's `file:line:column`.
 */
export function toPlain(source: SourceDocument): unknown {
  try {
    return source.doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (err) {
    const message = firstLine((err as Error).message);
    const text = /alias count/i.test(message)
      ? `aliases expand too much (over ${MAX_ALIAS_COUNT} expansions): refusing a possible alias bomb`
      : message;
    throw new InputError(`${locate(source, [])} ${text}`);
  }
}

/**
 * `file:line:column` of the node at `path` (or of its nearest existing parent),
 * for error messages.
 */
export function locate(source: SourceDocument, path: readonly PropertyKey[]): string {
  for (let depth = path.length; depth >= 0; depth--) {
    const keyPath = path.slice(0, depth).map((p) => (typeof p === 'symbol' ? String(p) : p));
    const node: unknown = depth === 0 ? source.doc.contents : source.doc.getIn(keyPath, true);
    if (isNode(node) && node.range) {
      const pos = source.lines.linePos(node.range[0]);
      return `${source.file}:${pos.line}:${pos.col}`;
    }
  }
  return source.file;
}

/**
 * `file:line:column` of the key of the last element of `path` (where an
 * unknown field is written), falling back to {@link locate}. A bare string is
 * a top-level key.
 */
export function locateKey(source: SourceDocument, keyOrPath: string | readonly PropertyKey[]): string {
  const path = typeof keyOrPath === 'string' ? [keyOrPath] : keyOrPath;
  const last = path[path.length - 1];
  if (path.length > 0 && typeof last === 'string') {
    const parentPath = path.slice(0, -1).map((p) => (typeof p === 'symbol' ? String(p) : p));
    const parent: unknown = parentPath.length === 0 ? source.doc.contents : source.doc.getIn(parentPath, true);
    if (isMap(parent)) {
      for (const pair of parent.items) {
        if (isScalar(pair.key) && String(pair.key.value) === last && pair.key.range) {
          const pos = source.lines.linePos(pair.key.range[0]);
          return `${source.file}:${pos.line}:${pos.col}`;
        }
      }
    }
  }
  return locate(source, path);
}

/** The text of a mapping key, as the data will have it. */
function keyText(key: unknown): string {
  if (isScalar(key)) return String(key.value);
  if (isNode(key)) return key.toString();
  return String(key);
}

function pathText(path: readonly (string | number)[]): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(p)) out += `${out ? '.' : ''}${p}`;
    else out += `[${JSON.stringify(p)}]`;
  }
  return out;
}

interface Visit {
  node: unknown;
  key: string | number | undefined;
  parent: Visit | undefined;
}

function pathOf(visit: Visit): (string | number)[] {
  const path: (string | number)[] = [];
  for (let v: Visit | undefined = visit; v?.key !== undefined; v = v.parent) path.push(v.key);
  return path.reverse();
}

/**
 * One problem per key repeated in a mapping, in one pass over the document.
 * Iterative, with parent links: the depth is the input's, not ours to trust.
 */
function duplicateKeys(source: SourceDocument): string[] {
  const found: { line: number; col: number; text: string }[] = [];
  const stack: Visit[] = [{ node: source.doc.contents, key: undefined, parent: undefined }];
  while (stack.length > 0) {
    const visit = stack.pop()!;
    const { node } = visit;
    if (isMap(node)) {
      const seen = new Map<string, Node | undefined>();
      for (const pair of node.items) {
        if (!isPair(pair)) continue;
        const key = keyText(pair.key);
        if (seen.has(key)) {
          const first = seen.get(key);
          const where = isNode(pair.key) && pair.key.range ? source.lines.linePos(pair.key.range[0]) : { line: 0, col: 0 };
          const firstOn = first?.range ? ` (first on line ${source.lines.linePos(first.range[0]).line})` : '';
          const loc = where.line > 0 ? `${source.file}:${where.line}:${where.col}` : source.file;
          const path = pathText([...pathOf(visit), key]);
          found.push({ ...where, text: `${loc} ${path}: duplicate key, keys must be unique${firstOn}` });
        } else {
          seen.set(key, isNode(pair.key) ? pair.key : undefined);
        }
        stack.push({ node: pair.value, key, parent: visit });
      }
    } else if (isSeq(node)) {
      node.items.forEach((item, index) => stack.push({ node: item, key: index, parent: visit }));
    }
  }
  return found.sort((a, b) => a.line - b.line || a.col - b.col).map((f) => f.text);
}

function firstLine(message: string): string {
  return message.split('\n')[0] ?? message;
}
