"""The HTTP gateway (Litestar): validation, auth, rate limits, OpenAPI, and HTTP mapped onto NATS."""
