import Docker from 'dockerode';
import { LABELS, type ObservedContainer, type ObservedVolume } from '../types.js';
import { RuntimeError, type RemoveOutcome, type Runtime, type VolumeRemoveOutcome } from './runtime.js';

/** Options of {@link DockerRuntime}. */
export interface DockerRuntimeOptions {
  /** `unix:///var/run/docker.sock` or `tcp://127.0.0.1:2375`; dockerode's default (DOCKER_HOST) otherwise. */
  dockerHost?: string;
  /** Bound on every call, in milliseconds. */
  timeoutMs: number;
  /** Called with each call's duration (for `deployer_runtime_request_duration_seconds`). */
  observe?: (op: string, seconds: number, ok: boolean) => void;
}

/** dockerode options for a `DOCKER_HOST`-style address. */
export function dockerOptions(dockerHost: string | undefined): Docker.DockerOptions {
  if (!dockerHost) return {};
  if (dockerHost.startsWith('unix://')) return { socketPath: dockerHost.slice('unix://'.length) };
  if (dockerHost.startsWith('/')) return { socketPath: dockerHost };
  const url = new URL(dockerHost);
  if (url.protocol === 'tcp:' || url.protocol === 'http:') return { protocol: 'http', host: url.hostname, port: Number(url.port || 2375) };
  if (url.protocol === 'https:') return { protocol: 'https', host: url.hostname, port: Number(url.port || 2376) };
  throw new RuntimeError(`unsupported DOCKER_HOST ${dockerHost}: expected unix:// or tcp://`, 'connect');
}

function statusOf(err: unknown): number | undefined {
  const code = (err as { statusCode?: unknown } | null)?.statusCode;
  return typeof code === 'number' ? code : undefined;
}

/** True when the container carries our ownership label (re-checked in code: some proxies ignore filters). */
function hasOwnershipLabel(labels: Record<string, string> | undefined | null): labels is Record<string, string> {
  return !!labels && typeof labels[LABELS.deploymentId] === 'string' && labels[LABELS.deploymentId] !== '';
}

/** The Docker engine through dockerode. */
export class DockerRuntime implements Runtime {
  readonly name = 'docker';
  private readonly docker: Docker;

  constructor(private readonly options: DockerRuntimeOptions) {
    this.docker = new Docker(dockerOptions(options.dockerHost));
  }

  /** Runs one engine call with a timeout, timing it and wrapping its error. */
  private async call<T>(op: string, fn: () => Promise<T>): Promise<T> {
    const started = performance.now();
    let timer: NodeJS.Timeout | undefined;
    try {
      const result = await Promise.race([
        fn(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new RuntimeError(`docker ${op} timed out after ${this.options.timeoutMs}ms`, op)), this.options.timeoutMs);
        }),
      ]);
      this.options.observe?.(op, (performance.now() - started) / 1000, true);
      return result;
    } catch (err) {
      this.options.observe?.(op, (performance.now() - started) / 1000, false);
      if (err instanceof RuntimeError) throw err;
      const status = statusOf(err);
      throw new RuntimeError(`docker ${op}: ${(err as Error).message ?? String(err)}`.split('\n')[0]!, op, status, { cause: err });
    } finally {
      clearTimeout(timer);
    }
  }

  async listContainers(): Promise<ObservedContainer[]> {
    const list = await this.call('list_containers', () =>
      this.docker.listContainers({ all: true, filters: { label: [LABELS.deploymentId] } }),
    );
    if (!Array.isArray(list)) throw new RuntimeError('docker list_containers: unexpected answer', 'list_containers');
    return list
      .filter((c) => hasOwnershipLabel(c.Labels))
      .map((c) => ({
        id: c.Id,
        name: (c.Names?.[0] ?? c.Id).replace(/^\//, ''),
        labels: c.Labels,
        state: c.State,
        createdAt: new Date(c.Created * 1000),
      }));
  }

  async listVolumes(): Promise<ObservedVolume[]> {
    const answer = await this.call('list_volumes', () => this.docker.listVolumes({ filters: { label: [LABELS.deploymentId] } }));
    if (!answer || !Array.isArray(answer.Volumes)) throw new RuntimeError('docker list_volumes: unexpected answer', 'list_volumes');
    return answer.Volumes.filter((v) => hasOwnershipLabel(v.Labels)).map((v) => {
      const created = (v as { CreatedAt?: string }).CreatedAt;
      return { name: v.Name, labels: v.Labels, createdAt: created ? new Date(created) : null };
    });
  }

  async inspectContainer(id: string): Promise<ObservedContainer | undefined> {
    try {
      const info = await this.call('inspect_container', () => this.docker.getContainer(id).inspect());
      return {
        id: info.Id,
        name: info.Name.replace(/^\//, ''),
        labels: info.Config.Labels ?? {},
        state: info.State.Status,
        createdAt: new Date(info.Created),
      };
    } catch (err) {
      if (err instanceof RuntimeError && err.statusCode === 404) return undefined;
      throw err;
    }
  }

  async removeContainer(id: string): Promise<RemoveOutcome> {
    try {
      await this.call('remove_container', () => this.docker.getContainer(id).remove({ force: true, v: true }));
      return 'removed';
    } catch (err) {
      // 404: already gone; 409: a removal is already in progress. Both mean done.
      if (err instanceof RuntimeError && (err.statusCode === 404 || err.statusCode === 409)) return 'gone';
      throw err;
    }
  }

  async stopContainer(id: string): Promise<RemoveOutcome | 'stopped'> {
    try {
      await this.call('stop_container', () => this.docker.getContainer(id).stop({ t: 10 }));
      return 'stopped';
    } catch (err) {
      if (err instanceof RuntimeError && err.statusCode === 404) return 'gone';
      if (err instanceof RuntimeError && err.statusCode === 304) return 'stopped';
      throw err;
    }
  }

  async removeVolume(name: string): Promise<VolumeRemoveOutcome> {
    try {
      await this.call('remove_volume', () => this.docker.getVolume(name).remove());
      return 'removed';
    } catch (err) {
      if (err instanceof RuntimeError && err.statusCode === 404) return 'gone';
      if (err instanceof RuntimeError && err.statusCode === 409) return 'in_use';
      throw err;
    }
  }

  async ping(): Promise<number> {
    const started = performance.now();
    await this.call('ping', () => this.docker.ping());
    return performance.now() - started;
  }
}
