"""Live ingestion: FRAUD_TXNS and FRAUD_LABELS into the ledger, the graph and the online features.

- `ledger_writer`: idempotent writes of transactions, labels, graph edges and card labels;
- `touched`: which entities a batch changes (directly, and through the graph);
- `refresh`: recompute the touched entities' features from the ledger and write them to Redis if newer;
- `ingestor`: the micro-batch handlers the feature workers' JetStream consumers run, with their metrics;
- `check`: the consistency check (online values against a recompute from the ledger as of their computed_at).
"""
