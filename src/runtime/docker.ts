import Docker from 'dockerode';
import { LABELS, type ContainerDetail, type Health, type ObservedContainer, type ObservedVolume } from '../types.js';
import {
  ImageUnavailableError,
  RuntimeError,
  type ContainerCreateSpec,
  type EventSubscription,
  type PullProgress,
  type RuntimeEvent,
  type RemoveOutcome,
  type Runtime,
  type VolumeRemoveOutcome,
} from './runtime.js';

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

function firstLine(text: string): string {
  return text.split('\n')[0] ?? text;
}

/** Health from a listing's status text, e.g. `Up 5 seconds (healthy)`. */
export function healthFromStatus(status: string | undefined): Health {
  const m = /\((healthy|unhealthy|health: starting)\)/.exec(status ?? '');
  if (!m) return 'none';
  return m[1] === 'health: starting' ? 'starting' : (m[1] as Health);
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

  async listContainers(deploymentId?: string): Promise<ObservedContainer[]> {
    const label = deploymentId === undefined ? LABELS.deploymentId : `${LABELS.deploymentId}=${deploymentId}`;
    const list = await this.call('list_containers', () => this.docker.listContainers({ all: true, filters: { label: [label] } }));
    if (!Array.isArray(list)) throw new RuntimeError('docker list_containers: unexpected answer', 'list_containers');
    return list
      .filter((c) => hasOwnershipLabel(c.Labels) && (deploymentId === undefined || c.Labels[LABELS.deploymentId] === deploymentId))
      .map((c) => ({
        health: healthFromStatus(c.Status),
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

  async inspectContainer(id: string): Promise<ContainerDetail | undefined> {
    try {
      const info = await this.call('inspect_container', () => this.docker.getContainer(id).inspect());
      const started = info.State.StartedAt && !info.State.StartedAt.startsWith('0001-') ? new Date(info.State.StartedAt) : null;
      const health = (info.State as { Health?: { Status?: string } }).Health?.Status;
      return {
        id: info.Id,
        name: info.Name.replace(/^\//, ''),
        labels: info.Config.Labels ?? {},
        state: info.State.Status,
        createdAt: new Date(info.Created),
        health: health === 'starting' || health === 'healthy' || health === 'unhealthy' ? health : 'none',
        startedAt: started,
        exitCode: started && info.State.Status !== 'running' ? info.State.ExitCode : null,
        restartCount: info.RestartCount ?? 0,
      };
    } catch (err) {
      if (err instanceof RuntimeError && err.statusCode === 404) return undefined;
      throw err;
    }
  }

  async imageExists(ref: string): Promise<boolean> {
    try {
      await this.call('inspect_image', () => this.docker.getImage(ref).inspect());
      return true;
    } catch (err) {
      if (err instanceof RuntimeError && err.statusCode === 404) return false;
      throw err;
    }
  }

  async pullImage(ref: string, onProgress?: (progress: PullProgress) => void): Promise<void> {
    const layers = new Map<string, { current: number; total: number; done: boolean }>();
    const report = () => {
      if (!onProgress) return;
      let bytesDone = 0;
      let bytesTotal = 0;
      let layersDone = 0;
      for (const l of layers.values()) {
        bytesDone += l.current;
        bytesTotal += l.total;
        if (l.done) layersDone++;
      }
      onProgress({ layersDone, layersTotal: layers.size, bytesDone, bytesTotal });
    };
    // Pulls take as long as they take: no per-call timeout, but an idle stream is still bounded by the socket.
    const started = performance.now();
    try {
      const stream = (await this.docker.pull(ref)) as NodeJS.ReadableStream;
      await new Promise<void>((resolve, reject) => {
        this.docker.modem.followProgress(
          stream,
          (err: Error | null, output: { error?: string; errorDetail?: { message?: string } }[] | undefined) => {
            const failed = err?.message ?? output?.find((o) => o.error)?.error;
            if (failed) reject(new ImageUnavailableError(`image ${ref} could not be pulled: ${failed}`));
            else resolve();
          },
          (event: { id?: string; status?: string; progressDetail?: { current?: number; total?: number } }) => {
            // "Pulling from repo" carries the tag as its id: not a layer.
            if (!event.id || !event.status || event.status.startsWith('Pulling from')) return;
            const layer = layers.get(event.id) ?? { current: 0, total: 0, done: false };
            if (event.progressDetail?.total) layer.total = event.progressDetail.total;
            if (event.progressDetail?.current !== undefined && event.status === 'Downloading') layer.current = event.progressDetail.current;
            if (/^(Pull complete|Already exists|Download complete)$/.test(event.status)) {
              layer.done = event.status !== 'Download complete' || layer.done;
              if (layer.total) layer.current = layer.total;
            }
            layers.set(event.id, layer);
            report();
          },
        );
      });
      this.options.observe?.('pull_image', (performance.now() - started) / 1000, true);
    } catch (err) {
      this.options.observe?.('pull_image', (performance.now() - started) / 1000, false);
      if (err instanceof ImageUnavailableError) throw err;
      const status = statusOf(err);
      // The engine answered: the reference is unknown, denied or the registry unreachable. Not our engine's fault.
      if (status !== undefined && status >= 400 && status < 600) {
        const detail = (err as { json?: { message?: string } }).json?.message ?? (err as Error).message;
        throw new ImageUnavailableError(`image ${ref} could not be pulled: ${firstLine(detail).trim()}`, { cause: err });
      }
      throw new RuntimeError(`docker pull_image: ${firstLine((err as Error).message)}`, 'pull_image', status, { cause: err });
    }
  }

  async ensureVolume(name: string, labels: Record<string, string>): Promise<void> {
    try {
      await this.call('inspect_volume', () => this.docker.getVolume(name).inspect());
      return;
    } catch (err) {
      if (!(err instanceof RuntimeError && err.statusCode === 404)) throw err;
    }
    await this.call('create_volume', () => this.docker.createVolume({ Name: name, Labels: labels }));
  }

  async createContainer(spec: ContainerCreateSpec): Promise<{ id: string; created: boolean }> {
    const exposed: Record<string, object> = {};
    const bindings: Record<string, { HostIp?: string; HostPort?: string }[]> = {};
    for (const entry of spec.ports) {
      const [main, proto = 'tcp'] = entry.split('/');
      const parts = main!.startsWith('[') ? [main!.slice(0, main!.indexOf(']') + 1), ...main!.slice(main!.indexOf(']') + 2).split(':')] : main!.split(':');
      const containerPort = parts.pop()!;
      const hostPort = parts.pop();
      const hostIp = parts.pop()?.replace(/^\[|\]$/g, '');
      const key = `${containerPort}/${proto}`;
      exposed[key] = {};
      if (hostPort) bindings[key] = [...(bindings[key] ?? []), { ...(hostIp ? { HostIp: hostIp } : {}), HostPort: hostPort }];
    }
    const ns = (ms: number | undefined) => (ms === undefined ? undefined : ms * 1_000_000);
    const options: Docker.ContainerCreateOptions = {
      name: spec.name,
      Image: spec.image,
      ...(spec.command ? { Cmd: spec.command } : {}),
      Env: Object.entries(spec.env).map(([k, v]) => `${k}=${v}`),
      Labels: spec.labels,
      ...(Object.keys(exposed).length > 0 ? { ExposedPorts: exposed } : {}),
      ...(spec.healthcheck
        ? {
            Healthcheck: {
              Test: spec.healthcheck.test,
              ...(spec.healthcheck.intervalMs !== undefined ? { Interval: ns(spec.healthcheck.intervalMs) } : {}),
              ...(spec.healthcheck.timeoutMs !== undefined ? { Timeout: ns(spec.healthcheck.timeoutMs) } : {}),
              ...(spec.healthcheck.retries !== undefined ? { Retries: spec.healthcheck.retries } : {}),
              ...(spec.healthcheck.startPeriodMs !== undefined ? { StartPeriod: ns(spec.healthcheck.startPeriodMs) } : {}),
            },
          }
        : {}),
      HostConfig: {
        ...(spec.networkMode ? { NetworkMode: spec.networkMode } : {}),
        RestartPolicy: { Name: 'unless-stopped' },
        Mounts: spec.mounts.map((m) => ({ Type: 'volume' as const, Source: m.volume, Target: m.target, ReadOnly: m.readOnly })),
        ...(Object.keys(bindings).length > 0 ? { PortBindings: bindings } : {}),
      },
    };
    try {
      const container = await this.call('create_container', () => this.docker.createContainer(options));
      return { id: container.id, created: true };
    } catch (err) {
      if (!(err instanceof RuntimeError && err.statusCode === 409)) {
        if (err instanceof RuntimeError && err.statusCode === 404) {
          throw new ImageUnavailableError(`image ${spec.image} is not present: ${err.message}`, { cause: err });
        }
        throw err;
      }
    }
    // The name is taken: a repeated phase. Use it only if it is ours, for the same deployment.
    const existing = await this.inspectContainer(spec.name);
    const wanted = spec.labels[LABELS.deploymentId];
    if (!existing || existing.labels[LABELS.deploymentId] !== wanted) {
      throw new RuntimeError(`docker create_container: name ${spec.name} is taken by a container of another deployment`, 'create_container', 409);
    }
    return { id: existing.id, created: false };
  }

  async startContainer(id: string): Promise<void> {
    try {
      await this.call('start_container', () => this.docker.getContainer(id).start());
    } catch (err) {
      // 304: already started.
      if (err instanceof RuntimeError && err.statusCode === 304) return;
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

  watchEvents(onEvent: (event: RuntimeEvent) => void, onError: (err: Error, retryInMs: number) => void): EventSubscription {
    // A client of its own: the stream is long-lived and must not share the call timeout.
    const docker = new Docker(dockerOptions(this.options.dockerHost));
    let closed = false;
    let stream: NodeJS.ReadableStream | undefined;
    let timer: NodeJS.Timeout | undefined;
    let failures = 0;
    // Replay from a little before the last event seen: the engine keeps only a short history.
    let since = Math.floor(Date.now() / 1000);
    const retry = (err: Error) => {
      stream = undefined;
      if (closed || timer) return;
      failures++;
      const delay = Math.round(Math.min(30_000, 500 * 2 ** Math.min(failures - 1, 6)) * (0.8 + Math.random() * 0.4));
      onError(err, delay);
      timer = setTimeout(() => {
        timer = undefined;
        void connect();
      }, delay);
    };
    const connect = async () => {
      if (closed) return;
      try {
        const s = (await docker.getEvents({
          since: since - 5,
          filters: { type: ['container'], label: [LABELS.deploymentId] },
        })) as NodeJS.ReadableStream;
        if (closed) {
          (s as unknown as { destroy?: () => void }).destroy?.();
          return;
        }
        stream = s;
        failures = 0;
        let buffered = '';
        s.on('data', (chunk: Buffer) => {
          buffered += chunk.toString();
          let nl;
          while ((nl = buffered.indexOf('\n')) >= 0) {
            const line = buffered.slice(0, nl).trim();
            buffered = buffered.slice(nl + 1);
            if (!line) continue;
            try {
              const e = JSON.parse(line) as { Action?: string; time?: number; Actor?: { ID?: string; Attributes?: Record<string, string> } };
              if (e.time) since = Math.max(since, e.time);
              const deploymentId = e.Actor?.Attributes?.[LABELS.deploymentId];
              if (e.Action && e.Actor?.ID && deploymentId) onEvent({ action: e.Action, containerId: e.Actor.ID, deploymentId });
            } catch {
              // A torn line is only a lost hint.
            }
          }
        });
        s.on('error', (err: Error) => retry(err));
        s.on('end', () => retry(new Error('docker event stream ended')));
      } catch (err) {
        retry(err as Error);
      }
    };
    void connect();
    return {
      close: () => {
        closed = true;
        clearTimeout(timer);
        (stream as unknown as { destroy?: () => void } | undefined)?.destroy?.();
      },
    };
  }

  async ping(): Promise<number> {
    const started = performance.now();
    await this.call('ping', () => this.docker.ping());
    return performance.now() - started;
  }
}
