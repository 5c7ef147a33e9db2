/**
 * A REAL image pull (issue 3, item 2): a tiny Docker Registry HTTP API V2 of
 * our own on 127.0.0.1 (`support/registry.ts`), a PRIVATE dockerd pulling from
 * it over loopback (dockerd treats 127.0.0.0/8 as an insecure registry by
 * default, so plain HTTP works), a real Postgres and the daemon in this
 * process with containers in network mode `none`.
 *
 * - the runtime pulls with progress (layers, bytes growing to the total);
 * - a pending deployment is pulled, with `pulling ...: N/M layers, X/Y MB` in
 *   its `progress.message` while in `pulling`, and rolled out to `active`;
 * - an image already present is not pulled again (no manifest or blob
 *   request reaches the registry);
 * - an image the registry does not have fails the deployment with a reason
 *   naming it, and it is not retried.
 *
 * Blob bodies are throttled so that a pull lasts a few seconds and its
 * progress can be watched; no assertion is about how long anything takes.
 * Skipped loudly when this machine cannot run a private dockerd, except in
 * CI, where it fails instead.
 */
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DockerRuntime } from '../../src/runtime/docker.js';
import type { PullProgress } from '../../src/runtime/runtime.js';
import type { DeploymentRow } from '../../src/store/schema.js';
import { startPrivateDockerd, type PrivateDockerd } from '../support/dockerd.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { dockerSkip, requireDocker, waitFor } from '../support/processes.js';
import { busyboxLayer, startTestRegistry, type TestRegistry } from '../support/registry.js';
import { containersOf, describeRows, insertDeployment, removeManaged, row, startDaemon, type TestDaemon } from '../support/rollout-helpers.js';

const skip = dockerSkip('image pull tests');

/** Random padding in the layer: incompressible, so the gzipped layer is a few MB and its download shows progress. */
const PAD_BYTES = 4 * 1024 * 1024;
/** Blob throttling: ~5 MB in 64 KiB chunks 30 ms apart, i.e. a pull of a few seconds (more than the 1 s between progress writes). */
const THROTTLE = { chunkBytes: 64 * 1024, chunkDelayMs: 30 };

/** A progress message as the rollout writes it: `pulling IMAGE: 1/1 layers, 0.3/0.9 MB`. */
const PROGRESS = /^pulling (\S+): (\d+)\/(\d+) layers, (\d+\.\d)\/(\d+\.\d) MB$/;

describe.skipIf(skip !== null)('image pull from a registry on 127.0.0.1 (real Postgres, private dockerd)', { timeout: 120_000 }, () => {
  let dockerd: PrivateDockerd | undefined;
  let docker: Docker;
  let registry: TestRegistry | undefined;
  let t: TestDatabase | undefined;
  let d: TestDaemon | undefined;
  /** `127.0.0.1:PORT/demo/app:v1`. */
  let image: string;
  let missing: string;
  /** What the first test's pull reported, for the known-bug test after it. */
  let runtimeProgress: PullProgress[] = [];

  beforeAll(async () => {
    requireDocker();
    // The layer is built before anything is started, so a failure here leaves nothing running.
    const layer = await busyboxLayer(PAD_BYTES);
    registry = await startTestRegistry(THROTTLE);
    await registry.push('demo/app', 'v1', [layer]);
    image = `${registry.host}/demo/app:v1`;
    missing = `${registry.host}/demo/missing:v1`;
    dockerd = await startPrivateDockerd();
    docker = new Docker({ socketPath: dockerd.socketPath });
    t = await createTestDatabase('pull');
    d = await startDaemon(t.url, dockerd.dockerHost);
  }, 120_000);

  afterAll(async () => {
    await d?.stop();
    if (dockerd) await removeManaged(docker).catch(() => undefined);
    await dockerd?.stop();
    await registry?.close();
    await t?.drop();
  }, 60_000);

  const pushed = () => registry!.pushed('demo/app', 'v1')!;
  const context = (...ids: string[]) => async () => `${await describeRows(t!.db, ids)}\n${d?.tail() ?? ''}\nregistry: ${registry!.requests.slice(-10).join(', ')}`;

  /** Polls `id` until `done`, handing every row read to `seen` first. */
  function watch(id: string, what: string, done: (r: DeploymentRow) => boolean, seen: (r: DeploymentRow) => void = () => undefined): Promise<DeploymentRow> {
    return waitFor(
      `${id}: ${what}`,
      async () => {
        const r = await row(t!.db, id);
        seen(r);
        return done(r) ? r : undefined;
      },
      { timeoutMs: 60_000, context: context(id) },
    );
  }

  /** Requests the registry answered since index `from` for manifests or blobs of `repo`. */
  const pullRequests = (repo: string, from = 0) => registry!.requests.slice(from).filter((r) => r.includes(`/v2/${repo}/manifests/`) || r.includes(`/v2/${repo}/blobs/`));

  /** Removes the image from the private engine (nothing uses it: no container of the suite is left when this runs). */
  async function dropImage(ref: string): Promise<void> {
    await docker
      .getImage(ref)
      .remove({ force: true })
      .catch((err: { statusCode?: number }) => {
        if (err.statusCode !== 404) throw err;
      });
  }

  // -------------------------------------------------------------------------

  it('DockerRuntime.pullImage pulls from the registry with progress: layers, and bytes growing to the layer size', async () => {
    await dropImage(image);
    const runtime = new DockerRuntime({ dockerHost: dockerd!.dockerHost, timeoutMs: 30_000 });
    expect(await runtime.imageExists(image)).toBe(false);
    const before = registry!.requests.length;

    const progress: PullProgress[] = [];
    await runtime.pullImage(image, (p) => progress.push({ ...p }));
    runtimeProgress = progress;

    expect(await runtime.imageExists(image)).toBe(true);
    const info = await docker.getImage(image).inspect();
    expect(info.Id).toBe(pushed().configDigest);
    expect(info.RepoDigests).toContain(`${registry!.host}/demo/app@${pushed().manifestDigest}`);
    // The layer really came over the wire, from our registry.
    expect(pullRequests('demo/app', before)).toContain(`GET /v2/demo/app/blobs/${pushed().layerDigests[0]}`);

    expect(progress.length).toBeGreaterThan(0);
    expect(Math.max(...progress.map((p) => p.layersTotal))).toBeGreaterThanOrEqual(1);
    const layerBytes = pushed().layerSizes[0]!;
    const last = progress.at(-1)!;
    expect(last.bytesTotal).toBe(layerBytes);
    expect(last.bytesDone).toBe(layerBytes);
    expect(last.layersDone).toBeGreaterThanOrEqual(1);
    // Bytes grow: never backwards, with several values strictly between nothing and everything.
    const done = progress.map((p) => p.bytesDone);
    expect(done).toEqual([...done].sort((a, b) => a - b));
    expect(new Set(done.filter((b) => b > 0 && b < layerBytes)).size).toBeGreaterThanOrEqual(2);
  });

  // The engine's first line, `{"status":"Pulling from demo/app","id":"v1"}`, has an id (the tag):
  // it is not a layer, and must not be counted as one.
  it('DockerRuntime.pullImage counts only the layers of the image: a 1-layer pull ends at 1/1 layers', () => {
    expect(runtimeProgress.length, 'the previous test recorded the progress of a pull').toBeGreaterThan(0);
    expect(runtimeProgress.map((p) => p.layersTotal).filter((n) => n !== 1)).toEqual([]);
    expect(runtimeProgress.at(-1)).toMatchObject({ layersDone: 1, layersTotal: 1 });
  });

  it('rolls a pending deployment of a registry image out to active, with pull progress in progress.message', async () => {
    await dropImage(image);
    expect(await new DockerRuntime({ dockerHost: dockerd!.dockerHost, timeoutMs: 30_000 }).imageExists(image)).toBe(false);
    const before = registry!.requests.length;
    const id = await insertDeployment(t!.db, {
      revision: 1,
      spec: { image, replicas: 1, command: ['sleep', '3600'], healthcheck: { test: ['CMD', 'true'], interval: '1s' } },
    });

    const pulling: string[] = [];
    const r = await watch(id, 'active with the rollout complete', (now) => now.status === 'active' && now.phase === null, (now) => {
      if (now.phase === 'pulling' && now.progress?.message && !pulling.includes(now.progress.message)) pulling.push(now.progress.message);
    });
    expect(r.attempts).toBe(1);
    expect(r.status_reason).toBeNull();

    // Seen while in `pulling`: messages in the rollout's format, naming the image, with bytes of the layer.
    const parsed = pulling.map((m) => PROGRESS.exec(m)).filter((m): m is RegExpExecArray => m !== null);
    expect(parsed.length, `pull progress messages seen: ${JSON.stringify(pulling)}`).toBeGreaterThan(0);
    for (const m of parsed) {
      expect(m[1]).toBe(image);
      expect(Number(m[4])).toBeLessThanOrEqual(Number(m[5]));
    }
    const layerMb = (pushed().layerSizes[0]! / 1_048_576).toFixed(1);
    expect(parsed.some((m) => m[5] === layerMb && Number(m[3]) >= 1), `pull progress messages seen: ${JSON.stringify(pulling)}`).toBe(true);

    // The registry served the image: manifest, config and layer.
    const seen = pullRequests('demo/app', before);
    expect(seen.some((req) => req.includes('/manifests/'))).toBe(true);
    expect(seen).toContain(`GET /v2/demo/app/blobs/${pushed().configDigest}`);
    expect(seen).toContain(`GET /v2/demo/app/blobs/${pushed().layerDigests[0]}`);

    // Its one container runs the pulled image, with the spec's command and the image's environment.
    const containers = await containersOf(docker, id);
    expect(containers.map((c) => c.State)).toEqual(['running']);
    const detail = await docker.getContainer(containers[0]!.Id).inspect();
    expect(detail.Image).toBe(pushed().configDigest);
    expect(detail.Config.Image).toBe(image);
    expect(detail.Config.Cmd).toEqual(['sleep', '3600']);
    expect(detail.Config.Env).toContain('PATH=/bin');
    expect(detail.HostConfig.NetworkMode).toBe('none');
  });

  it('does not pull an image already present: a second revision of the same image reaches the registry for nothing', async () => {
    // Follows the previous test: revision 1 is active and the image is in the engine.
    expect((await row(t!.db, 'shop.web.r1')).status).toBe('active');
    expect((await docker.getImage(image).inspect()).Id).toBe(pushed().configDigest);
    const before = registry!.requests.length;

    const id = await insertDeployment(t!.db, {
      revision: 2,
      spec: { image, replicas: 1, command: ['sleep', '3600'], env: { REVISION: '2' }, healthcheck: { test: ['CMD', 'true'], interval: '1s' } },
    });
    const messages: string[] = [];
    const r = await watch(id, 'active with the rollout complete', (now) => now.status === 'active' && now.phase === null, (now) => {
      if (now.progress?.message) messages.push(now.progress.message);
    });
    expect(r.attempts).toBe(1);
    expect((await row(t!.db, 'shop.web.r1')).status).toBe('superseded');

    expect(pullRequests('demo/app', before)).toEqual([]);
    expect(messages.filter((m) => PROGRESS.test(m))).toEqual([]);
    const containers = await containersOf(docker, id);
    expect(containers.map((c) => c.State)).toEqual(['running']);
    expect((await docker.getContainer(containers[0]!.Id).inspect()).Image).toBe(pushed().configDigest);
  });

  it('fails a deployment whose image the registry does not have, naming the image, and does not retry it', async () => {
    const id = await insertDeployment(t!.db, {
      service: 'ghost',
      revision: 1,
      spec: { image: missing, replicas: 1, command: ['sleep', '3600'] },
    });
    const r = await watch(id, 'failed', (now) => now.status === 'failed');
    expect(r.status_reason).toContain(missing);
    expect(r.attempts).toBe(1);
    // The engine did ask our registry (and was told the repository is unknown).
    const asked = pullRequests('demo/missing').length;
    expect(asked).toBeGreaterThan(0);

    // A few sweeps later: still failed, still one attempt, no new pull, no container.
    await d!.waitSweeps(3);
    const after = await row(t!.db, id);
    expect(after.status).toBe('failed');
    expect(after.attempts).toBe(1);
    expect(after.status_reason).toBe(r.status_reason);
    expect(pullRequests('demo/missing').length).toBe(asked);
    expect(await containersOf(docker, id)).toEqual([]);
  });
});
