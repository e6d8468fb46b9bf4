# Stand-in for the postgres image where no registry is reachable: Debian's PostgreSQL with an entrypoint
# that honours the official image's POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB and data directory.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update && apt-get install -y --no-install-recommends postgresql && apt-get clean && rm -rf /var/lib/apt/lists/*
COPY deploy/compose/local-images/postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
ENTRYPOINT ["sh", "/usr/local/bin/postgres-entrypoint.sh"]
