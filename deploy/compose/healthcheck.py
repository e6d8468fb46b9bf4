"""Container healthcheck for every fraudmesh service (stdlib only; the slim image has no curl).

Non-gateway services (FRAUDMESH_METRICS_PORT > 0) are checked on GET /readyz of their metrics port;
the gateway on GET /ready of FRAUDMESH_HTTP_PORT. An optional argument overrides the path.
Exit 0 when the endpoint answers 2xx, 1 otherwise.
"""

import os
import sys
import urllib.request

metrics_port = int(os.environ.get("FRAUDMESH_METRICS_PORT") or 0)
if metrics_port > 0:
    port, path = metrics_port, "/readyz"
else:
    port, path = int(os.environ.get("FRAUDMESH_HTTP_PORT") or 8000), "/ready"
if len(sys.argv) > 1:
    path = sys.argv[1]

try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
        sys.exit(0 if 200 <= resp.status < 300 else 1)
except Exception as exc:  # HTTPError (503), refused connection, timeout
    print(f"unhealthy: {path} on port {port}: {exc}", file=sys.stderr)
    sys.exit(1)
