-- +goose Up
-- The operator is a single row: rotatord serves one operator.
CREATE TABLE operator (
    id             smallint    PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    name           text        NOT NULL,
    public_key     text        NOT NULL UNIQUE,
    seed_enc       bytea       NOT NULL,
    jwt            text        NOT NULL,
    system_account text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Accounts. The identity seed is not kept: account JWTs are signed by the
-- operator's signing key and user JWTs by the account's signing key.
CREATE TABLE accounts (
    id             bigserial   PRIMARY KEY,
    name           text        NOT NULL UNIQUE,
    public_key     text        NOT NULL UNIQUE,
    system         boolean     NOT NULL DEFAULT false,
    description    text        NOT NULL DEFAULT '',
    limits         jsonb       NOT NULL DEFAULT '{}',
    jwt            text        NOT NULL,
    jwt_id         text        NOT NULL,
    -- jwt_version grows by one with every re-signed JWT; pushed_version is the
    -- newest version some nats-server acknowledged. A gap means a push is owed.
    jwt_version    bigint      NOT NULL DEFAULT 1,
    pushed_version bigint      NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX accounts_push_owed ON accounts (id) WHERE pushed_version < jwt_version;

-- Every change of an account's JWT is announced on channel rotatord_accounts
-- (payload: the account public key) when its transaction commits, so every
-- replica's resolver cache follows the database.
-- +goose StatementBegin
CREATE FUNCTION accounts_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('rotatord_accounts', OLD.public_key);
        RETURN OLD;
    END IF;
    IF TG_OP = 'INSERT' OR NEW.jwt IS DISTINCT FROM OLD.jwt THEN
        PERFORM pg_notify('rotatord_accounts', NEW.public_key);
    END IF;
    RETURN NEW;
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER accounts_notify AFTER INSERT OR UPDATE OR DELETE ON accounts
    FOR EACH ROW EXECUTE FUNCTION accounts_notify();

-- Signing keys of the operator and of accounts; seeds encrypted under the master key.
CREATE TABLE signing_keys (
    public_key  text        PRIMARY KEY,
    owner_kind  text        NOT NULL CHECK (owner_kind IN ('operator', 'account')),
    account_id  bigint      REFERENCES accounts (id) ON DELETE CASCADE,
    seed_enc    bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    retired_at  timestamptz,
    CHECK ((owner_kind = 'operator') = (account_id IS NULL))
);
CREATE INDEX signing_keys_account ON signing_keys (account_id) WHERE retired_at IS NULL;

CREATE TABLE agents (
    id               bigserial   PRIMARY KEY,
    account_id       bigint      NOT NULL REFERENCES accounts (id),
    name             text        NOT NULL UNIQUE,
    permissions      jsonb       NOT NULL,
    schedule         text        NOT NULL,
    grace_seconds    integer     NOT NULL CHECK (grace_seconds > 0),
    delivery         text        NOT NULL,
    state            text        NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'revoked')),
    next_rotation_at timestamptz,
    failures         integer     NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agents_account ON agents (account_id);
CREATE INDEX agents_due ON agents (next_rotation_at) WHERE state = 'active';

-- Credentials are user keys with their JWTs. A user seed is kept (encrypted)
-- only until the agent is known to hold it.
CREATE TABLE credentials (
    id           bigserial   PRIMARY KEY,
    agent_id     bigint      NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    public_key   text        NOT NULL UNIQUE,
    jwt          text        NOT NULL,
    jwt_id       text        NOT NULL,
    issued_at    timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    state        text        NOT NULL CHECK (state IN ('pending', 'active', 'retired', 'revoked')),
    seed_enc     bytea,
    revoked_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX credentials_one_active ON credentials (agent_id) WHERE state = 'active';
CREATE UNIQUE INDEX credentials_one_pending ON credentials (agent_id) WHERE state = 'pending';
CREATE INDEX credentials_account_valid ON credentials (agent_id, issued_at) WHERE state IN ('pending', 'active');

-- Revocation entries of account JWTs: a user key (or '*') and the time t at
-- which JWTs issued at or before t stop being accepted. expires_at is when the
-- revoked JWT would have expired anyway: after it the entry can be pruned.
CREATE TABLE revocations (
    account_id  bigint      NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    public_key  text        NOT NULL,
    revoked_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    agent_name  text,
    reason      text        NOT NULL DEFAULT '',
    PRIMARY KEY (account_id, public_key)
);

CREATE TABLE rotations (
    id             uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    agent_id       bigint      NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    state          text        NOT NULL CHECK (state IN ('issued', 'distributed', 'confirmed', 'completed', 'rolled_back')),
    trigger        text        NOT NULL,
    old_public_key text,
    new_public_key text        NOT NULL,
    deadline       timestamptz,
    reason         text        NOT NULL DEFAULT '',
    lease_owner    text,
    lease_until    timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz
);
-- At most one rotation in flight per agent, enforced here rather than in memory.
CREATE UNIQUE INDEX rotations_one_in_flight ON rotations (agent_id) WHERE state IN ('issued', 'distributed', 'confirmed');
CREATE INDEX rotations_agent ON rotations (agent_id, created_at DESC);

-- Append-only audit trail. Never holds a seed, token or creds file.
CREATE TABLE audit_events (
    id          bigserial   PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text        NOT NULL,
    action      text        NOT NULL,
    account     text        NOT NULL DEFAULT '',
    agent       text        NOT NULL DEFAULT '',
    public_key  text        NOT NULL DEFAULT '',
    rotation_id uuid,
    details     jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_agent ON audit_events (agent, id) WHERE agent <> '';
CREATE INDEX audit_events_action ON audit_events (action, id);
CREATE INDEX audit_events_at ON audit_events (at);

-- +goose StatementBegin
CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER audit_events_no_update BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();

-- API tokens: only the SHA-256 of the secret is stored.
CREATE TABLE api_tokens (
    id          bigserial   PRIMARY KEY,
    name        text        NOT NULL UNIQUE,
    hash        bytea       NOT NULL UNIQUE,
    scope       text        NOT NULL CHECK (scope IN ('admin', 'rotate', 'read')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- +goose Down
DROP TABLE api_tokens;
DROP TABLE audit_events;
DROP FUNCTION audit_events_append_only;
DROP TABLE rotations;
DROP TABLE revocations;
DROP TABLE credentials;
DROP TABLE agents;
DROP TABLE signing_keys;
DROP TABLE accounts;
DROP FUNCTION accounts_notify;
DROP TABLE operator;
