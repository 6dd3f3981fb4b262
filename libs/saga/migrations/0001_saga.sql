CREATE TABLE saga_instance (
    saga        text        NOT NULL,
    id          text        NOT NULL,
    status      text        NOT NULL,
    step        text,
    attempt     integer     NOT NULL DEFAULT 0,
    state       jsonb       NOT NULL,
    version     integer     NOT NULL,
    deadline_at timestamptz,
    traceparent text,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (saga, id)
);
CREATE INDEX saga_instance_due ON saga_instance (deadline_at) WHERE deadline_at IS NOT NULL;
CREATE INDEX saga_instance_status ON saga_instance (status, updated_at);

CREATE TABLE saga_log (
    id        bigserial   PRIMARY KEY,
    saga      text        NOT NULL,
    saga_id   text        NOT NULL,
    at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    event     text        NOT NULL,
    step      text,
    status    text        NOT NULL,
    detail    jsonb       NOT NULL DEFAULT '{}'::jsonb,
    trace_id  text
);
CREATE INDEX saga_log_instance ON saga_log (saga, saga_id, id);
