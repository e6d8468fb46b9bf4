"""NATS is authenticated and every user has only its permissions (deploy/nats_auth.py), on the suite's real
nats-server and services; and compose and the Kubernetes manifests wire the same users and permissions."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats
import pytest
import yaml
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError

from deploy import nats_auth
from deploy.demo import sample_batch
from deploy.servers import Server, start_nats
from shared import subjects
from shared.messages import Codec, ScoreReply, ScoreRequest, Transaction
from shared.nats_conn import SERVICE_INBOX_USERS, NatsAuthError, _FirstConnect, connect_nats, inbox_prefix
from shared.settings import load_settings
from tests.stacks import Stack

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_NATS_DIR = ROOT / "deploy" / "compose" / "nats"
K8S_DIR = ROOT / "deploy" / "k8s"
STACK_SERVICES = {"gateway": "gateway", "aggregator": "aggregator", "inference": "inference", "feature": "feature"}


class Client:
    """A NATS connection as one user, recording the permission violations the server reports."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc = NATS()

    async def connect(self, url: str, user: str, password: str) -> Client:
        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc))

        await self.nc.connect(
            url,
            user=user,
            password=password,
            inbox_prefix=inbox_prefix(user),
            error_cb=on_error,
            allow_reconnect=False,
        )
        return self

    async def denied(self, subject: str, timeout: float = 5.0) -> bool:
        """Whether the server reported a permissions violation naming `subject` (it always answers one; nats.py
        lower-cases the message)."""
        await self.nc.flush()
        end = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < end:
            if any("permissions violation" in e.lower() and f'"{subject.lower()}"' in e.lower() for e in self.errors):
                return True
            await asyncio.sleep(0.02)
        return False


@pytest.fixture
async def as_user(nats_server: Server) -> AsyncIterator[Callable[[str], Awaitable[Client]]]:
    clients: list[Client] = []

    async def make(user: str) -> Client:
        c = await Client().connect(
            nats_server.extra["plain_url"], user, nats_auth.password(nats_server.extra["secret"], user)
        )
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.nc.close()


async def test_an_anonymous_client_or_a_wrong_password_cannot_connect(nats_server: Server) -> None:
    for kwargs in ({}, {"user": "gateway", "password": "guessed"}, {"user": "nobody", "password": "x"}):
        with pytest.raises(NatsError, match="Authorization Violation"):
            await nats.connect(nats_server.extra["plain_url"], allow_reconnect=False, **kwargs)
    # a service's connect_nats says what is wrong instead of retrying forever
    settings = load_settings({}, nats_user="gateway", nats_password="guessed")
    with pytest.raises(NatsAuthError, match=r"refused user 'gateway'.*FRAUDMESH_NATS_PASSWORD"):
        await connect_nats(nats_server.extra["plain_url"], "test", settings=settings)


async def test_a_refusal_is_reported_even_when_the_servers_reset_is_reported_after_it() -> None:
    # the order CI once saw: nats.py reported the refusal, then the reset of the socket the server closed; the
    # service must still say its credentials were refused (NatsAuthError), not "connection reset by peer"
    first = _FirstConnect(retries=-1)
    first.failed(NatsError("nats: 'Authorization Violation'"))
    first.failed(ConnectionResetError(104, "Connection reset by peer"))
    assert first.refused and first.give_up.is_set()


async def test_the_gateway_cannot_join_the_aggregators_or_read_partials_or_the_dlq(
    stack: Stack, as_user: Callable[[str], Awaitable[Client]]
) -> None:
    gw = await as_user("gateway")
    await gw.nc.subscribe(subjects.SCORE, queue=subjects.QUEUE_AGGREGATOR)
    assert await gw.denied(subjects.SCORE)
    for subject in (subjects.PARTIALS_SUBJECT, subjects.DLQ_SUBJECT, "_INBOX.>", "_INBOX_aggregator.>"):
        await gw.nc.subscribe(subject)
        assert await gw.denied(subject), subject
    # the JetStream API is closed to it too: no consumer on the work queue, no message from the dead letters
    for api in (
        f"$JS.API.CONSUMER.MSG.NEXT.{subjects.PARTIALS_STREAM}.{subjects.INFERENCE_CONSUMER}",
        f"$JS.API.STREAM.MSG.GET.{subjects.DLQ_STREAM}",
        f"$JS.API.CONSUMER.CREATE.{subjects.DLQ_STREAM}",
    ):
        await gw.nc.publish(api, b"{}", reply=gw.nc.new_inbox())
        assert await gw.denied(api), api
    # and scoring through it still works: the real gateway holds exactly these credentials
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(f"{stack.gateway_url}/predict", json={"transactions": sample_batch(20, seed=5)})
    assert r.status_code == 200, r.text
    assert r.json()["complete"] is True


async def test_only_the_admin_writes_the_model_registry_and_reads_the_dlq(
    stack: Stack, as_user: Callable[[str], Awaitable[Client]]
) -> None:
    for user in ("inference", "aggregator", "feature", "public"):
        c = await as_user(user)
        # the inference worker that carries out the gateway's admin routes (inference_svc/model_ops.py) may write
        # `active` (a load) and object metadata (a delete); never the A/B state, nor any model's content
        forbidden = ["$KV.fraudmesh_model_state.candidate", "$KV.fraudmesh_model_state.candidate_share"]
        forbidden += ["$O.fraudmesh_models.C.x"]
        if user != "inference":
            forbidden += ["$KV.fraudmesh_model_state.active", "$O.fraudmesh_models.M.x"]
        for subject in forbidden:
            await c.nc.publish(subject, b"v9")
            assert await c.denied(subject), (user, subject)
        await c.nc.subscribe(subjects.DLQ_SUBJECT)
        assert await c.denied(subjects.DLQ_SUBJECT), user
    admin = await as_user("admin")
    js = admin.nc.jetstream(timeout=5)
    info = await js.stream_info(subjects.DLQ_STREAM)
    assert info.config.name == subjects.DLQ_STREAM
    assert admin.errors == []


async def test_the_public_user_can_score_but_not_listen_on_fraud_score(
    stack: Stack, as_user: Callable[[str], Awaitable[Client]]
) -> None:
    public = await as_user("public")
    codec = Codec()
    txs = msgspec.convert(sample_batch(10, seed=6), list[Transaction])
    msg = await public.nc.request(subjects.SCORE, codec.encode(ScoreRequest(transactions=txs)), timeout=10)
    reply = codec.decode(msg.data, ScoreReply)
    assert isinstance(reply, ScoreReply) and reply.complete
    for queue in ("", subjects.QUEUE_AGGREGATOR):
        await public.nc.subscribe(subjects.SCORE, queue=queue)
        assert await public.denied(subjects.SCORE), queue
    await public.nc.publish(subjects.PARTIALS_SUBJECT, b"forged")
    assert await public.denied(subjects.PARTIALS_SUBJECT)


def test_no_service_hit_a_permission_it_lacks(stack: Stack) -> None:
    """Scoring (batches, features, health, model registry) ran under the users above: no service was refused."""
    r = httpx.post(f"{stack.gateway_url}/predict", json={"transactions": sample_batch(450, seed=7)}, timeout=30)
    assert r.status_code == 200, r.text
    httpx.get(f"{stack.gateway_url}/health", timeout=5)
    for proc in stack.procs:
        log = stack.log_of(proc).lower()
        assert "permissions violation" not in log, f"{proc.label}: {stack.log_of(proc)[-3000:]}"
        assert "authorization violation" not in log, proc.label


def test_the_names_in_the_table_are_the_codes() -> None:
    """deploy/nats_auth.py names a few streams and subjects itself; where shared/subjects.py has them, they agree."""
    for name in ("TXNS_STREAM", "TXNS_SUBJECT", "LABELS_STREAM", "LABELS_SUBJECT", "INGEST_DLQ_STREAM"):
        assert getattr(subjects, name, getattr(nats_auth, name)) == getattr(nats_auth, name), name
    assert getattr(subjects, "INGEST_DLQ_SUBJECT", nats_auth.INGEST_DLQ_SUBJECT) == nats_auth.INGEST_DLQ_SUBJECT
    from inference_svc import registry

    state = getattr(subjects, "MODEL_STATE_BUCKET", None) or registry.STATE_BUCKET
    models = getattr(subjects, "MODEL_ARTIFACTS_BUCKET", None) or registry.MODELS_BUCKET
    assert (f"KV_{state}", f"OBJ_{models}") == (nats_auth.MODEL_STATE_STREAM, nats_auth.MODELS_STREAM)


def test_every_service_user_reads_only_its_own_inboxes() -> None:
    assert {nats_auth.ADMIN, *nats_auth.SERVICE_USERS} == SERVICE_INBOX_USERS
    assert set(nats_auth.SERVICE_USERS) == set(STACK_SERVICES)
    for user in nats_auth.SERVICE_USERS:
        perms = nats_auth.permissions(user)
        inboxes = [s for s in perms.subscribe if s.startswith("_INBOX")]
        assert inboxes == [f"_INBOX_{user}.>"], user
        assert ">" not in perms.publish and ">" not in perms.subscribe
    secret = nats_auth.new_secret()
    passwords = {nats_auth.password(secret, u) for u in nats_auth.USERS}
    assert len(passwords) == len(nats_auth.USERS)


def test_local_credentials_are_private(nats_server: Server, run_dir: Path) -> None:
    conf = run_dir / "nats-srv" / "nats-server.conf"
    assert nats_auth.password(nats_server.extra["secret"], "gateway") in conf.read_text()
    for path in (conf, run_dir / "nats-srv" / "nats-secret"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path


# ------------------------------------------------------------------------------------ compose and k8s


def test_compose_runs_nats_with_the_same_users_and_permissions() -> None:
    assert (COMPOSE_NATS_DIR / "accounts.conf").read_text() == nats_auth.compose_config(), (
        "deploy/compose/nats/accounts.conf is stale: `python -m deploy.nats_auth write`"
    )
    assert 'include "accounts.conf"' in (COMPOSE_NATS_DIR / "nats-server.conf").read_text()
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    services = compose["services"]
    nats_svc = services["nats"]
    assert "./deploy/compose/nats/accounts.conf:/etc/nats/accounts.conf:ro" in nats_svc["volumes"]
    assert "/etc/nats/nats-server.conf" in nats_svc["command"]
    nats_env = nats_svc["environment"]
    for user in nats_auth.USERS:
        assert nats_auth.env_var(user) in nats_env, user
    for name, user in STACK_SERVICES.items():
        env = services[name]["environment"]
        assert env["FRAUDMESH_NATS_USER"] == user, name
        assert env["FRAUDMESH_NATS_PASSWORD"] == nats_env[nats_auth.env_var(user)], name
    # the CLI container (model init) is the operator
    init_env = services["model-init"]["environment"]
    assert init_env["FRAUDMESH_NATS_USER"] == nats_auth.ADMIN
    assert init_env["FRAUDMESH_NATS_PASSWORD"] == nats_env[nats_auth.env_var(nats_auth.ADMIN)]


def _deployment_env(path: Path) -> dict[str, Any]:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") == "Deployment":
            container = doc["spec"]["template"]["spec"]["containers"][0]
            return {e["name"]: e for e in container.get("env", [])}
    raise AssertionError(f"no Deployment in {path}")


def test_kubernetes_runs_nats_with_the_same_users_and_permissions() -> None:
    values = yaml.safe_load((K8S_DIR / "nats-values.yaml").read_text())
    assert values["config"]["merge"]["accounts"] == nats_auth.helm_accounts(), (
        "deploy/k8s/nats-values.yaml config.merge.accounts is stale: `python -m deploy.nats_auth write`"
    )
    nats_env = values["container"]["env"]
    (secret,) = yaml.safe_load_all((K8S_DIR / "nats-secret.example.yaml").read_text())
    assert secret["metadata"]["name"] == "fraudmesh-nats"
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    assert "nats-secret.example.yaml" not in kustomization["resources"]  # a template: never applied
    for user in nats_auth.USERS:
        ref = nats_env[nats_auth.env_var(user)]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "fraudmesh-nats", "key": user}, user
        assert user in secret["stringData"], user
    for name, user in STACK_SERVICES.items():
        env = _deployment_env(K8S_DIR / f"{name}.yaml")
        assert env["FRAUDMESH_NATS_USER"]["value"] == user, name
        ref = env["FRAUDMESH_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "fraudmesh-nats", "key": user}, name


# ------------------------------------------------------------------------------------------------- TLS


def _certificates(d: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 it signed, made with openssl."""
    d.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=fraudmesh test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    )
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr")
    run(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.cnf",
        "-out",
        "server.pem",
    )
    return d / "ca.pem", d / "server.pem", d / "server.key"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make certificates")
async def test_tls_with_the_configured_ca_and_only_with_it(tmp_path: Path) -> None:
    ca, cert, key = _certificates(tmp_path / "pki")
    srv = start_nats(tmp_path / "nats", tls=(cert, key))
    try:
        url, secret = srv.extra["plain_url"], srv.extra["secret"]
        assert url.startswith("tls://")
        creds = {"nats_user": "public", "nats_password": nats_auth.password(secret, "public")}
        nc = await connect_nats(url, "tls-test", settings=load_settings({}, nats_tls_ca=str(ca), **creds))
        try:
            assert nc.is_connected
            await nc.publish(subjects.SCORE, b"")  # allowed for public; a TLS session carries it
            await nc.flush()
        finally:
            await nc.close()
        # without the CA the server's certificate is not trusted: the connect fails, it does not fall back
        with pytest.raises(Exception, match=r"(?i)certificate"):
            await connect_nats(url, "tls-test", settings=load_settings({}, **creds), first_connect_retries=0)
    finally:
        srv.stop()
