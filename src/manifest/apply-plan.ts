import { CONTROLLER_EXECUTOR, type DeploymentStatus } from '../types.js';
import { serviceKey, type ServiceManifest } from './manifest.js';
import { checkSpec, specHash } from './spec.js';

/**
 * What `apply`, `diff` and `delete` would do, as a pure function of the
 * manifests and the stored revisions (DESIGN.md principle 3: plan, then
 * apply). `--dry-run` and `diff` print this plan; `apply` executes it.
 */

/** Statuses of a revision that is still wanted: the ones apply compares with and prune cancels. */
export const LIVE_STATUSES = ['pending', 'deploying', 'active'] as const satisfies readonly DeploymentStatus[];
export type LiveStatus = (typeof LIVE_STATUSES)[number];

/** A stored revision that is not terminal yet. */
export interface LiveRevision {
  id: string;
  project: string;
  service: string;
  revision: number;
  status: LiveStatus;
  executor: string;
  specHash: string;
  /** The `spec` column as stored (a platform may have written it with plain SQL). */
  spec: unknown;
  version: number;
}

/** What is stored for one service. */
export interface StoredService {
  /** Its live revisions, newest first. */
  live: LiveRevision[];
  /** Its highest revision number, terminal ones included (0 when it has none). */
  maxRevision: number;
}

/** The stored state of the services concerned, by `project/service`. */
export type StoredState = ReadonlyMap<string, StoredService>;

/** The id of a revision made by deployerctl: unique because names are DNS labels without dots. */
export function revisionId(project: string, service: string, revision: number): string {
  return `${project}.${service}.r${revision}`;
}

/** A new revision to insert as `pending`. */
export interface CreateStep {
  manifest: ServiceManifest;
  revision: number;
  id: string;
  /** The newest live revision it differs from; undefined for a new service (or one with only terminal revisions). */
  current: LiveRevision | undefined;
  /**
   * Older controller-driven revisions still pending or deploying: cancelled,
   * so that only the newest desired spec rolls out (as a Kubernetes
   * Deployment abandons an unfinished rollout for a newer one). The active
   * revision is not touched: it keeps serving until the new one replaces it.
   */
  replaces: LiveRevision[];
}

export interface UnchangedStep {
  manifest: ServiceManifest;
  current: LiveRevision;
}

/** A service whose live revisions are cancelled (pruned or deleted). */
export interface CancelStep {
  project: string;
  service: string;
  cancel: LiveRevision[];
}

export interface ApplyPlan {
  created: CreateStep[];
  unchanged: UnchangedStep[];
  pruned: CancelStep[];
}

export interface DeletePlan {
  deleted: CancelStep[];
  /** Named services with no live revision. */
  notFound: ServiceManifest[];
}

/**
 * Whether a stored revision already has the manifest's spec. The stored hash
 * decides when it matches; otherwise the stored spec is validated and hashed
 * again, so a row a platform inserted with another hash form (or without the
 * defaults) still counts as the same spec.
 */
export function sameSpec(current: LiveRevision, manifest: ServiceManifest): boolean {
  if (current.specHash === manifest.specHash) return true;
  const checked = checkSpec(current.spec);
  return checked.ok && specHash(checked.spec) === manifest.specHash;
}

/**
 * Plans an apply: each service's spec is compared with its newest live
 * revision; unchanged means nothing is written, changed (or new) means the
 * next revision. With `prune`, live services of the manifests' projects that
 * the manifests no longer name are cancelled. Projects the manifests do not
 * mention are never touched, so a prune can never empty the whole store.
 */
export function planApply(manifests: readonly ServiceManifest[], stored: StoredState, options: { prune: boolean }): ApplyPlan {
  const plan: ApplyPlan = { created: [], unchanged: [], pruned: [] };
  const named = new Set<string>();
  for (const manifest of manifests) {
    const key = serviceKey(manifest.project, manifest.name);
    named.add(key);
    const record = stored.get(key);
    const current = record?.live[0];
    if (current && sameSpec(current, manifest)) {
      plan.unchanged.push({ manifest, current });
      continue;
    }
    const revision = (record?.maxRevision ?? 0) + 1;
    const replaces = (record?.live ?? []).filter((r) => r.status !== 'active' && r.executor === CONTROLLER_EXECUTOR);
    plan.created.push({ manifest, revision, id: revisionId(manifest.project, manifest.name, revision), current, replaces });
  }
  if (options.prune) {
    const projects = new Set(manifests.map((m) => m.project));
    for (const [key, record] of [...stored].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      const first = record.live[0];
      if (!first || named.has(key) || !projects.has(first.project)) continue;
      plan.pruned.push({ project: first.project, service: first.service, cancel: record.live });
    }
  }
  return plan;
}

/** Plans a delete: every live revision of each named service is cancelled. */
export function planDelete(manifests: readonly ServiceManifest[], stored: StoredState): DeletePlan {
  const plan: DeletePlan = { deleted: [], notFound: [] };
  for (const manifest of manifests) {
    const record = stored.get(serviceKey(manifest.project, manifest.name));
    if (!record || record.live.length === 0) plan.notFound.push(manifest);
    else plan.deleted.push({ project: manifest.project, service: manifest.name, cancel: record.live });
  }
  return plan;
}

/** True when executing the plan would write something. */
export function planWrites(plan: ApplyPlan): boolean {
  return plan.created.length > 0 || plan.pruned.length > 0;
}
