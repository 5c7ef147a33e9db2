import { parseDuration } from '../duration.js';
import { parseVolume, type Spec } from '../manifest/spec.js';
import { containerName, scopedVolumeName } from '../reconcilers/rollout.js';
import type { ContainerCreateSpec, Runtime } from '../runtime/runtime.js';
import { LABELS, type Deployment } from '../types.js';

/** How containers are made beyond the spec (from the config). */
export interface ContainerOptions {
  controllerName: string;
  /** Docker network mode for new containers; engine default when undefined. */
  networkMode?: string | undefined;
}

type Identity = Pick<Deployment, 'id' | 'project' | 'service' | 'revision'>;

/** The labels of DESIGN.md 3.1 on every container and scoped volume of a deployment. */
export function ownershipLabels(d: Identity, controllerName: string): Record<string, string> {
  return {
    [LABELS.deploymentId]: d.id,
    [LABELS.managedBy]: controllerName,
    [LABELS.project]: d.project,
    [LABELS.service]: d.service,
    [LABELS.revision]: String(d.revision),
  };
}

/** The named volumes a deployment's containers mount: shared project ones and deployment-scoped ones. */
export function volumesFor(d: Identity, spec: Spec, controllerName: string) {
  return (spec.volumes ?? []).map((entry, index) => {
    const v = parseVolume(entry);
    const shared = v.name !== undefined;
    return {
      name: v.name ?? scopedVolumeName(d.id, index),
      target: v.path,
      readOnly: v.readOnly,
      labels: shared
        ? { [LABELS.shared]: 'true', [LABELS.project]: d.project, [LABELS.managedBy]: controllerName }
        : ownershipLabels(d, controllerName),
    };
  });
}

/** What replica `replica` of a deployment is created with. */
export function containerSpecFor(d: Identity, spec: Spec, replica: number, options: ContainerOptions): ContainerCreateSpec {
  const hc = spec.healthcheck;
  const test = hc ? (Array.isArray(hc.test) ? hc.test : ['CMD-SHELL', hc.test]) : undefined;
  return {
    name: containerName(d, replica),
    image: spec.image,
    ...(spec.command ? { command: spec.command } : {}),
    env: spec.env ?? {},
    labels: { ...(spec.labels ?? {}), ...ownershipLabels(d, options.controllerName), [LABELS.replica]: String(replica) },
    mounts: volumesFor(d, spec, options.controllerName).map((v) => ({ volume: v.name, target: v.target, readOnly: v.readOnly })),
    ports: spec.ports ?? [],
    ...(hc && test
      ? {
          healthcheck: {
            test,
            ...(hc.interval ? { intervalMs: parseDuration(hc.interval) } : {}),
            ...(hc.timeout ? { timeoutMs: parseDuration(hc.timeout) } : {}),
            ...(hc.retries !== undefined ? { retries: hc.retries } : {}),
            ...(hc.startPeriod ? { startPeriodMs: parseDuration(hc.startPeriod) } : {}),
          },
        }
      : {}),
    ...(options.networkMode ? { networkMode: options.networkMode } : {}),
  };
}

/**
 * Ensures the volumes, then creates the given replicas (an existing container
 * of the same name and deployment is taken as it is). Returns the container
 * ids and how many were new.
 */
export async function createReplicas(
  runtime: Runtime,
  d: Identity,
  spec: Spec,
  replicas: readonly number[],
  options: ContainerOptions,
): Promise<{ ids: string[]; created: number }> {
  for (const v of volumesFor(d, spec, options.controllerName)) await runtime.ensureVolume(v.name, v.labels);
  const ids: string[] = [];
  let created = 0;
  for (const replica of replicas) {
    const result = await runtime.createContainer(containerSpecFor(d, spec, replica, options));
    ids.push(result.id);
    if (result.created) created++;
  }
  return { ids, created };
}
