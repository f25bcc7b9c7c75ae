-- +goose Up
-- GET /v1/rotations pages through every rotation of the fleet, newest first.
CREATE INDEX rotations_created ON rotations (created_at DESC, id DESC);

-- +goose Down
DROP INDEX rotations_created;
