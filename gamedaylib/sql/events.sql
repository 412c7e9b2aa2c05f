-- The lab's events table (DESIGN.md "Lab HTTP ingest and table", ARCHITECTURE.md "Table").
-- Applied by the lab supervisor through gamedaylib.lab.knobs.events_ddl(knobs), which keeps the
-- UNIQUE index below when lab_idempotency is true and makes it a plain index otherwise
-- (the staged "no idempotency" flaw). Idempotent: safe to apply twice.
CREATE TABLE IF NOT EXISTS events (
    id              bigserial PRIMARY KEY,
    idempotency_key text        NOT NULL,
    type            text        NOT NULL,
    payload         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    occurred_at     timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX IF NOT EXISTS events_idempotency_key_idx ON events (idempotency_key);
CREATE INDEX IF NOT EXISTS events_created_at_idx ON events (created_at);
CREATE INDEX IF NOT EXISTS events_type_created_at_idx ON events (type, created_at);
