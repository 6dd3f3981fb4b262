CREATE TABLE outbox (
    id             bigserial PRIMARY KEY,
    message_id     uuid        NOT NULL,
    message_type   text        NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    exchange       text        NOT NULL,
    routing_key    text        NOT NULL,
    payload        bytea       NOT NULL,
    headers        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    available_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_at   timestamptz,
    attempts       integer     NOT NULL DEFAULT 0,
    last_error     text,
    dead_at        timestamptz
);
-- What the relay claims: small, since published rows leave it.
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL AND dead_at IS NULL;
-- Per-aggregate ordering check for rows held back by a retry delay.
CREATE INDEX outbox_pending_aggregate ON outbox (aggregate_type, aggregate_id, id)
    WHERE published_at IS NULL AND dead_at IS NULL;
CREATE INDEX outbox_dead ON outbox (id) WHERE dead_at IS NOT NULL;
CREATE INDEX outbox_published_at ON outbox (published_at) WHERE published_at IS NOT NULL;
CREATE INDEX outbox_message_id ON outbox (message_id);
