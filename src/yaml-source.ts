import { isMap, isNode, isScalar, LineCounter, parseAllDocuments, type Document } from 'yaml';

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

/**
 * Parses YAML text into documents with positions. Syntax errors and duplicate
 * keys become an {@link InputError} naming `file:line:column`.
 */
export function parseYamlDocuments(file: string, text: string): SourceDocument[] {
  const lines = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter: lines, uniqueKeys: true, prettyErrors: false });
  const list = Array.isArray(docs) ? docs : [docs];
  for (const doc of list) {
    const error = doc.errors[0];
    if (error) {
      const pos = lines.linePos(error.pos[0]);
      throw new InputError(`${file}:${pos.line}:${pos.col} ${firstLine(error.message)}`);
    }
  }
  return list.map((doc) => ({ file, doc, lines }));
}

/** Converts a document to plain data, refusing alias bombs. */
export function toPlain(source: SourceDocument): unknown {
  try {
    return source.doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (err) {
    throw new InputError(`${source.file}: ${firstLine((err as Error).message)}`);
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

/** `file:line:column` of a top-level mapping key itself (for "unknown key" errors), else of the document. */
export function locateKey(source: SourceDocument, key: string): string {
  const contents = source.doc.contents;
  if (isMap(contents)) {
    for (const pair of contents.items) {
      if (isScalar(pair.key) && String(pair.key.value) === key && pair.key.range) {
        const pos = source.lines.linePos(pair.key.range[0]);
        return `${source.file}:${pos.line}:${pos.col}`;
      }
    }
  }
  return locate(source, []);
}

function firstLine(message: string): string {
  return message.split('\n')[0] ?? message;
}
