-- The transaction graph for the embedded PostgreSQL graph store (feature_svc.graph.postgres).
-- Every edge links a card to the device, IP or merchant it transacted with, so an edge is stored once,
-- keyed by its card; the second index serves the reverse direction (which cards used this device?).
-- first_seen drives point-in-time traversals: an edge exists as of t only if first_seen < t.
-- last_seen and n summarise all history (they are not point-in-time) and serve monitoring and pruning.

CREATE TABLE IF NOT EXISTS edges (
    card_id     text NOT NULL,
    entity_type text NOT NULL CHECK (entity_type IN ('device', 'ip', 'merchant')),
    entity_id   text NOT NULL,
    first_seen  timestamptz NOT NULL,
    last_seen   timestamptz NOT NULL,
    n           bigint NOT NULL DEFAULT 1 CHECK (n >= 1),
    PRIMARY KEY (card_id, entity_type, entity_id) INCLUDE (first_seen)
);

CREATE INDEX IF NOT EXISTS edges_entity ON edges (entity_type, entity_id, card_id) INCLUDE (first_seen);

-- When each card was first known to be fraudulent (its earliest fraud label). A card counts as
-- fraud-labelled as of t only if first_label_time < t.
CREATE TABLE IF NOT EXISTS card_fraud_labels (
    card_id          text PRIMARY KEY,
    first_label_time timestamptz NOT NULL
);
