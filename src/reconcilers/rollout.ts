import { formatDuration, parseDuration } from '../duration.js';
import { SpecError, validateSpec, type Spec } from '../manifest/spec.js';
import { CONTROLLER_EXECUTOR, LABELS, PHASES, type ContainerDetail, type Deployment, type DeploymentWithSpec, type Phase, type Progress } from '../types.js';

/**
 * The rollout planner (DESIGN.md 3.3): given one deployment and what the world
 * looks like now, the single next step. Each phase looks at the world before
 * acting, so planning again after a crash, at any instant, picks up where the
 * rollout stopped: containers that exist are not created again, running ones
 * are not started again.
 */

/** A deployment row with its spec, as the rollout reads it. */
export type RolloutDeployment = DeploymentWithSpec;

/** Everything one rollout decision looks at. */
export interface RolloutInput {
  now: Date;
  deployment: RolloutDeployment;
  /** This controller instance (owner value). */
  me: string;
  /** False when the recorded owner is known to be gone (its process is dead). */
  ownerAlive: boolean;
  heartbeatTimeoutMs: number;
  maxAttempts: number;
  /** The deployment's containers (inspected), by replica label. */
  containers: readonly ContainerDetail[];
  /** Whether the spec's image is present locally (only looked at in `pulling`). */
  imagePresent: boolean;
  /** Other deployments of the same service. */
  siblings: readonly Deployment[];
}

/** One step of a rollout. */
export type RolloutStep =
  | { kind: 'none'; why: string }
  | { kind: 'claim' }
  | { kind: 'resume'; why: string }
  | { kind: 'fail'; reason: string }
  /** A newer revision is active already: this pending or deploying one ends superseded. */
  | { kind: 'supersede'; reason: string }
  | { kind: 'advance'; to: Phase }
  | { kind: 'pull'; image: string }
  | { kind: 'create'; replicas: number[] }
  | { kind: 'start'; containerIds: string[] }
  | { kind: 'wait'; ms: number; message: string }
  | { kind: 'activate' }
  | { kind: 'retire'; supersede: Deployment[] }
  | { kind: 'complete' };

/** Total number of steps in progress reports. */
export const TOTAL_STEPS = PHASES.length;

/** Progress at the start of `phase`. */
export function progressAt(phase: Phase, message: string): Progress {
  const step = PHASES.indexOf(phase) + 1;
  return { step, total: TOTAL_STEPS, percent: Math.round(((step - 1) / TOTAL_STEPS) * 100), message };
}

/** Docker-safe fragment of a name. */
function slug(text: string): string {
  // Docker names must start with a letter or digit.
  return text.toLowerCase().replace(/[^a-z0-9_-]+/g, '-').replace(/^[-_]+|[-_]+$/g, '') || 'x';
}

/**
 * The deterministic container name of a replica: creating it twice fails on
 * the name, so a repeated `creating` phase never makes a duplicate.
 */
export function containerName(d: Pick<Deployment, 'project' | 'service' | 'revision'>, replica: number): string {
  return `${slug(d.project)}.${slug(d.service)}.r${d.revision}.${replica}`;
}

/** The deployment-scoped volume for the `index`-th bare-path volume entry. */
export function scopedVolumeName(deploymentId: string, index: number): string {
  return `${slug(deploymentId)}.v${index}`;
}

/** Replica index of a container (from its label), or undefined. */
export function replicaOf(c: Pick<ContainerDetail, 'labels'>): number | undefined {
  const raw = c.labels[LABELS.replica];
  const n = raw === undefined ? NaN : Number(raw);
  return Number.isInteger(n) && n >= 0 ? n : undefined;
}

/** Is a rollout driven by us still being driven by a live owner? */
function ownerLive(input: RolloutInput): boolean {
  const d = input.deployment;
  if (!d.owner || !input.ownerAlive) return false;
  const beat = (d.heartbeatAt ?? d.startedAt ?? d.updatedAt).getTime();
  return input.now.getTime() - beat <= input.heartbeatTimeoutMs;
}

/** Parses the spec or returns the failure reason naming the field. */
export function specOf(d: RolloutDeployment): Spec | string {
  try {
    return validateSpec(d.spec);
  } catch (err) {
    return err instanceof SpecError ? `invalid spec: ${err.message}` : `invalid spec: ${(err as Error).message}`;
  }
}

/** Decides the next step of one deployment's rollout. */
export function planRollout(input: RolloutInput): RolloutStep {
  const d = input.deployment;
  if (d.executor !== CONTROLLER_EXECUTOR) return { kind: 'none', why: `driven by executor ${d.executor}` };

  if (d.status === 'active') {
    if (d.phase === 'retiring') return retire(input);
    return { kind: 'none', why: 'active' };
  }
  if (d.status !== 'pending' && d.status !== 'deploying') return { kind: 'none', why: d.status };

  // A newer revision already serves (rows inserted out of order, by SQL): this one is moot.
  const newer = input.siblings.find((s) => s.id !== d.id && s.status === 'active' && s.revision > d.revision);
  const othersLive = d.status === 'deploying' && d.owner !== input.me && ownerLive(input);
  if (newer && !othersLive) return { kind: 'supersede', reason: `revision ${newer.revision} (${newer.id}) is already active` };

  if (d.status === 'pending') return { kind: 'claim' };

  // deploying
  if (d.owner !== input.me) {
    if (othersLive) return { kind: 'none', why: `driven by ${d.owner}` };
    if (d.attempts >= input.maxAttempts) {
      return { kind: 'fail', reason: `gave up after ${d.attempts} attempts in phase ${d.phase ?? 'pulling'}` };
    }
    return { kind: 'resume', why: d.owner ? `owner ${d.owner} is gone` : 'no owner' };
  }

  const spec = specOf(d);
  if (typeof spec === 'string') return { kind: 'fail', reason: spec };

  const deadlineMs = parseDuration(spec.rollout.progressDeadline);
  const elapsed = input.now.getTime() - (d.startedAt ?? d.createdAt).getTime();
  if (elapsed > deadlineMs) {
    return { kind: 'fail', reason: `progress deadline ${formatDuration(deadlineMs)} exceeded in phase ${d.phase ?? 'pulling'}` };
  }

  const phase = d.phase ?? 'pulling';
  const mine = input.containers;
  switch (phase) {
    case 'pulling':
      return input.imagePresent ? { kind: 'advance', to: 'creating' } : { kind: 'pull', image: spec.image };
    case 'creating': {
      const missing = missingReplicas(mine, spec.replicas);
      return missing.length > 0 ? { kind: 'create', replicas: missing } : { kind: 'advance', to: 'starting' };
    }
    case 'starting': {
      const missing = missingReplicas(mine, spec.replicas);
      if (missing.length > 0) return { kind: 'create', replicas: missing };
      const died = mine.find((c) => (c.state === 'exited' || c.state === 'dead') && c.startedAt !== null);
      if (died) return { kind: 'fail', reason: exitReason(died) };
      const stopped = mine.filter((c) => c.state === 'created' || c.state === 'exited');
      return stopped.length > 0 ? { kind: 'start', containerIds: stopped.map((c) => c.id) } : { kind: 'advance', to: 'health_check' };
    }
    case 'health_check':
      return health(input, spec);
    case 'activating':
      return { kind: 'activate' };
    case 'retiring':
      return retire(input);
  }
}

/** Replica indexes 0..replicas-1 that have no container. */
export function missingReplicas(containers: readonly Pick<ContainerDetail, 'labels'>[], replicas: number): number[] {
  const have = new Set(containers.map(replicaOf));
  return Array.from({ length: replicas }, (_, i) => i).filter((r) => !have.has(r));
}

function exitReason(c: ContainerDetail): string {
  return `container ${c.name} exited with code ${c.exitCode ?? 'unknown'}`;
}

/** `health_check`: Docker health `healthy`, or running for `minReadySeconds` without a healthcheck. */
function health(input: RolloutInput, spec: Spec): RolloutStep {
  const mine = input.containers;
  if (mine.length < spec.replicas) return { kind: 'fail', reason: `only ${mine.length} of ${spec.replicas} containers exist in phase health_check` };
  let waitMs = 0;
  let ready = 0;
  for (const c of mine) {
    if (c.state === 'exited' || c.state === 'dead') return { kind: 'fail', reason: exitReason(c) };
    if (c.restartCount > 0) return { kind: 'fail', reason: `container ${c.name} restarted ${c.restartCount} time(s) (last exit code ${c.exitCode ?? 'unknown'})` };
    if (c.state !== 'running') {
      waitMs = Math.max(waitMs, 500);
      continue;
    }
    if (c.health === 'unhealthy') return { kind: 'fail', reason: `container ${c.name} is unhealthy` };
    if (spec.healthcheck) {
      if (c.health === 'healthy') ready++;
      else waitMs = Math.max(waitMs, 500);
      continue;
    }
    const upMs = c.startedAt ? input.now.getTime() - c.startedAt.getTime() : 0;
    const needMs = spec.rollout.minReadySeconds * 1000;
    if (upMs >= needMs) ready++;
    else waitMs = Math.max(waitMs, needMs - upMs);
  }
  if (ready === mine.length) return { kind: 'advance', to: 'activating' };
  return { kind: 'wait', ms: Math.min(Math.max(waitMs, 200), 5_000), message: `${ready}/${mine.length} containers ready` };
}

/** `retiring`: older active revisions of the service become superseded; then the rollout is complete. */
function retire(input: RolloutInput): RolloutStep {
  const d = input.deployment;
  const older = input.siblings.filter((s) => s.id !== d.id && s.status === 'active' && s.revision < d.revision);
  return older.length > 0 ? { kind: 'retire', supersede: older } : { kind: 'complete' };
}
