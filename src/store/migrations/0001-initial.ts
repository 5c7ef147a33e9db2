import { sql, type Kysely, type Migration } from 'kysely';

/** The tables of DESIGN.md 3.2, the version-bump trigger and the NOTIFY trigger. */
export const initial: Migration = {
  async up(db: Kysely<unknown>): Promise<void> {
    await sql`
      CREATE TABLE deployments (
        id            text PRIMARY KEY,
        project       text NOT NULL,
        service       text NOT NULL,
        revision      integer NOT NULL CHECK (revision > 0),
        spec          jsonb NOT NULL,
        spec_hash     text NOT NULL,
        status        text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending','deploying','active','failed','cancelled','superseded')),
        phase         text CHECK (phase IN ('pulling','creating','starting','health_check','activating','retiring')),
        progress      jsonb,
        executor      text NOT NULL DEFAULT 'controller',
        owner         text,
        attempts      integer NOT NULL DEFAULT 0,
        heartbeat_at  timestamptz,
        started_at    timestamptz,
        finished_at   timestamptz,
        status_reason text,
        output        text NOT NULL DEFAULT '',
        version       bigint NOT NULL DEFAULT 1,
        created_at    timestamptz NOT NULL DEFAULT now(),
        updated_at    timestamptz NOT NULL DEFAULT now(),
        UNIQUE (project, service, revision)
      )`.execute(db);
    await sql`CREATE INDEX deployments_status_idx ON deployments (status)`.execute(db);

    await sql`
      CREATE TABLE deployment_events (
        id            bigserial PRIMARY KEY,
        deployment_id text NOT NULL,
        at            timestamptz NOT NULL DEFAULT now(),
        type          text NOT NULL CHECK (type IN ('Normal','Warning')),
        reason        text NOT NULL,
        message       text NOT NULL,
        actor         text NOT NULL
      )`.execute(db);
    // No foreign key: events about containers of unknown deployments are kept too.
    await sql`CREATE INDEX deployment_events_deployment_idx ON deployment_events (deployment_id, at)`.execute(db);
    await sql`CREATE INDEX deployment_events_at_idx ON deployment_events (at)`.execute(db);

    await sql`
      CREATE TABLE rollbacks (
        id                 bigserial PRIMARY KEY,
        project            text NOT NULL,
        service            text NOT NULL,
        from_deployment_id text NOT NULL,
        to_deployment_id   text NOT NULL,
        status             text NOT NULL CHECK (status IN ('in_progress','completed','failed')),
        reason             text,
        started_at         timestamptz NOT NULL DEFAULT now(),
        finished_at        timestamptz
      )`.execute(db);
    await sql`CREATE INDEX rollbacks_in_progress_idx ON rollbacks (status) WHERE status = 'in_progress'`.execute(db);

    await sql`
      CREATE TABLE leases (
        name       text PRIMARY KEY,
        holder     text NOT NULL,
        epoch      bigint NOT NULL,
        renewed_at timestamptz NOT NULL,
        expires_at timestamptz NOT NULL
      )`.execute(db);

    // Every write bumps version, whoever makes it (CLI, psql, the platform),
    // so compare-and-set on version always sees concurrent edits.
    await sql`
      CREATE FUNCTION deployer_deployments_touch() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        NEW.version := OLD.version + 1;
        NEW.updated_at := now();
        RETURN NEW;
      END $$`.execute(db);
    await sql`
      CREATE TRIGGER deployments_touch BEFORE UPDATE ON deployments
      FOR EACH ROW EXECUTE FUNCTION deployer_deployments_touch()`.execute(db);

    await sql`
      CREATE FUNCTION deployer_deployments_notify() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        PERFORM pg_notify('deployer_deployments',
          json_build_object('id', NEW.id, 'status', NEW.status, 'version', NEW.version)::text);
        RETURN NULL;
      END $$`.execute(db);
    await sql`
      CREATE TRIGGER deployments_notify AFTER INSERT OR UPDATE ON deployments
      FOR EACH ROW EXECUTE FUNCTION deployer_deployments_notify()`.execute(db);
  },

  async down(db: Kysely<unknown>): Promise<void> {
    await sql`DROP TABLE IF EXISTS leases, rollbacks, deployment_events, deployments`.execute(db);
    await sql`DROP FUNCTION IF EXISTS deployer_deployments_notify(), deployer_deployments_touch()`.execute(db);
  },
};
