-- +goose Up
-- The account claims rotatord models beyond its limits: JetStream, exports,
-- imports, default permissions, mappings, info URL and tags, as
-- rotatord.AccountClaims encodes them. NULL only for an account imported
-- before rotatord modeled them: they are still in base_claims (a JWT's
-- "nats" object), rotatord reads them from there, and stores them here
-- the next time it signs the account.
ALTER TABLE accounts ADD COLUMN claims jsonb;
UPDATE accounts SET claims = '{}' WHERE base_claims IS NULL;

-- The new limits (imports, exports, wildcards, leaf, disallow_bearer).
-- rotatord signed its own accounts with nsc's defaults for them; imported
-- accounts had them in base_claims, where an absent one is 0 or false.
UPDATE accounts SET limits = '{"imports": -1, "exports": -1, "wildcards": true, "leaf": -1, "disallow_bearer": false}'::jsonb || limits
WHERE base_claims IS NULL;
UPDATE accounts SET limits = jsonb_build_object(
        'imports', coalesce(base_claims -> 'limits' -> 'imports', '0'::jsonb),
        'exports', coalesce(base_claims -> 'limits' -> 'exports', '0'::jsonb),
        'wildcards', coalesce(base_claims -> 'limits' -> 'wildcards', 'false'::jsonb),
        'leaf', coalesce(base_claims -> 'limits' -> 'leaf', '0'::jsonb),
        'disallow_bearer', coalesce(base_claims -> 'limits' -> 'disallow_bearer', 'false'::jsonb)) || limits
WHERE base_claims IS NOT NULL;

-- Finding the accounts that import from an account (to re-sign them when
-- its exports change, and to refuse deleting it).
CREATE INDEX accounts_imports ON accounts USING gin ((claims -> 'imports') jsonb_path_ops);

-- Activation tokens rotatord minted for imports between its own accounts:
-- the exporting account's signing key lets the importing account import
-- subject. The token is in the importer's JWT; it is renewed (the importer
-- re-signed) before expires_at. The foreign keys are checked at commit:
-- an account's tokens are minted while its JWT is signed, before its row
-- is written.
CREATE TABLE activations (
    importer_key text        NOT NULL REFERENCES accounts (public_key) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    exporter_key text        NOT NULL REFERENCES accounts (public_key) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    subject      text        NOT NULL,
    kind         text        NOT NULL CHECK (kind IN ('stream', 'service')),
    token        text        NOT NULL,
    signer       text        NOT NULL,
    expires_at   timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (importer_key, exporter_key, subject, kind)
);
CREATE INDEX activations_expiry ON activations (expires_at);
CREATE INDEX activations_exporter ON activations (exporter_key);

-- +goose Down
DROP TABLE activations;
DROP INDEX accounts_imports;
UPDATE accounts SET limits = limits - 'imports' - 'exports' - 'wildcards' - 'leaf' - 'disallow_bearer';
ALTER TABLE accounts DROP COLUMN claims;
