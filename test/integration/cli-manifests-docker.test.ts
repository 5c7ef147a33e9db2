/**
 * `describe deployment` finds the deployment's containers through the
 * runtime, on a PRIVATE Docker engine (DESIGN.md section 5): only those
 * labelled with its id, with their state. Skipped loudly when this machine
 * cannot run a private dockerd, except in CI, where it fails instead.
 */
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { importBusyboxImage } from '../support/busybox-image.js';
import { startPrivateDockerd, type PrivateDockerd } from '../support/dockerd.js';
import { runManifestCli } from '../support/manifest-cli.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { dockerSkip, requireDocker } from '../support/processes.js';

const skip = dockerSkip('describe-with-containers tests');

describe.skipIf(skip !== null)('describe deployment with a real Docker engine', { timeout: 120_000 }, () => {
  let daemon: PrivateDockerd | undefined;
  let docker: Docker;
  let database: TestDatabase;
  /** What the next command reads on stdin. */
  let input = '';

  function cli(args: string[]) {
    return runManifestCli(args, { stdin: input, configEnv: { DATABASE_URL: database.url, DOCKER_HOST: daemon!.dockerHost } });
  }

  beforeAll(async () => {
    requireDocker();
    database = await createTestDatabase('cli_docker');
    daemon = await startPrivateDockerd();
    docker = new Docker({ socketPath: daemon.socketPath });
  }, 90_000);

  afterAll(async () => {
    await daemon?.stop();
    await database?.drop();
  }, 60_000);

  it('lists the containers labelled with the deployment id, with their state, and no others', async () => {
    const image = await importBusyboxImage(docker);
    input = `apiVersion: deployer/v1\nkind: Service\nmetadata: { project: shop, name: web }\nspec: { image: "${image}", replicas: 2 }\n`;
    expect((await cli(['apply', '-f', '-'])).code).toBe(0);

    const make = async (name: string, deploymentId: string, replica: string, run: boolean) => {
      const container = await docker.createContainer({
        name,
        Image: image,
        Cmd: ['sleep', '3600'],
        Labels: { 'deployer.deployment_id': deploymentId, 'deployer.managed-by': 'deployer-controller', 'deployer.replica': replica },
        HostConfig: { NetworkMode: 'none' },
      });
      if (run) await container.start();
      return container.id;
    };
    const running = await make('shop.web.r1.0', 'shop.web.r1', '0', true);
    const stopped = await make('shop.web.r1.1', 'shop.web.r1', '1', false);
    await make('shop.api.r1.0', 'shop.api.r1', '0', true);
    await docker.createContainer({ name: 'unlabelled', Image: image, Cmd: ['true'], HostConfig: { NetworkMode: 'none' } });

    const run = await cli(['describe', 'deployment', 'shop.web.r1']);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const section = run.stdout.slice(run.stdout.indexOf('Containers:'), run.stdout.indexOf('Events:'));
    const lines = section.trimEnd().split('\n');
    expect(lines[0]).toBe('Containers:');
    expect(lines[1]).toMatch(/^ {2}NAME +ID +REPLICA +STATE +HEALTH +AGE$/);
    expect(lines.slice(2).map((l) => l.trim().split(/\s+/).slice(0, 4))).toEqual([
      ['shop.web.r1.0', running.slice(0, 12), '0', 'running'],
      ['shop.web.r1.1', stopped.slice(0, 12), '1', 'created'],
    ]);
    expect(run.stdout).not.toContain('shop.api.r1.0');
    expect(run.stdout).not.toContain('unlabelled');
  });
});
