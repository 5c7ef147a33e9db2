import { chmodSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A fresh temporary directory an embedded PostgreSQL can live in: as root,
 * PostgreSQL runs as the postgres user, which must reach its data directory,
 * so the directory is made world-readable (0755).
 */
export function makeStateDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  chmodSync(dir, 0o755);
  return dir;
}
