"""Limits that more than one deployment file must agree on (tests/test_deploy_manifests.py checks them).

NATS_MAX_PAYLOAD is the largest NATS message the servers accept. The largest messages fraudmesh sends are a
10,000-transaction `fraud.score` request and its reply. With every identifier at its 128-character maximum, a
request is about 7.3 MB of msgpack and a reply with three reasons per score about 8.7 MB; NATS's default of
1 MB fails a request of about 4,000 transactions. The same number is in `fraudmesh up` (deploy/servers.py),
docker compose (deploy/compose/nats/nats-server.conf) and the NATS Helm values (deploy/k8s/nats-values.yaml).
"""

from typing import Final

NATS_MAX_PAYLOAD: Final = 16 * 1024 * 1024
"""Bytes: 16 MiB, about twice the largest request or reply (NATS allows up to 64 MiB)."""
