import { open, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { duplicateServices, parseManifests, type ServiceManifest } from './manifest.js';

/**
 * Reading manifests from what `-f` names: files, directories (their `.yaml`
 * and `.yml` files, not recursively) and `-` for stdin. Input is untrusted:
 * sizes are bounded before anything is parsed, and only regular files are
 * read (a FIFO named `x.yaml` would block for ever).
 */

/**
 * Largest manifest file read. A real one is a few kilobytes (1,000 services
 * in one file stay under 1 MiB); the YAML parser's cost grows faster than the
 * size, so a hostile 10 MB file is refused before it is parsed.
 */
export const MAX_MANIFEST_BYTES = 2 * 1024 * 1024;

/** Extensions read from a directory. */
export const MANIFEST_EXTENSIONS = ['.yaml', '.yml'] as const;

/** The name `-` stands for. */
export const STDIN_NAME = '<stdin>';

/** Every service found, every problem (one line each), and notes about what was skipped. */
export interface ManifestSet {
  services: ServiceManifest[];
  problems: string[];
  notes: string[];
  /** The files read, in order. */
  files: string[];
}

/** Options of {@link loadManifests}. */
export interface LoadOptions {
  /** Reads stdin for `-`, refusing more than `maxBytes`. */
  readStdin?: (maxBytes: number) => Promise<Buffer>;
  maxBytes?: number;
}

function isManifestName(name: string): boolean {
  const lower = name.toLowerCase();
  return MANIFEST_EXTENSIONS.some((ext) => lower.endsWith(ext));
}

function size(bytes: number): string {
  return bytes >= 1024 * 1024 ? `${(bytes / (1024 * 1024)).toFixed(1)} MiB` : `${Math.ceil(bytes / 1024)} KiB`;
}

function errnoText(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return 'no such file or directory';
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  if (code === 'EISDIR') return 'is a directory';
  return code ?? (err as Error).message;
}

/** Reads at most `maxBytes + 1` bytes, so a file that grew after `stat` is still caught. */
async function readBounded(file: string, maxBytes: number): Promise<Buffer> {
  const handle = await open(file, 'r');
  try {
    const buffer = Buffer.allocUnsafe(maxBytes + 1);
    let length = 0;
    while (length < buffer.length) {
      const { bytesRead } = await handle.read(buffer, length, buffer.length - length, length);
      if (bytesRead === 0) break;
      length += bytesRead;
    }
    return buffer.subarray(0, length);
  } finally {
    await handle.close();
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Parses one file's bytes; every problem names the file. */
function parseBytes(file: string, bytes: Buffer, maxBytes: number, set: ManifestSet): void {
  if (bytes.length > maxBytes) {
    set.problems.push(`${file}: larger than ${size(maxBytes)}, the limit for a manifest file; split it`);
    return;
  }
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    set.problems.push(`${file}: not UTF-8 text`);
    return;
  }
  const { services, problems } = parseManifests(file, text);
  set.services.push(...services);
  set.problems.push(...problems);
  set.files.push(file);
  if (services.length === 0 && problems.length === 0) set.notes.push(`${file} holds no manifests`);
}

async function readFile(file: string, maxBytes: number, set: ManifestSet): Promise<void> {
  let info;
  try {
    info = await stat(file);
  } catch (err) {
    set.problems.push(`${file}: ${errnoText(err)}`);
    return;
  }
  if (!info.isFile()) {
    set.problems.push(`${file}: not a regular file`);
    return;
  }
  if (info.size > maxBytes) {
    set.problems.push(`${file}: ${size(info.size)} is larger than ${size(maxBytes)}, the limit for a manifest file; split it`);
    return;
  }
  let bytes: Buffer;
  try {
    bytes = await readBounded(file, maxBytes);
  } catch (err) {
    set.problems.push(`${file}: ${errnoText(err)}`);
    return;
  }
  parseBytes(file, bytes, maxBytes, set);
}

async function readDirectory(dir: string, maxBytes: number, set: ManifestSet): Promise<void> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (err) {
    set.problems.push(`${dir}: ${errnoText(err)}`);
    return;
  }
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const entry of entries) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) set.notes.push(`skipped ${path}/: subdirectories are not read`);
    else if (entry.name.startsWith('.')) set.notes.push(`skipped ${path}: hidden file`);
    else if (!isManifestName(entry.name)) set.notes.push(`skipped ${path}: not a .yaml or .yml file`);
    else await readFile(path, maxBytes, set);
  }
}

/**
 * Loads the manifests that `paths` name. Nothing is thrown for bad input:
 * every problem is collected, so the caller can print them all and write
 * nothing. Two documents naming the same service are a problem too.
 */
export async function loadManifests(paths: readonly string[], options: LoadOptions = {}): Promise<ManifestSet> {
  const maxBytes = options.maxBytes ?? MAX_MANIFEST_BYTES;
  const set: ManifestSet = { services: [], problems: [], notes: [], files: [] };
  let stdinRead = false;
  for (const path of paths) {
    if (path === '-') {
      if (stdinRead) continue;
      stdinRead = true;
      if (!options.readStdin) {
        set.problems.push(`${STDIN_NAME}: reading manifests from stdin is not available here`);
        continue;
      }
      parseBytes(STDIN_NAME, await options.readStdin(maxBytes), maxBytes, set);
      continue;
    }
    let info;
    try {
      info = await stat(path);
    } catch (err) {
      set.problems.push(`${path}: ${errnoText(err)}`);
      continue;
    }
    if (info.isDirectory()) await readDirectory(path, maxBytes, set);
    else await readFile(path, maxBytes, set);
  }
  set.problems.push(...duplicateServices(set.services));
  if (set.services.length === 0 && set.problems.length === 0) {
    set.problems.push(`no manifests found in ${paths.join(', ')}`);
  }
  return set;
}
