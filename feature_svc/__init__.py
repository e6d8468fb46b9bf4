"""Feature service: feature definitions, computation from PostgreSQL and the graph, the Redis online store,
the Parquet offline store and transaction ingestion."""
