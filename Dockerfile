# syntax=docker/dockerfile:1
# One image for every fraudmesh service; compose / k8s pick the service with the command
# (`python -m gateway|aggregator|inference_svc|feature_svc`). Versions come from requirements.lock.
# The serving image has no torch and no model-building tools: the `bootstrap` extra (scikit-learn,
# skl2onnx, onnx) trains the seeded bootstrap model in its own stage and only the model is copied out.
# Optional serving extras: --build-arg EXTRAS=neo4j (for FRAUDMESH_GRAPH_STORE=neo4j).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ------------------------------------------------------------------------------------------------- deps
FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
ARG EXTRAS=""

# Dependencies first, from pyproject.toml and the lock alone, so that code changes do not reinstall them.
# deps_of.py prints the requirements of the project plus the given extras; the lock pins every version.
COPY pyproject.toml requirements.lock deploy/compose/deps_of.py ./
RUN python deps_of.py "$EXTRAS" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt -c requirements.lock

# ------------------------------------------------------------------------------------- bootstrap model
# The seeded bootstrap models of both families (`fraudmesh model init [--family personalization]`, as `fraudmesh up`
# does on a fresh clone), built here so the serving image needs no scikit-learn.
FROM deps AS bootstrap-model
RUN python deps_of.py bootstrap --extras-only > /tmp/bootstrap.txt \
 && pip install -r /tmp/bootstrap.txt -c requirements.lock
COPY . .
RUN pip install --no-deps . \
 && python -m deploy.cli model init --model-dir /opt/bootstrap-models \
 && python -m deploy.cli model init --family personalization --model-dir /opt/bootstrap-models-personalization

# ---------------------------------------------------------------------------------------------- builder
FROM deps AS builder
# The package itself, without dependencies (already there).
COPY . .
RUN pip install --no-deps . \
 # Guard: the serving image must not contain torch (it would also add ~2 GB).
 && python -c "import importlib.util, sys; sys.exit('torch must not be in the serving image' if importlib.util.find_spec('torch') else 0)"

# ---------------------------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime
# tini as PID 1: forwards SIGTERM to python (a PID-1 python without a handler ignores it) and reaps zombies.
# The models dir exists in the image owned by the app user, so a fresh named volume mounted there
# inherits that ownership and the non-root model-init / inference containers can write to it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && apt-get clean && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 fraudmesh \
 && useradd --system --uid 10001 --gid fraudmesh --home-dir /app --no-create-home --shell /usr/sbin/nologin fraudmesh \
 && mkdir -p /app/var/models /app/var/models-personalization && chown -R fraudmesh:fraudmesh /app/var

# Metadata before the large COPY: each instruction after it would copy the whole venv again on some
# storage drivers (vfs), which makes the build much slower.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FRAUDMESH_HTTP_HOST=0.0.0.0 \
    FRAUDMESH_MODEL_DIR=/app/var/models \
    FRAUDMESH_PERSONALIZATION_MODEL_DIR=/app/var/models-personalization
WORKDIR /app
EXPOSE 8000 9100
# Gateway: GET /ready on FRAUDMESH_HTTP_PORT; other services: GET /readyz on FRAUDMESH_METRICS_PORT.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "/opt/fraudmesh/healthcheck.py"]
ENTRYPOINT ["tini", "--"]
CMD ["python", "-m", "gateway"]
USER 10001:10001

COPY deploy/compose/healthcheck.py deploy/compose/install_bootstrap_model.py /opt/fraudmesh/
# install_bootstrap_model.py copies these into FRAUDMESH_MODEL_DIR and FRAUDMESH_PERSONALIZATION_MODEL_DIR when
# they have no active model (model-init).
COPY --from=bootstrap-model /opt/bootstrap-models /opt/fraudmesh/bootstrap-models
COPY --from=bootstrap-model /opt/bootstrap-models-personalization /opt/fraudmesh/bootstrap-models-personalization
COPY --from=builder /opt/venv /opt/venv
