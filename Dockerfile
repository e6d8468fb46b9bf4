# syntax=docker/dockerfile:1
# One image for every fraudmesh service; compose / k8s pick the service with the command
# (`python -m gateway|aggregator|inference_svc|feature_svc`). No extras are installed: the `train`
# extra (torch, torch-geometric) never reaches the serving image.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, from pyproject.toml alone, so that code changes do not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml','rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

# Then the package itself, without dependencies (already there) and without extras.
COPY . .
RUN pip install --no-deps . \
 # Guard: the serving image must not contain torch (it would also add ~2 GB).
 && python -c "import importlib.util, sys; sys.exit('torch must not be in the serving image' if importlib.util.find_spec('torch') else 0)"

# ---------------------------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime
# tini as PID 1: forwards SIGTERM to python (a PID-1 python without a handler ignores it) and reaps zombies.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 fraudmesh \
 && useradd --system --uid 10001 --gid fraudmesh --home-dir /app --no-create-home --shell /usr/sbin/nologin fraudmesh

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FRAUDMESH_HTTP_HOST=0.0.0.0 \
    FRAUDMESH_MODEL_DIR=/app/var/models

COPY --from=builder /opt/venv /opt/venv
COPY deploy/compose/healthcheck.py /opt/fraudmesh/healthcheck.py
WORKDIR /app
# The models dir exists in the image owned by the app user, so a fresh named volume mounted here
# inherits that ownership and the non-root model-init / inference containers can write to it.
RUN mkdir -p /app/var/models && chown -R fraudmesh:fraudmesh /app/var

USER 10001:10001
EXPOSE 8000 9100
# Gateway: GET /ready on FRAUDMESH_HTTP_PORT; other services: GET /readyz on FRAUDMESH_METRICS_PORT.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "/opt/fraudmesh/healthcheck.py"]
ENTRYPOINT ["tini", "--"]
CMD ["python", "-m", "gateway"]
