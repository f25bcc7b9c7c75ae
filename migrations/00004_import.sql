-- +goose Up
-- `rotatord import` takes over an existing operator. rotatord signs with the
-- operator's signing keys (table signing_keys); the identity seed is kept
-- when the keystore holds it, but an operator can be imported with only a
-- signing key's seed, and then there is no identity seed to keep. Nothing
-- reads this column: it is a backup of the identity, not a signer.
ALTER TABLE operator ALTER COLUMN seed_enc DROP NOT NULL;

-- +goose Down
-- An operator imported without its identity seed cannot go back to the
-- stricter schema; an empty value marks it as absent.
UPDATE operator SET seed_enc = '\x'::bytea WHERE seed_enc IS NULL;
ALTER TABLE operator ALTER COLUMN seed_enc SET NOT NULL;
