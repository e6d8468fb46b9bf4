-- A merchant's 30-day window (the merchant_window feature group) read from the index alone. A busy merchant has
-- thousands of rows in 30 days, scattered over the heap, and live ingestion recomputes its window in every
-- micro-batch that touches it; the window's aggregates use only the amount and the card besides the key, so an
-- index carrying them answers with an index-only scan (the heap is read only for pages not yet vacuumed):
-- 3-4x less PostgreSQL time for the 30 busiest merchants of a 200,000-transaction world (bench/results/ingest-live-*.md).
-- It replaces the plain (merchant_id, timestamp) index, whose key it shares.
CREATE INDEX IF NOT EXISTS transactions_merchant_window ON transactions (merchant_id, "timestamp") INCLUDE (amount, card_id);
DROP INDEX IF EXISTS transactions_merchant_time;
