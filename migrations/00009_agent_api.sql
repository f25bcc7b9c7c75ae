-- +goose Up
-- A seed delivered to Vault or a file is not kept: forget the sealed seeds
-- of pending credentials whose rotation was already delivered that way.
UPDATE credentials c SET seed_enc = NULL
FROM rotations r JOIN agents g ON g.id = r.agent_id
WHERE r.new_credential_id = c.id AND c.seed_enc IS NOT NULL
  AND r.state IN ('distributed', 'confirmed') AND g.delivery <> 'poll';

-- An agent starts at most one own-key rotation per interval: the check reads
-- the agent's latest one.
CREATE INDEX rotations_agent_own_key ON rotations (agent_id, created_at DESC) WHERE trigger = 'agent';

-- +goose Down
DROP INDEX rotations_agent_own_key;
