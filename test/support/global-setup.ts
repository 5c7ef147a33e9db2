import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../../src/store/embedded.js';
import { ROOT } from './processes.js';
import { makeStateDir } from './state-dir.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** URL of a Postgres where tests may create and drop databases. */
    pgAdminUrl: string;
  }
}

let server: EmbeddedPostgres | undefined;
let dir: string | undefined;

/**
 * One real PostgreSQL for the whole run: `DATABASE_URL` when given, otherwise
 * an embedded server in a temporary directory. Each test file makes its own
 * database in it (see `postgres.ts`).
 */
export async function setup(project: TestProject): Promise<void> {
  // Tests that run the CLI as a user does need dist/ current: build it once per run.
  execFileSync(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', join(ROOT, 'tsconfig.build.json')], { stdio: 'inherit' });
  let url = process.env.TEST_DATABASE_URL ?? process.env.DATABASE_URL;
  if (!url) {
    dir = makeStateDir('deployer-pg-');
    server = await startEmbeddedPostgres(dir);
    url = server.url.replace(/\/[^/]*$/, '/postgres');
  }
  project.provide('pgAdminUrl', url);
}

export async function teardown(): Promise<void> {
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
}
