-- The personalization clickstream's event log (stream FRAUD_CLICKS, shared/click_messages.py): one row per event,
-- idempotent on event_id (a redelivered or re-published event never counts twice). The user, item and session
-- features of the entities a batch touched are recomputed from it (feature_svc/ingest/clicks.py), so each
-- lookup below reads one entity's events.
CREATE TABLE IF NOT EXISTS click_events (
    event_id      text PRIMARY KEY,
    user_id       text NOT NULL,
    item_id       text NOT NULL,
    session_id    text NOT NULL,
    event_type    smallint NOT NULL,          -- 0 view, 1 add_to_cart, 2 purchase
    event_time    timestamptz NOT NULL,
    item_category smallint NOT NULL,          -- index into the personalization world's CATEGORIES
    item_price    double precision NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS click_events_user ON click_events (user_id, event_time);
CREATE INDEX IF NOT EXISTS click_events_item ON click_events (item_id, event_time);
CREATE INDEX IF NOT EXISTS click_events_session ON click_events (session_id, event_time);
