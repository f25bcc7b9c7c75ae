-- +goose Up
-- Fleet-wide rotations in waves: POST /v1/accounts/{name}/rotate-all, and
-- the re-issue of every agent during a signing-key rotation. waves are
-- cumulative percents of the agents (the first is the canary); wave is the
-- current one (1-based, 0 before the first starts); wave_log records when
-- each wave started and ended (by the database's clock, which alerts use
-- too) and what it counted. replacing lists the signing keys being
-- replaced: an agent whose credentials no longer depend on them is done.
-- At most one fleet operation per account is running or halted, enforced
-- here rather than in memory.
CREATE TABLE fleet_rotations (
    id                   uuid             PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id           bigint           NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    role_id              bigint           REFERENCES roles (id) ON DELETE SET NULL,
    waves                integer[]        NOT NULL CHECK (cardinality(waves) > 0),
    halt_on_failure_rate double precision NOT NULL CHECK (halt_on_failure_rate >= 0 AND halt_on_failure_rate <= 1),
    state                text             NOT NULL CHECK (state IN ('running', 'halted', 'completed', 'aborted')),
    wave                 integer          NOT NULL DEFAULT 0,
    wave_log             jsonb            NOT NULL DEFAULT '[]',
    replacing            text[]           NOT NULL DEFAULT '{}',
    key_rotation_id      uuid,
    trigger              text             NOT NULL,
    actor                text             NOT NULL DEFAULT '',
    reason               text             NOT NULL DEFAULT '',
    created_at           timestamptz      NOT NULL DEFAULT now(),
    updated_at           timestamptz      NOT NULL DEFAULT now(),
    finished_at          timestamptz
);
CREATE UNIQUE INDEX fleet_rotations_one_per_account ON fleet_rotations (account_id) WHERE state IN ('running', 'halted');
CREATE INDEX fleet_rotations_running ON fleet_rotations (updated_at) WHERE state = 'running';
CREATE INDEX fleet_rotations_account ON fleet_rotations (account_id, created_at DESC, id DESC);

-- The agents of a fleet rotation, each in one wave: waiting until its wave
-- starts (or while a rotation it cannot adopt is in flight), rotating once
-- its rotation started (the rotation's state says how it ended), or
-- skipped (revoked, or no longer on a replaced key).
CREATE TABLE fleet_rotation_agents (
    fleet_id     uuid     NOT NULL REFERENCES fleet_rotations (id) ON DELETE CASCADE,
    agent_id     bigint   NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    wave         integer  NOT NULL CHECK (wave > 0),
    state        text     NOT NULL CHECK (state IN ('waiting', 'rotating', 'skipped')),
    rotation_id  uuid     REFERENCES rotations (id) ON DELETE SET NULL,
    reason       text     NOT NULL DEFAULT '',
    PRIMARY KEY (fleet_id, agent_id)
);
CREATE INDEX fleet_rotation_agents_wave ON fleet_rotation_agents (fleet_id, wave, state, agent_id);
CREATE INDEX fleet_rotation_agents_agent ON fleet_rotation_agents (agent_id);

-- Rotations of accounts' and roles' signing keys share key_rotations with
-- the operator's (kinds account and role). A staged rotation adds new_key
-- to the account JWT as a staged signing key (trusted, signing nothing)
-- (state adding), makes it the signing key once the servers acknowledged
-- that JWT and re-issues every agent through a fleet rotation (reissuing),
-- waits for stragglers (waiting), and removes the old keys (removing,
-- until that JWT is acknowledged). An emergency rotation removes them at
-- once. At most one per account is in flight.
ALTER TABLE key_rotations
    ADD COLUMN role_id           bigint REFERENCES roles (id) ON DELETE CASCADE,
    ADD COLUMN mode              text   NOT NULL DEFAULT 'staged' CHECK (mode IN ('staged', 'emergency')),
    ADD COLUMN trigger           text   NOT NULL DEFAULT 'manual',
    ADD COLUMN added_version     bigint NOT NULL DEFAULT 0,
    ADD COLUMN removed_version   bigint NOT NULL DEFAULT 0,
    ADD COLUMN removed_at        timestamptz,
    ADD COLUMN stragglers        integer NOT NULL DEFAULT 0,
    ADD COLUMN fleet_rotation_id uuid REFERENCES fleet_rotations (id) ON DELETE SET NULL,
    ADD COLUMN reason            text   NOT NULL DEFAULT '',
    ADD CONSTRAINT key_rotations_role_check CHECK ((kind = 'role') = (role_id IS NOT NULL)),
    ADD CONSTRAINT key_rotations_account_state_check CHECK (kind = 'operator' OR
        state IN ('adding', 'reissuing', 'waiting', 'removing', 'completed', 'abandoned'));
CREATE UNIQUE INDEX key_rotations_one_per_account ON key_rotations (account_id)
    WHERE finished_at IS NULL AND account_id IS NOT NULL;
CREATE INDEX key_rotations_account ON key_rotations (account_id, created_at DESC, id DESC) WHERE account_id IS NOT NULL;
ALTER TABLE fleet_rotations ADD CONSTRAINT fleet_rotations_key_rotation_fkey
    FOREIGN KEY (key_rotation_id) REFERENCES key_rotations (id) ON DELETE SET NULL;

-- Scheduled staged rotations of an account's signing key (off unless set).
CREATE TABLE account_key_schedules (
    account_id  bigint      PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    schedule    text        NOT NULL,
    next_at     timestamptz NOT NULL
);
CREATE INDEX account_key_schedules_due ON account_key_schedules (next_at);

-- A wave counts the auth-failure alerts of its agents since it started.
CREATE INDEX alerts_agent_created ON alerts (agent, created_at) WHERE agent <> '';

-- +goose Down
DROP INDEX alerts_agent_created;
DROP TABLE account_key_schedules;
ALTER TABLE fleet_rotations DROP CONSTRAINT fleet_rotations_key_rotation_fkey;
DELETE FROM key_rotations WHERE kind <> 'operator';
DROP INDEX key_rotations_account;
DROP INDEX key_rotations_one_per_account;
ALTER TABLE key_rotations DROP CONSTRAINT key_rotations_account_state_check, DROP CONSTRAINT key_rotations_role_check,
    DROP COLUMN reason, DROP COLUMN fleet_rotation_id, DROP COLUMN stragglers, DROP COLUMN removed_at,
    DROP COLUMN removed_version, DROP COLUMN added_version, DROP COLUMN trigger, DROP COLUMN mode, DROP COLUMN role_id;
DROP TABLE fleet_rotation_agents;
DROP TABLE fleet_rotations;
