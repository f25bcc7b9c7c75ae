-- +goose Up
-- An account whose users rotatord may not all know (one it imported) keeps
-- its revocation entries until they expire: folding them into a '*' entry
-- would revoke every JWT issued before rotatord's oldest known credential,
-- including JWTs of users issued elsewhere.
ALTER TABLE accounts ADD COLUMN keep_revocations boolean NOT NULL DEFAULT false;
-- The account claims of an imported JWT (its "nats" object): what rotatord
-- does not model (imports, exports, JetStream limits, mappings...) is kept
-- from it whenever rotatord re-signs the account.
ALTER TABLE accounts ADD COLUMN base_claims jsonb;

-- +goose Down
ALTER TABLE accounts DROP COLUMN base_claims;
ALTER TABLE accounts DROP COLUMN keep_revocations;
