# Stand-in for the postgres image where no registry is reachable: Debian's PostgreSQL with an entrypoint
# that honours the official image's POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB and data directory.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
# No Debian "main" cluster: the entrypoint makes its own. Debian's would take the first free port at build time
# (5433 when the build host already runs a PostgreSQL on 5432, since builds use the host's network), and
# pg_isready, the health check, would then ask that port instead of the server's 5432.
RUN mkdir -p /etc/postgresql-common/createcluster.d \
    && echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/fraudmesh.conf \
    && apt-get update && apt-get install -y --no-install-recommends postgresql && apt-get clean \
    && rm -rf /var/lib/apt/lists/*
COPY deploy/compose/local-images/postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
ENTRYPOINT ["sh", "/usr/local/bin/postgres-entrypoint.sh"]
