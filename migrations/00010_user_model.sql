-- +goose Up
-- Roles: scoped signing keys of an account. A role's agents get user JWTs
-- signed by its key that carry no permissions; nats-server applies the
-- role's template, which the account JWT holds.
CREATE TABLE roles (
    id          bigserial   PRIMARY KEY,
    account_id  bigint      NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name        text        NOT NULL,
    description text        NOT NULL DEFAULT '',
    template    jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT roles_account_name_key UNIQUE (account_id, name)
);

-- A role's keys are signing keys of its account, owned by the role. The
-- newest live one signs new credentials; replacing it is adding a key and
-- retiring the old one once no valid credential is signed by it.
ALTER TABLE signing_keys ADD COLUMN role_id bigint REFERENCES roles (id) ON DELETE CASCADE;
ALTER TABLE signing_keys DROP CONSTRAINT signing_keys_owner_kind_check;
ALTER TABLE signing_keys ADD CONSTRAINT signing_keys_owner_kind_check CHECK (owner_kind IN ('operator', 'account', 'role'));
ALTER TABLE signing_keys ADD CONSTRAINT signing_keys_role_check CHECK ((owner_kind = 'role') = (role_id IS NOT NULL));
CREATE INDEX signing_keys_role ON signing_keys (role_id, created_at) WHERE retired_at IS NULL;

-- The rest of an agent's user claims (limits, src, times, times_location,
-- connection_types, tags); permissions keep their column. role_id, when
-- set, is the agent's role: a role in use cannot be deleted.
ALTER TABLE agents
    ADD COLUMN claims  jsonb  NOT NULL DEFAULT '{"limits": {"subs": -1, "data": -1, "payload": -1}}',
    ADD COLUMN role_id bigint REFERENCES roles (id);
CREATE INDEX agents_role ON agents (role_id) WHERE role_id IS NOT NULL;

-- Which key signed each credential (the JWT's issuer), so that replacing a
-- signing key knows whose credentials still depend on the old one.
ALTER TABLE credentials ADD COLUMN signing_key text;
UPDATE credentials SET signing_key = convert_from(decode(
        rpad(translate(split_part(jwt, '.', 2), '-_', '+/'), (length(split_part(jwt, '.', 2)) + 3) / 4 * 4, '='),
        'base64'), 'UTF8')::jsonb ->> 'iss';
CREATE INDEX credentials_signing_key ON credentials (signing_key) WHERE state IN ('pending', 'active');

-- +goose Down
DROP INDEX credentials_signing_key;
ALTER TABLE credentials DROP COLUMN signing_key;
DROP INDEX agents_role;
ALTER TABLE agents DROP COLUMN role_id, DROP COLUMN claims;
DELETE FROM signing_keys WHERE owner_kind = 'role';
DROP INDEX signing_keys_role;
ALTER TABLE signing_keys DROP CONSTRAINT signing_keys_role_check;
ALTER TABLE signing_keys DROP CONSTRAINT signing_keys_owner_kind_check;
ALTER TABLE signing_keys ADD CONSTRAINT signing_keys_owner_kind_check CHECK (owner_kind IN ('operator', 'account'));
ALTER TABLE signing_keys DROP COLUMN role_id;
DROP TABLE roles;
