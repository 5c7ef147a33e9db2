/**
 * Smoke test of the private Docker engine used by the integration suites
 * (DESIGN.md section 5): start it, import the busybox image offline, run a
 * labelled container without network, find it by label, remove it, stop the
 * engine. Skipped loudly when this machine cannot run a private dockerd,
 * except in CI, where it fails instead.
 */
import { existsSync } from 'node:fs';
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { importBusyboxImage } from '../support/busybox-image.js';
import { startPrivateDockerd, type PrivateDockerd } from '../support/dockerd.js';
import { dockerSkip, pidAlive, requireDocker } from '../support/processes.js';

const skip = dockerSkip('private dockerd tests');

describe.skipIf(skip !== null)('private dockerd', { timeout: 120_000 }, () => {
  let daemon: PrivateDockerd | undefined;
  let docker: Docker;

  beforeAll(async () => {
    requireDocker();
    const started = Date.now();
    daemon = await startPrivateDockerd();
    console.info(`private dockerd pid ${daemon.pid} (${daemon.storageDriver}) ready in ${Date.now() - started} ms at ${daemon.socketPath}`);
    docker = new Docker({ socketPath: daemon.socketPath });
  }, 60_000);

  afterAll(async () => {
    await daemon?.stop();
  }, 60_000);

  it('runs, lists and removes a labelled container without network, then stops', async () => {
    if (daemon === undefined) throw new Error('daemon not started');
    expect(daemon.dockerHost).toBe(`unix://${daemon.socketPath}`);
    expect(await docker.ping()).toBeTruthy();

    const image = await importBusyboxImage(docker);
    expect(await importBusyboxImage(docker)).toBe(image); // second call: already there

    const container = await docker.createContainer({
      Image: image,
      Cmd: ['sleep', '300'],
      Labels: { 'deployer.deployment_id': 'x' },
      HostConfig: { NetworkMode: 'none' },
    });
    await container.start();

    const listed = await docker.listContainers({ all: true, filters: { label: ['deployer.deployment_id'] } });
    const mine = listed.find((c) => c.Id === container.id);
    expect(mine).toBeDefined();
    expect(mine?.State).toBe('running');
    expect(mine?.Labels['deployer.deployment_id']).toBe('x');
    expect(mine?.HostConfig.NetworkMode).toBe('none');

    await container.remove({ force: true, v: true });
    await expect(container.remove({ force: true, v: true })).rejects.toMatchObject({ statusCode: 404 });
    expect(await docker.listContainers({ all: true })).toEqual([]);

    const { pid, containerdPid, baseDir } = daemon;
    await daemon.stop();
    expect(pidAlive(pid)).toBe(false);
    expect(pidAlive(containerdPid)).toBe(false);
    await daemon.stop(); // idempotent
    expect(existsSync(baseDir)).toBe(false);
  });
});
