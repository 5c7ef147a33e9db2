import type { ContainerDetail, ObservedContainer, ObservedVolume } from '../types.js';

/** What a removal found: `removed` by us, or already `gone` (404) or being removed (409). */
export type RemoveOutcome = 'removed' | 'gone';

/** A volume removal: `in_use` when a container still uses it (left for a later sweep). */
export type VolumeRemoveOutcome = RemoveOutcome | 'in_use';

/** What a container is created with: everything comes from the spec and our labels. */
export interface ContainerCreateSpec {
  name: string;
  image: string;
  command?: string[];
  env: Record<string, string>;
  labels: Record<string, string>;
  mounts: { volume: string; target: string; readOnly: boolean }[];
  /** Port bindings `[ip:][hostPort:]containerPort[/proto]`. */
  ports: string[];
  healthcheck?: { test: string[]; intervalMs?: number; timeoutMs?: number; retries?: number; startPeriodMs?: number };
  /** Docker network mode; engine default when undefined. */
  networkMode?: string;
}

/** Image pull progress, for `progress.message`. */
export interface PullProgress {
  layersDone: number;
  layersTotal: number;
  bytesDone: number;
  bytesTotal: number;
}

/** An image that cannot be had (unknown, unreachable registry, denied): retrying will not help. */
export class ImageUnavailableError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'ImageUnavailableError';
  }
}

/** A container event from the engine's stream: a hint that something changed. */
export interface RuntimeEvent {
  action: string;
  containerId: string;
  deploymentId: string;
}

/** A running event subscription. */
export interface EventSubscription {
  close(): void;
}

/**
 * The container engine as the controller sees it. Implementations re-check
 * ownership labels in code, bound every call with a timeout, and reject on any
 * engine error: an error is never an empty answer.
 */
export interface Runtime {
  /** Engine name for logs and metrics (`docker`). */
  readonly name: string;
  /** Every container carrying `deployer.deployment_id` (or only those of `deploymentId`), running or not. */
  listContainers(deploymentId?: string): Promise<ObservedContainer[]>;
  /** Every named volume carrying `deployer.deployment_id` (deployment-scoped or shared). */
  listVolumes(): Promise<ObservedVolume[]>;
  /** A fresh read of one container; undefined when it no longer exists. */
  inspectContainer(id: string): Promise<ContainerDetail | undefined>;
  /** Whether an image is present locally (never contacts a registry). */
  imageExists(ref: string): Promise<boolean>;
  /** Pulls an image, reporting progress; throws {@link ImageUnavailableError} when it cannot be had. */
  pullImage(ref: string, onProgress?: (progress: PullProgress) => void): Promise<void>;
  /** Creates a named volume with labels unless it exists. */
  ensureVolume(name: string, labels: Record<string, string>): Promise<void>;
  /**
   * Creates a container (not started). When one with that name exists already
   * (a repeated phase), returns it instead: `created` tells which.
   */
  createContainer(spec: ContainerCreateSpec): Promise<{ id: string; created: boolean }>;
  /** Starts a container; already running counts as done. */
  startContainer(id: string): Promise<void>;
  /** Force-removes a container with its anonymous volumes. */
  removeContainer(id: string): Promise<RemoveOutcome>;
  /** Stops a container (kept for debugging); `gone` when it no longer exists. */
  stopContainer(id: string): Promise<RemoveOutcome | 'stopped'>;
  /** Removes a named volume. */
  removeVolume(name: string): Promise<VolumeRemoveOutcome>;
  /** Round-trip latency in milliseconds. */
  ping(): Promise<number>;
  /**
   * Follows the engine's event stream for labelled containers, reconnecting
   * with backoff. Events are hints only: they may be lost, so the periodic
   * full list stays the truth.
   */
  watchEvents?(onEvent: (event: RuntimeEvent) => void, onError: (err: Error, retryInMs: number) => void): EventSubscription;
}

/** An engine error, carrying the HTTP status when the engine answered. */
export class RuntimeError extends Error {
  constructor(
    message: string,
    readonly op: string,
    readonly statusCode?: number,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = 'RuntimeError';
  }
}
