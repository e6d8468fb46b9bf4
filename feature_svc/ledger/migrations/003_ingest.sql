-- Live ingestion (FRAUD_TXNS): a transaction scored live keeps the score and model version it got, and every row
-- says where it came from ('world' for a loaded simulation, 'score', 'api' or 'nats' for ingested ones).
ALTER TABLE transactions ADD COLUMN IF NOT EXISTS fraud_score double precision;
ALTER TABLE transactions ADD COLUMN IF NOT EXISTS model_version text NOT NULL DEFAULT '';
ALTER TABLE transactions ADD COLUMN IF NOT EXISTS source text NOT NULL DEFAULT 'world';

-- Labels that arrived before their transaction: parked here, applied when the transaction is ingested.
CREATE TABLE IF NOT EXISTS pending_labels (
    transaction_id text PRIMARY KEY,
    is_fraud       boolean NOT NULL,
    fraud_kind     text NOT NULL DEFAULT '',
    label_time     timestamptz NOT NULL,
    received_at    timestamptz NOT NULL DEFAULT now()
);
