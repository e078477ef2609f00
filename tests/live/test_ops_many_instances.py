"""Two ``latchkey serve --workers 2`` instances over one PostgreSQL and one Redis.

What a deployment of several instances behind a load balancer relies on:
tokens, revocations, failure limits and key rotations hold across instances,
and each instance's metrics add up its workers.
"""

from __future__ import annotations

import base64
import http.client
import re
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from portal.ops.metrics import PUBLISH_SECONDS
from tests.conftest import REDIS_URL, postgres_database, unavailable
from tests.live.servers import (
    AUDIENCE,
    Deployment,
    Server,
    free_port,
    make_deployment,
)

pytestmark = [pytest.mark.live, pytest.mark.postgres, pytest.mark.redis]

KEY_CACHE_SECONDS = 2
#: Unusual on purpose: Redis database 15 is shared with other test runs.
FAILURE_LIMIT = 9
FAILURE_WINDOW = "9 per 7 minutes"


def redis_reachable() -> None:
    import redis

    try:
        with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3) as connection:
            connection.ping()
    except redis.RedisError as e:
        unavailable("Redis", str(e))


class Pair:
    def __init__(self, deployment: Deployment, a: Server, b: Server, org: str,
                 client_id: str, secret: str, created: float) -> None:
        self.deployment, self.a, self.b, self.org = deployment, a, b, org
        self.client_id, self.secret, self.created = client_id, secret, created

    def token(self, server: Server) -> str:
        response = server.token(self.client_id, self.secret)
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def introspect(self, server: Server, token: str) -> dict[str, object]:
        response = server.introspect(self.client_id, self.secret, token)
        assert response.status_code == 200, response.text
        return dict(response.json())


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    redis_reachable()
    workdir: Path = tmp_path_factory.mktemp("pair")
    with postgres_database() as url:
        deployment = make_deployment(
            workdir, url, REDIS_URL=REDIS_URL, KEY_CACHE_SECONDS=str(KEY_CACHE_SECONDS),
            JWKS_MAX_AGE="1", TOKEN_FAILURE_RATE_LIMIT=FAILURE_WINDOW)
        deployment.cli("create-org", "--name", "Pair", "--slug", "pair")
        created = time.monotonic()
        client_id, secret = deployment.create_client("pair")
        with Server(deployment, free_port(), "a").running() as a, \
                Server(deployment, free_port(), "b").running() as b:
            yield Pair(deployment, a, b, "pair", client_id, secret, created)


def test_both_instances_are_ready_with_redis(pair):
    for server in (pair.a, pair.b):
        response = requests.get(server.base + "/readyz", timeout=10)
        assert response.status_code == 200, response.text
        assert response.json()["checks"]["redis"] == "ok"


def test_token_from_one_instance_introspects_active_on_the_other(pair):
    token = pair.token(pair.a)

    body = pair.introspect(pair.b, token)

    assert body["active"] is True and body["client_id"] == pair.client_id


def test_revocation_on_one_instance_is_seen_by_the_other_at_once(pair):
    token = pair.token(pair.b)
    assert pair.introspect(pair.a, token)["active"] is True

    revoked = requests.post(pair.b.base + "/oauth/revoke", data={"token": token},
                            auth=(pair.client_id, pair.secret), timeout=10)
    assert revoked.status_code == 200

    assert pair.introspect(pair.a, token) == {"active": False}


def _post_from(address: str, server: Server, client_id: str, secret: str) -> int:
    """A token request from a loopback address of our choosing (its own rate-limit key)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10,
                                            source_address=(address, 0))
    credentials = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    try:
        connection.request("POST", "/oauth/token", body="grant_type=client_credentials",
                           headers={"Content-Type": "application/x-www-form-urlencoded",
                                    "Authorization": f"Basic {credentials}"})
        return connection.getresponse().status
    finally:
        connection.close()


def test_failed_authentication_limit_is_shared_by_both_instances(pair):
    # A loopback address no other run uses, so its count starts at zero.
    a, b, c = secrets.token_bytes(3)
    address = f"127.{a % 254 + 1}.{b % 254 + 1}.{c % 253 + 2}"
    statuses = [_post_from(address, (pair.a, pair.b)[i % 2], pair.client_id, "lk_secret_wrong")
                for i in range(FAILURE_LIMIT)]
    assert statuses == [401] * FAILURE_LIMIT  # the limit counts every failure ...

    # ... whichever instance (and worker) saw it: both now refuse even the right secret.
    assert _post_from(address, pair.a, pair.client_id, pair.secret) == 429
    assert _post_from(address, pair.b, pair.client_id, pair.secret) == 429
    # Another address is not affected.
    assert _post_from("127.0.0.1", pair.a, pair.client_id, pair.secret) == 200


def _kid(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def test_cli_rotation_reaches_both_instances_and_no_verification_fails(pair):
    verifier = jwt.PyJWKClient(pair.a.base + "/.well-known/jwks.json")
    issuer = pair.deployment.env["LATCHKEY_ISSUER"]
    failures: list[str] = []
    issued: list[tuple[float, str, str]] = []  # (time received, server, token)
    stop = threading.Event()

    def load(servers: tuple[Server, ...]) -> None:
        i = 0
        while not stop.is_set():
            server = servers[i % len(servers)]
            i += 1
            token = pair.token(server)
            issued.append((time.monotonic(), server.name, token))
            try:
                key = verifier.get_signing_key_from_jwt(token)
                jwt.decode(token, key.key, algorithms=["RS256"], audience=AUDIENCE,
                           issuer=issuer)
            except jwt.PyJWTError as e:
                failures.append(f"{server.name} {_kid(token)}: {e}")

    # A next key is published for the JWKS max-age plus KEY_CACHE_SECONDS before it
    # may sign (issue 12 item 6); the org's was published when the org was made.
    time.sleep(max(0.0, pair.created + 1 + KEY_CACHE_SECONDS + 1 - time.monotonic()))
    threads = [threading.Thread(target=load, args=((pair.a, pair.b),)),
               threading.Thread(target=load, args=((pair.b, pair.a),))]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1)
        old_kid = _kid(pair.token(pair.a))
        rotated = pair.deployment.cli("rotate-signing-key", "--org", pair.org)
        rotated_at = time.monotonic()
        found = re.search(r"now signing with (\S+)", rotated.stdout)
        assert found, rotated.stdout + rotated.stderr
        new_kid = found.group(1)
        time.sleep(KEY_CACHE_SECONDS + 2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

    settled = rotated_at + KEY_CACHE_SECONDS + 0.5
    late = [(name, _kid(token)) for at, name, token in issued if at > settled]
    assert new_kid != old_kid
    assert {name for name, _ in late} == {"a", "b"} and len(late) >= 10
    assert {kid for _, kid in late} == {new_kid}, "an instance still signs with the old key"
    assert failures == [], f"{len(failures)} of {len(issued)} verifications failed"


def _count(server: Server, name: str, **labels: str) -> float:
    text = requests.get(server.base + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def test_each_instances_metrics_add_up_its_workers(pair):
    name = "latchkey_http_request_duration_seconds_count"
    time.sleep(PUBLISH_SECONDS + 0.5)  # earlier requests (the readiness probe's) counted
    before = _count(pair.b, name, route="ops.healthz", status="2xx")

    for _ in range(40):  # a new connection each time: the kernel spreads them over workers
        assert requests.get(pair.b.base + "/healthz", timeout=10).status_code == 200

    # Each worker adds its counts to its file within metrics.PUBLISH_SECONDS; a scrape
    # answered by one of them reads every file.
    deadline = time.monotonic() + PUBLISH_SECONDS + 5
    while (seen := _count(pair.b, name, route="ops.healthz", status="2xx")) < before + 40 \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    assert seen == before + 40
    assert pair.b.metrics_dir is not None
    pids = {path.stem.rsplit("_", 1)[-1] for path in pair.b.metrics_dir.glob("histogram_*.db")}
    assert len(pids) == 2, f"expected both workers' files, found {sorted(pids)}"
