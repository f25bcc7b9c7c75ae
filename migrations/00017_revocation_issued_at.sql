-- +goose Up
-- Every revocation entry records the iat of the JWT it revokes, so that
-- every kind of entry (rotations, rollbacks, operator revocations, deletes,
-- imports) can be folded into the '*' entry once no credential in use is
-- that old. Operator revocations and deletes used to leave it empty, so
-- they were never folded.
--
-- Rows without it get the iat of the credential they revoke when rotatord
-- still has it (rotatord issued that key's only JWT). Otherwise, and for
-- entries imported from an account JWT (the key may have JWTs rotatord
-- never saw), they get their own revocation time: an entry at t refuses
-- the key's JWTs issued at or before t, and a '*' entry at or after t
-- refuses all of those, so folding on it can never let a revoked JWT back
-- in.
UPDATE revocations r SET jwt_issued_at = c.issued_at
FROM credentials c JOIN agents g ON g.id = c.agent_id
WHERE r.jwt_issued_at IS NULL AND r.public_key <> '*' AND r.reason <> 'imported'
  AND c.public_key = r.public_key AND g.account_id = r.account_id AND c.issued_at <= r.revoked_at;
UPDATE revocations SET jwt_issued_at = revoked_at WHERE jwt_issued_at IS NULL;
ALTER TABLE revocations ALTER COLUMN jwt_issued_at SET NOT NULL;

-- The oldest credential still in use bounds folding; it is looked up at
-- every re-sign, walking valid credentials from the oldest.
CREATE INDEX credentials_valid_issued ON credentials (issued_at) WHERE state IN ('pending', 'active');

-- +goose Down
DROP INDEX credentials_valid_issued;
ALTER TABLE revocations ALTER COLUMN jwt_issued_at DROP NOT NULL;
