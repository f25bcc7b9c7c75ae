-- +goose Up
-- rotatord_credentials_expiring counts the active credentials that expire
-- within the hour; the metrics reader asks every 15 s.
CREATE INDEX credentials_active_expires ON credentials (expires_at) WHERE state = 'active';

-- +goose Down
DROP INDEX credentials_active_expires;
