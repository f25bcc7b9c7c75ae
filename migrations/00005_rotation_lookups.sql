-- +goose Up
-- Connect events and CONNZ replies look up rotations waiting for a key: without
-- this index each lookup scanned every rotation ever made.
CREATE INDEX rotations_pending_key ON rotations (new_public_key) WHERE state IN ('issued', 'distributed');

-- +goose Down
DROP INDEX rotations_pending_key;
