-- +goose Up
-- GET /v1/agents/{name}/keys pages through an agent's keys, newest first,
-- and deleting an agent cascades to its credentials: both find them by
-- agent here instead of scanning every credential of the fleet.
CREATE INDEX credentials_agent ON credentials (agent_id, issued_at DESC, id DESC);

-- +goose Down
DROP INDEX credentials_agent;
