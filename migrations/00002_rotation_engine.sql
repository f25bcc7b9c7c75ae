-- +goose Up
-- The iat of the revoked JWT: entries whose JWT was issued before every
-- credential still valid in the account can be folded into one '*' entry.
ALTER TABLE revocations ADD COLUMN jwt_issued_at timestamptz;

-- Requests to re-sign an account's JWT (revocations were recorded). It is
-- append-only, so concurrent completions never wait on each other; the
-- re-signer takes all requests of an account at once.
CREATE TABLE account_resign (
    id          bigserial   PRIMARY KEY,
    account_id  bigint      NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    wanted_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX account_resign_account ON account_resign (account_id);

ALTER TABLE rotations
    ADD COLUMN old_credential_id bigint REFERENCES credentials (id) ON DELETE SET NULL,
    ADD COLUMN new_credential_id bigint REFERENCES credentials (id) ON DELETE SET NULL,
    ADD COLUMN distributed_at    timestamptz,
    ADD COLUMN confirmed_at      timestamptz,
    ADD COLUMN confirmed_by      text NOT NULL DEFAULT '',
    ADD COLUMN delivery_ref      text NOT NULL DEFAULT '';
CREATE INDEX rotations_in_flight ON rotations (state, deadline) WHERE state IN ('issued', 'distributed', 'confirmed');
CREATE INDEX credentials_pending_key ON credentials (public_key) WHERE state = 'pending';

-- Proofs of possession already used, so that a replayed request is refused.
CREATE TABLE proof_replays (
    signature   bytea       PRIMARY KEY,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX proof_replays_expires ON proof_replays (expires_at);

-- Alert outbox: written in the transaction that raises the alert, delivered
-- to each channel by any replica until it succeeds.
CREATE TABLE alerts (
    id               bigserial   PRIMARY KEY,
    kind             text        NOT NULL,
    severity         text        NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    account          text        NOT NULL DEFAULT '',
    agent            text        NOT NULL DEFAULT '',
    rotation_id      uuid,
    reason           text        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    logged_at        timestamptz,
    webhook_done_at  timestamptz,
    nats_done_at     timestamptz,
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text        NOT NULL DEFAULT ''
);
CREATE INDEX alerts_pending ON alerts (next_attempt_at) WHERE webhook_done_at IS NULL OR nats_done_at IS NULL OR logged_at IS NULL;

-- +goose Down
DROP TABLE alerts;
DROP TABLE proof_replays;
DROP INDEX credentials_pending_key;
DROP INDEX rotations_in_flight;
ALTER TABLE rotations DROP COLUMN old_credential_id, DROP COLUMN new_credential_id, DROP COLUMN distributed_at,
    DROP COLUMN confirmed_at, DROP COLUMN confirmed_by, DROP COLUMN delivery_ref;
DROP TABLE account_resign;
ALTER TABLE revocations DROP COLUMN jwt_issued_at;
