-- Live ingestion no longer rewrites an existing edge's row for every transaction of its card with the same
-- device, IP or merchant (feature_svc/graph/postgres.py, upsert_edges): those rewrites kept the edges table's
-- pages out of the visibility map, so the index-only scans behind the graph features (a busy merchant's cards,
-- an IP's cards, the 2-hop fraud counts) fetched one heap page per edge. The edges table still holds first_seen
-- exactly (what every feature reads); its last_seen and n are those of the edge's creation (the world load or
-- its first ingested transaction). The current ones, for monitoring and pruning, come from the ledger:
CREATE OR REPLACE VIEW edge_activity AS
SELECT card_id, 'device'::text AS entity_type, device_id AS entity_id,
       min("timestamp") AS first_seen, max("timestamp") AS last_seen, count(*) AS n
FROM transactions WHERE device_id IS NOT NULL GROUP BY card_id, device_id
UNION ALL
SELECT card_id, 'ip', ip_address, min("timestamp"), max("timestamp"), count(*)
FROM transactions WHERE ip_address IS NOT NULL GROUP BY card_id, ip_address
UNION ALL
SELECT card_id, 'merchant', merchant_id, min("timestamp"), max("timestamp"), count(*)
FROM transactions WHERE merchant_id IS NOT NULL GROUP BY card_id, merchant_id;
