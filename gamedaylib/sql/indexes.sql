-- The indexes every runbook query on the events table relies on (gamedaylib/probes/events.py).
-- Pre-flight (EventsStore.check_indexes) compares the target's indexes with these and names the
-- statements below that are missing. Any index whose leading columns match serves, unique or not
-- (the lab makes the idempotency_key index UNIQUE when lab_idempotency is on; see events.sql).
--
-- CONCURRENTLY builds without blocking writers on a live system; it cannot run inside a
-- transaction block, so apply one statement at a time (psql runs each line in autocommit):
--   psql "$GAMEDAY_EVENTS_DSN" -f gamedaylib/sql/indexes.sql
-- A build that fails leaves an INVALID index behind: drop it and run the statement again.
--
-- What uses which index:
--   events_idempotency_key_idx   canary / ground-truth lookup and loss-duplicate accounting (join)
--   events_created_at_idx        pre-chaos counts, events per minute, duplicate scan over the window,
--                                min/max created_at
--   events_type_created_at_idx   critical event types since T-x (index-only scan per type)
CREATE INDEX CONCURRENTLY IF NOT EXISTS events_idempotency_key_idx ON events (idempotency_key);
CREATE INDEX CONCURRENTLY IF NOT EXISTS events_created_at_idx ON events (created_at);
CREATE INDEX CONCURRENTLY IF NOT EXISTS events_type_created_at_idx ON events (type, created_at);
