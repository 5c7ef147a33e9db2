import type { ObservedContainer, ObservedVolume } from '../types.js';

/** What a removal found: `removed` by us, or already `gone` (404) or being removed (409). */
export type RemoveOutcome = 'removed' | 'gone';

/** A volume removal: `in_use` when a container still uses it (left for a later sweep). */
export type VolumeRemoveOutcome = RemoveOutcome | 'in_use';

/**
 * The container engine as the controller sees it. Implementations re-check
 * ownership labels in code, bound every call with a timeout, and reject on any
 * engine error: an error is never an empty answer.
 */
export interface Runtime {
  /** Engine name for logs and metrics (`docker`). */
  readonly name: string;
  /** Every container carrying `deployer.deployment_id`, running or not. */
  listContainers(): Promise<ObservedContainer[]>;
  /** Every named volume carrying `deployer.deployment_id` (deployment-scoped or shared). */
  listVolumes(): Promise<ObservedVolume[]>;
  /** A fresh read of one container; undefined when it no longer exists. */
  inspectContainer(id: string): Promise<ObservedContainer | undefined>;
  /** Force-removes a container with its anonymous volumes. */
  removeContainer(id: string): Promise<RemoveOutcome>;
  /** Stops a container (kept for debugging); `gone` when it no longer exists. */
  stopContainer(id: string): Promise<RemoveOutcome | 'stopped'>;
  /** Removes a named volume. */
  removeVolume(name: string): Promise<VolumeRemoveOutcome>;
  /** Round-trip latency in milliseconds. */
  ping(): Promise<number>;
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
