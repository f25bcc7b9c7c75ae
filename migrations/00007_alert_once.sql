-- +goose Up
-- Alerts raised at most once per key and window across replicas: every
-- replica watches every auth failure, and the first to claim a key's
-- window writes the alert.
CREATE TABLE alert_windows (
    kind    text        NOT NULL,
    key     text        NOT NULL,
    until   timestamptz NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX alert_windows_until ON alert_windows (until);

-- +goose Down
DROP TABLE alert_windows;
