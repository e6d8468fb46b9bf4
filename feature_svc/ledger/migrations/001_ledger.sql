-- The ledger: what happened (transactions), what we learned later (labels) and the entities involved.
-- No foreign keys on purpose: live ingestion sees new cards, devices and IPs before any entity row exists,
-- and a transaction must never be rejected for that. Entity tables are reference data, not gatekeepers.

CREATE TABLE IF NOT EXISTS cards (
    card_id          text PRIMARY KEY,
    customer_id      text,
    home_country     char(2),
    currency         char(3),
    typical_amount   double precision,
    home_ip          text,
    usual_device_ids text[] NOT NULL DEFAULT '{}'
);

CREATE TABLE IF NOT EXISTS merchants (
    merchant_id  text PRIMARY KEY,
    mcc_code     char(4),
    country_code char(2)
);

CREATE TABLE IF NOT EXISTS devices (
    device_id   text PRIMARY KEY,
    device_type text
);

CREATE TABLE IF NOT EXISTS ips (
    ip_address   text PRIMARY KEY,
    country_code char(2)
);

CREATE TABLE IF NOT EXISTS transactions (
    transaction_id text PRIMARY KEY,
    "timestamp"    timestamptz NOT NULL,
    card_id        text NOT NULL,
    merchant_id    text,
    device_id      text,
    ip_address     text,
    amount         double precision NOT NULL CHECK (amount >= 0),
    currency       char(3),
    country_code   char(2),
    mcc_code       char(4),
    channel        text,
    ingested_at    timestamptz NOT NULL DEFAULT now()
);

-- Velocity and history features read "this entity's transactions before t": one index per entity kind.
CREATE INDEX IF NOT EXISTS transactions_card_time ON transactions (card_id, "timestamp");
CREATE INDEX IF NOT EXISTS transactions_merchant_time ON transactions (merchant_id, "timestamp");
CREATE INDEX IF NOT EXISTS transactions_device_time ON transactions (device_id, "timestamp");
CREATE INDEX IF NOT EXISTS transactions_ip_time ON transactions (ip_address, "timestamp");
CREATE INDEX IF NOT EXISTS transactions_time ON transactions ("timestamp");

-- Chargebacks and other verdicts. label_time is when the verdict became known: point-in-time features may
-- only use labels with label_time before their as-of time. card_id, merchant_id and transaction_time are
-- copied from the transaction so that "fraud known at t" queries need no join.
CREATE TABLE IF NOT EXISTS labels (
    transaction_id   text PRIMARY KEY,
    card_id          text NOT NULL,
    merchant_id      text,
    transaction_time timestamptz NOT NULL,
    is_fraud         boolean NOT NULL,
    fraud_kind       text NOT NULL DEFAULT '',
    label_time       timestamptz NOT NULL,
    CHECK (label_time >= transaction_time)
);

CREATE INDEX IF NOT EXISTS labels_card_time ON labels (card_id, label_time);
CREATE INDEX IF NOT EXISTS labels_merchant_time ON labels (merchant_id, label_time);
CREATE INDEX IF NOT EXISTS labels_time ON labels (label_time);
