"""Descriptions and examples of the fields of the wire Structs (shared/messages.py, gateway/schemas.py), for the
OpenAPI document: those Structs keep their docs in comments and docstrings, which JSON Schema cannot see.
`describe(doc)` fills a field's description (and example) wherever the document lacks one, in components and in
inlined request bodies; a field that is `Meta`-described keeps its own words."""

from __future__ import annotations

from typing import Any

from shared.runtime_config import RUNTIME_FIELDS, setting_description

FIELDS: dict[str, tuple[str, Any]] = {
    # transactions
    "card_id": ("Card token (never the card number): 1-128 of letters, digits and _ . : @ -.", "card_00001234"),
    "transaction_amount": ("Amount in major currency units; finite and >= 0.", 150.0),
    "merchant_id": ("Merchant id (same alphabet as card_id).", "merchant_12345"),
    "mcc_code": ("ISO 18245 merchant category code: 4 digits.", "5411"),
    "country_code": ("ISO 3166-1 alpha-2 country of the transaction.", "US"),
    "transaction_id": ("Your transaction id, echoed as sent; generated as `{request_id}-{i}` when absent.", "tx-1"),
    "timestamp": ("When the transaction happened, RFC 3339 (default: now).", "2026-11-01T14:00:00Z"),
    "device_id": ("Device id (same alphabet as card_id).", "dev_0000123"),
    "ip_address": ("IPv4 or IPv6 address of the client.", "10.0.0.1"),
    "currency": ("ISO 4217 currency code.", "USD"),
    "channel": ("Where it happened: pos, ecom, atm, moto, p2p or other.", "ecom"),
    # personalization (seed 001's /score/personalization)
    "user_id": ("The shopper: `user_` then letters, digits or _ (an unknown one is a cold start).", "user_00005678"),
    "item_id": ("The catalogue item: 1-128 of letters, digits and _ . : @ -.", "item_electronics_001"),
    "item_category": ("The item's category; overrides the catalogue's (e.g. electronics, books).", "electronics"),
    "item_price": ("The price shown, >= 0; overrides the catalogue's.", 299.99),
    "session_id": ("The browsing session: its behaviour so far adds to engagement and signals.", "session_abc123"),
    # scores
    "fraud_score": ("Probability of fraud, 0 to 1.", 0.07),
    "risk_level": ("Band of the score by the model's thresholds: low, medium, high, critical.", "low"),
    "recommended_action": ("approve, review or decline.", "approve"),
    "confidence": ("How sure the model is of the band, 0 to 1.", 0.86),
    "explanation": ("The risk factors in words.", "No risk factor stands out for this transaction."),
    "top_risk_factors": ("The reasons behind the score, strongest first.", None),
    "features_used": ("Model inputs that had a value for this transaction.", 24),
    "model_version": ("The model version that scored it.", "bootstrap-20261201-000000"),
    "feature_freshness_sec": ("Age of the oldest entity feature used, s (0: computed now; null: none used).", 12.5),
    "features_computed": ("Feature values computed on the fly (missing or stale in Redis).", 0),
    "latency_ms": ("Time spent in the gateway, ms.", 3.9),
    "request_id": ("The request's id (your X-Request-Id or a generated one).", "3f2c9a0e5d7b4c1a"),
    # batches
    "complete": ("False when the deadline passed before every partial was scored.", True),
    "results": ("One per transaction, in order; null for one not scored before the deadline.", None),
    "partials": ("How each partial was scored: by which worker, after how many deliveries, how fast.", None),
    "missing_transaction_ids": ("Transactions not scored before the deadline.", None),
    "model_versions": ("The model versions that scored this request.", None),
    "inference_workers": ("The inference workers that scored its partials.", None),
    "oldest_feature_age_s": ("Age of the oldest entity feature any score used, s; null if none.", 30.0),
    "partial_size": ("Transactions per partial (default FRAUDMESH_PARTIAL_SIZE).", 200),
    "transactions": ("1 to 10,000 transactions.", None),
    # partials
    "index": ("Position.", 0),
    "size": ("Transactions in the partial.", 200),
    "worker_id": ("The inference worker that scored it.", "inference-0"),
    "deliveries": ("JetStream deliveries it took (1 unless a worker failed).", 1),
    "queue_ms": ("Time in the work queue, ms.", 0.4),
    "compute_ms": ("Time in the worker, ms.", 2.1),
    "scored": ("False when it was not scored before the deadline.", True),
    "entities": ("Distinct entities (cards, merchants, devices, IPs) it looked up.", 4),
    "entities_from_cache": ("Of which read from Redis.", 4),
    "entities_computed": ("Of which computed on the fly.", 0),
    # risk factors
    "code": ("Stable code.", "amount_high"),
    "description": ("In words.", "Amount far above this card's usual"),
    "weight": ("Contribution to the score (larger: stronger).", 0.41),
    "source": ("Where it comes from: transaction, features, graph or model.", "features"),
    # errors
    "message": ("What was wrong and what to do.", "The request body is invalid: 1 problem; see `errors`."),
    "errors": ("Every problem, each at its JSON path (at most 100; see error_count).", None),
    "retryable": ("True: the same request may succeed if sent again.", False),
    "error_count": ("How many problems in all when `errors` lists only the first (0: complete).", 0),
    "path": ("Where: a JSON path in your body (`$.transactions[3].card_id`), or `query.<name>`.", "$.card_id"),
    "type": ("`error`.", "error"),
    # features and health
    "entity_type": ("card, merchant, device or ip.", "card"),
    "entity_id": ("The entity's id.", "card_00001234"),
    "values": ("Feature name -> value.", {"txn_count_1h": 2.0}),
    "computed_at": ("Unix epoch seconds the values describe.", 1796083200.0),
    "version": ("Feature-set version.", "fs-1"),
    "age_s": ("Age of the values, s.", 12.5),
    "status": ("ok, degraded or down.", "ok"),
    "nats": ("The gateway's NATS connection.", "connected"),
    "services": ("Each service behind NATS.", None),
    "details": ("Per instance: what it reports.", None),
    # ingestion
    "accepted": ("Items stored in the stream now.", 1),
    "duplicates": ("Items already stored under the same transaction id (sent before): not stored twice.", 0),
    "stream": ("The JetStream stream that holds them.", "FRAUD_TXNS"),
    "labels": ("1 to 10,000 labels.", None),
    "events": ("1 to 10,000 clickstream events.", None),
    "event_id": ("Your id of the event: the dedupe key (Nats-Msg-Id); re-sending it never counts twice.", "ev-1"),
    "event_type": ("view, add_to_cart or purchase.", "view"),
    "label": ("fraud or legit.", "fraud"),
    "fraud_kind": ("What kind of fraud (free text: letters, digits, _ and -).", "card_testing"),
    "label_time": ("When the label became known, RFC 3339 (default: now).", "2026-11-20T09:00:00Z"),
    "published_at": ("Set by the publisher (epoch seconds); leave it out.", None),
    # OIP / MLflow leftovers
    "name": ("The input: a transaction field.", None),
    "datatype": ("BYTES for ids and codes, FP64 for transaction_amount (as the model metadata lists).", None),
    "shape": ("`[n]` or `[n, 1]`: n transactions.", [2]),
    "parameters": ("Protocol parameters (`binary_data_size` for binary tensor data); others are ignored.", None),
    "data": ("The elements, row-major (flat or nested); absent with binary data.", ["c1", "c2"]),
    "dataframe_split": ("pandas orient=split: columns and rows.", None),
    "dataframe_records": ("pandas orient=records: one object per row.", None),
    "instances": ("Rows as records, or columns as an object of arrays.", None),
    "inputs": ("Rows as records, or columns as an object of arrays.", None),
    "params": ("MLflow inference params: none supported.", None),
    "batch_id": ("Your batch id (becomes the transaction id prefix).", "batch_20240902_001"),
    "request_ids": ("One id per inner batch (optional).", ["id1", "id2"]),
    "id": ("Echoed in the reply.", "req-1"),
    "outputs": ("The outputs wanted (default: all).", None),
    # degraded decisions, health, admission
    "degraded": ("True when the score was built without some of its inputs (see degraded_reasons).", False),
    "degraded_reasons": ("Why inputs were missing or stale, e.g. features_unavailable; empty when none.", []),
    "retry_after_s": ("When retryable: seconds to wait before retrying (also the Retry-After header).", 1.0),
    "down": ("Dependencies that are down: nats, redis, postgres, aggregator, inference, feature.", []),
    "problems": ("Per dependency that is down: what was seen and by whom.", {}),
    "reason": ("Why it is not ready, in words.", "no instance of inference"),
}
PER_SCHEMA: dict[tuple[str, str], tuple[str, Any]] = {
    ("ServiceHealth", "status"): ("ok, degraded (some instance degraded) or down (no instance).", "ok"),
    ("HealthResponse", "status"): ("ok, degraded or down (a required service is missing).", "ok"),
    ("HealthResponse", "age_s"): ("Age of this information: s since the health replies were gathered.", 0.4),
    ("ReadyResponse", "status"): ("ready, or not ready (then `reason` says why).", "ready"),
    ("ReadyResponse", "age_s"): ("Age of this information: s since the health replies were gathered.", 0.4),
    ("ServiceHealth", "instances"): ("Instances that answered.", 2),
    ("DataframeSplit", "index"): ("Row labels (ignored).", None),
    ("FeaturesResponse", "version"): ("Feature-set version.", "fs-1"),
    ("PartialInfo", "index"): ("Position of the partial in the batch.", 0),
    ("PartialInfo", "model_version"): ("The model version that scored it.", "bootstrap-20261201-000000"),
    ("ErrorReply", "code"): (
        "bad_request, unauthorized, not_found, conflict, payload_too_large, rate_limited, unavailable, "
        "deadline_exceeded, incomplete or internal.",
        "bad_request",
    ),
}

PER_SCHEMA.update(
    {
        ("RuntimeConfig", name): (f"Runtime override of FRAUDMESH_{name.upper()}: {setting_description(name)}", None)
        for name in RUNTIME_FIELDS
    }
)


def _title(name: str) -> str:
    return name.split("[", 1)[0]


def _fill(schema_name: str, props: dict[str, Any]) -> None:
    for field, prop in props.items():
        if not isinstance(prop, dict) or "description" in prop:
            continue
        members: list[Any] = prop.get("anyOf") or prop.get("oneOf") or []
        inner = next((m for m in members if isinstance(m, dict) and "description" in m), None)
        found = PER_SCHEMA.get((schema_name, field)) or FIELDS.get(field)
        if inner is not None:
            prop["description"] = inner["description"]
        elif found is not None:
            prop["description"] = found[0]
        if found is not None and found[1] is not None and "examples" not in prop and "example" not in prop:
            prop["examples"] = [found[1]]


def _walk(node: Any, name: str) -> None:
    if isinstance(node, dict):
        name = _title(node.get("title", name)) if isinstance(node.get("title"), str) else name
        if isinstance(node.get("properties"), dict):
            _fill(name, node["properties"])
        for v in node.values():
            _walk(v, name)
    elif isinstance(node, list):
        for v in node:
            _walk(v, name)


def describe(doc: dict[str, Any]) -> None:
    """Fill missing field descriptions and examples in place."""
    for name, schema in doc.get("components", {}).get("schemas", {}).items():
        _walk(schema, _title(name))
    for item in doc.get("paths", {}).values():
        for op in item.values():
            if isinstance(op, dict) and "requestBody" in op:
                _walk(op["requestBody"], "")
