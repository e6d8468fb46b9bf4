# Stand-in for the prom/prometheus image where no registry is reachable: Debian's prometheus (the compose
# file passes the same flags), plus wget for the compose healthcheck.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update && apt-get install -y --no-install-recommends prometheus wget && apt-get clean && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /prometheus
ENTRYPOINT ["/usr/bin/prometheus"]
