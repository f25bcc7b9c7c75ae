-- +goose Up
-- A staged signing key is trusted (its owner's JWT lists it) but does not
-- sign yet: the operator's new signing key until every nats-server runs the
-- operator JWT that lists it.
ALTER TABLE signing_keys ADD COLUMN staged boolean NOT NULL DEFAULT false;

-- Rotations of signing keys: the operator's (kind 'operator'); account and
-- role signing keys share this table with kinds of their own. Each state
-- is a committed step that any replica resumes. servers holds, for the
-- operator kind, the nats-servers the rotation knows of (by name) with what
-- each last reported in its VARZ.
CREATE TABLE key_rotations (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    kind        text        NOT NULL CHECK (kind IN ('operator', 'account', 'role')),
    account_id  bigint      REFERENCES accounts (id) ON DELETE CASCADE,
    state       text        NOT NULL,
    old_keys    text[]      NOT NULL DEFAULT '{}',
    new_key     text        NOT NULL,
    actor       text        NOT NULL DEFAULT '',
    servers     jsonb       NOT NULL DEFAULT '[]',
    waiting     text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    step_at     timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    CHECK ((kind = 'operator') = (account_id IS NULL)),
    CHECK (kind <> 'operator' OR state IN ('adding_key', 'resigning', 'removing_key', 'completed')),
    CHECK ((finished_at IS NULL) = (state NOT IN ('completed', 'abandoned')))
);
-- One operator signing-key rotation at a time.
CREATE UNIQUE INDEX key_rotations_one_operator ON key_rotations (kind) WHERE kind = 'operator' AND finished_at IS NULL;
CREATE INDEX key_rotations_in_flight ON key_rotations (created_at) WHERE finished_at IS NULL;

-- A change of the operator JWT is announced like an account's (payload:
-- the operator's public key), so every replica's resolver serves the new
-- one at /jwt/v1/operator.
-- +goose StatementBegin
CREATE FUNCTION operator_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.jwt IS DISTINCT FROM OLD.jwt THEN
        PERFORM pg_notify('rotatord_accounts', NEW.public_key);
    END IF;
    RETURN NEW;
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER operator_notify AFTER UPDATE ON operator FOR EACH ROW EXECUTE FUNCTION operator_notify();

-- +goose Down
DROP TRIGGER operator_notify ON operator;
DROP FUNCTION operator_notify;
DROP TABLE key_rotations;
ALTER TABLE signing_keys DROP COLUMN staged;
