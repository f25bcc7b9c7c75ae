-- +goose Up
-- An account whose users rotatord may not all know (one it imported) keeps
-- its revocation entries until they expire: folding them into a '*' entry
-- would revoke every JWT issued before rotatord's oldest known credential,
-- including JWTs of users issued elsewhere.
ALTER TABLE accounts ADD COLUMN keep_revocations boolean NOT NULL DEFAULT false;

-- +goose Down
ALTER TABLE accounts DROP COLUMN keep_revocations;
