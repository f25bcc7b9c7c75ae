-- +goose Up
-- The nats-servers of the cluster as rotatord learns them: STATSZ heartbeats,
-- PING answers and push replies. Times are rotatord's clock. A server gets a
-- new ID at every start; one not heard from for a long while is forgotten
-- (deleted, with its rows below).
CREATE TABLE nats_servers (
    id          text        PRIMARY KEY,
    name        text        NOT NULL DEFAULT '',
    cluster     text        NOT NULL DEFAULT '',
    first_seen  timestamptz NOT NULL,
    last_seen   timestamptz NOT NULL,
    -- set when the server did not answer a push that waited for it; pushes
    -- stop waiting for it until it is heard from again
    missed_at   timestamptz
);
CREATE INDEX nats_servers_last_seen ON nats_servers (last_seen);

-- Per server and account: the newest version of the account's JWT that the
-- server acknowledged (0 for none), and since when it is known to be behind
-- the stored version (it missed or refused a push, or ACCOUNTZ showed an
-- older JWT). Written only under the account's push lock.
CREATE TABLE server_accounts (
    server_id    text        NOT NULL REFERENCES nats_servers (id) ON DELETE CASCADE,
    account_id   bigint      NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    version      bigint      NOT NULL DEFAULT 0,
    status       text        NOT NULL CHECK (status IN ('updated', 'skipped', 'verified', 'not_loaded', 'failed', 'missed', 'stale')),
    acked_at     timestamptz,
    behind_since timestamptz,
    PRIMARY KEY (server_id, account_id)
);
CREATE INDEX server_accounts_account ON server_accounts (account_id);
CREATE INDEX server_accounts_behind ON server_accounts (behind_since) WHERE behind_since IS NOT NULL;

-- Operator revocations waiting for the last server's acknowledgement of
-- the account JWT version that carries them (rotatord_revocation_propagation_seconds).
CREATE TABLE revocation_waits (
    id           bigserial   PRIMARY KEY,
    account_id   bigint      NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    version      bigint      NOT NULL,
    requested_at timestamptz NOT NULL
);
CREATE INDEX revocation_waits_account ON revocation_waits (account_id, version);

-- A rotation is completed only once the account JWT that revokes its old
-- key is stored and pushed: old_revoked_at is when the revocation entry was
-- recorded (the rotation is confirmed then), resign_version the first
-- account JWT version that carries it.
ALTER TABLE rotations
    ADD COLUMN old_revoked_at timestamptz,
    ADD COLUMN resign_version bigint;
CREATE INDEX rotations_confirmed ON rotations (agent_id) WHERE state = 'confirmed';
-- Every re-sign (an operator revocation too) looks for the rotations whose
-- old key it is the first to revoke: those confirmed since the last one.
CREATE INDEX rotations_awaiting_resign ON rotations (agent_id)
    WHERE state = 'confirmed' AND resign_version IS NULL AND old_revoked_at IS NOT NULL;
-- The scheduler looks for confirmed rotations whose old key was not retired
-- (left so by an older rotatord) every tick: normally none, while thousands
-- may be confirmed and waiting for their push.
CREATE INDEX rotations_confirmed_unretired ON rotations (updated_at) WHERE state = 'confirmed' AND old_revoked_at IS NULL;

-- +goose Down
DROP INDEX rotations_confirmed_unretired;
DROP INDEX rotations_awaiting_resign;
DROP INDEX rotations_confirmed;
ALTER TABLE rotations DROP COLUMN old_revoked_at, DROP COLUMN resign_version;
DROP TABLE revocation_waits;
DROP TABLE server_accounts;
DROP TABLE nats_servers;
