-- +goose Up
-- Every running replica (`rotatord serve`) records the IDs of the master keys
-- it holds (the first 8 bytes of each key's SHA-256, in hex) and the one it
-- seals with, and renews seen_at with a heartbeat; it deletes its row when it
-- stops. `rotatord master-key rotate` re-seals every value under a new key
-- only when every live replica (seen within the last 30 s by the database's
-- clock) holds that key and seals with it. Times are the database's: the
-- rows are written by different machines and compared by another.
CREATE TABLE replicas (
    id          text        PRIMARY KEY,
    host        text        NOT NULL DEFAULT '',
    pid         integer     NOT NULL DEFAULT 0,
    key_ids     text[]      NOT NULL,
    seal_key_id text        NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    seen_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX replicas_seen ON replicas (seen_at);

-- +goose Down
DROP TABLE replicas;
