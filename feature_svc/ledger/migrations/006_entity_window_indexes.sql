-- The card, device and IP feature groups read from their indexes alone, as the merchant window does since
-- migration 004. Live ingestion recomputes every touched card, device and IP; the card groups (30-day window,
-- history, first devices, first countries) and the new-link probe of the ledger writer read the card's rows,
-- which a plain (card_id, timestamp) index sends to the heap row by row: on a ledger that had been ingesting for a
-- while (cards with hundreds of rows) these statements were two thirds of the PostgreSQL time of live ingestion,
-- ~280 buffers per card (bench/results/ingest-perf-*.md). Same keys and names, so every other reader is unchanged.
DROP INDEX IF EXISTS transactions_card_time;
CREATE INDEX transactions_card_time ON transactions (card_id, "timestamp")
    INCLUDE (amount, merchant_id, country_code, device_id, ip_address);
DROP INDEX IF EXISTS transactions_device_time;
CREATE INDEX transactions_device_time ON transactions (device_id, "timestamp") INCLUDE (card_id);
DROP INDEX IF EXISTS transactions_ip_time;
CREATE INDEX transactions_ip_time ON transactions (ip_address, "timestamp") INCLUDE (card_id);

-- An index-only scan reads the heap for the pages not yet in the visibility map, i.e. those written since the
-- last vacuum: the newest rows, which are the ones the 1-hour and 24-hour windows read. Vacuum the append-only
-- ledger and the edges every 20,000 new rows (instead of the default 20% of the table, millions of rows on a
-- grown ledger); such a vacuum only visits the pages changed since the last one.
ALTER TABLE transactions SET (autovacuum_vacuum_insert_threshold = 20000, autovacuum_vacuum_insert_scale_factor = 0);
ALTER TABLE edges SET (autovacuum_vacuum_insert_threshold = 20000, autovacuum_vacuum_insert_scale_factor = 0);
