-- +goose Up
-- API tokens can expire and be listed: when each was made and by whom, when
-- it stops working, and when it last authenticated a request (written at
-- most once a minute per token, never once per request).
ALTER TABLE api_tokens
    ADD COLUMN created_by   text        NOT NULL DEFAULT '',
    ADD COLUMN expires_at   timestamptz,
    ADD COLUMN last_used_at timestamptz;

-- +goose Down
ALTER TABLE api_tokens
    DROP COLUMN last_used_at,
    DROP COLUMN expires_at,
    DROP COLUMN created_by;
