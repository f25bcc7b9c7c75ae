-- +goose Up
-- Hash chain over the audit trail (package internal/auditchain describes the
-- hashing). Link seq seals one event: hash = SHA-256(prev_hash || encoding
-- of the event). Links are appended by the sealer in batches, in seal order,
-- so an event whose transaction commits late is sealed in a later batch.
-- sealed_at is informational: it is not covered by the hash. event_id has no
-- foreign key on purpose: it would make TRUNCATE audit_events fail on the key
-- instead of the append-only trigger, and verification reports a link whose
-- event is gone anyway.
CREATE TABLE audit_chain (
    seq        bigint      PRIMARY KEY CHECK (seq > 0),
    event_id   bigint      NOT NULL UNIQUE,
    prev_hash  bytea       NOT NULL CHECK (length(prev_hash) = 32),
    hash       bytea       NOT NULL CHECK (length(hash) = 32),
    sealed_at  timestamptz NOT NULL DEFAULT now()
);

-- +goose StatementBegin
CREATE FUNCTION audit_chain_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_chain is append-only';
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER audit_chain_no_update BEFORE UPDATE OR DELETE ON audit_chain
    FOR EACH ROW EXECUTE FUNCTION audit_chain_append_only();
CREATE TRIGGER audit_chain_no_truncate BEFORE TRUNCATE ON audit_chain
    FOR EACH STATEMENT EXECUTE FUNCTION audit_chain_append_only();

-- Events waiting to be sealed. A trigger queues every new event in the
-- writer's own transaction: one row per event, so concurrent writers never
-- wait on each other, and the queue row becomes visible exactly when the
-- event does. The sealer takes rows off the queue in the transaction that
-- appends their links, so every event is sealed once, whatever order
-- transactions commit in, and finding pending events costs the batch, not
-- a scan of the whole trail. A queued event that is gone stays queued, and
-- verification reports it as deleted.
CREATE TABLE audit_unsealed (
    event_id   bigint      PRIMARY KEY
);

-- +goose StatementBegin
CREATE FUNCTION audit_events_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO audit_unsealed (event_id) VALUES (NEW.id);
    RETURN NULL;
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER audit_events_enqueue AFTER INSERT ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_enqueue();

-- Events written before this migration are sealed first.
INSERT INTO audit_unsealed (event_id) SELECT id FROM audit_events;

-- +goose Down
DROP TRIGGER audit_events_enqueue ON audit_events;
DROP FUNCTION audit_events_enqueue;
DROP TABLE audit_unsealed;
DROP TABLE audit_chain;
DROP FUNCTION audit_chain_append_only;
