"""``latchkey serve`` stopped with SIGTERM, and killed with SIGKILL under load.

SIGTERM (what an orchestrator sends first) must let the requests in flight
finish; SIGKILL mid-load (a crash) must lose nothing a client was told: every
token a client received is recorded and introspects active after a restart.
"""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
import requests
from sqlalchemy import create_engine, text

from portal.core.db import normalise_url
from tests.conftest import postgres_database
from tests.live.servers import Deployment, Server, free_port, make_deployment

pytestmark = pytest.mark.live

LOAD_SECONDS = 2.0
THREADS = 4


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def deployment(request, tmp_path: Path) -> Iterator[tuple[Deployment, str]]:
    """A migrated deployment with one org, on SQLite or PostgreSQL; and its client."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'live.db'}"
        yield _with_client(make_deployment(tmp_path, url))
        return
    with postgres_database() as url:
        yield _with_client(make_deployment(tmp_path, url))


def _with_client(deployment: Deployment) -> tuple[Deployment, str]:
    deployment.cli("create-org", "--name", "Crash", "--slug", "crash", "--alg", "ES256")
    client_id, secret = deployment.create_client("crash")
    return deployment, f"{client_id}:{secret}"


@pytest.fixture
def server(deployment) -> Iterator[Server]:
    with Server(deployment[0], free_port(), "server").running() as server:
        yield server


def _raw_token_request(client: str) -> bytes:
    body = b"grant_type=client_credentials&scope=read"
    credentials = base64.b64encode(client.encode()).decode()
    head = ("POST /oauth/token HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Authorization: Basic {credentials}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode() + body


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def test_sigterm_lets_a_request_in_flight_finish(server, deployment):
    _, client = deployment
    request = _raw_token_request(client)
    split = len(request) - 10  # the last bytes of the body arrive after the SIGTERM
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    try:
        sock.sendall(request[:split])
        time.sleep(0.5)  # a worker is now reading this request
        assert server.process is not None
        server.process.terminate()  # SIGTERM to the server, as an orchestrator sends it
        time.sleep(0.5)
        sock.sendall(request[split:])
        response = _read_all(sock)
    finally:
        sock.close()

    status_line, _, rest = response.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 200"), response[:500]
    assert b'"access_token"' in rest
    assert server.process.wait(timeout=20) == 0  # and then it exits, cleanly
    with pytest.raises(requests.ConnectionError):
        requests.get(server.base + "/healthz", timeout=2)


def _load(server: Server, client: str, received: list[str], stop: threading.Event) -> None:
    client_id, secret = client.split(":", 1)
    http = requests.Session()
    while not stop.is_set():
        try:
            response = http.post(server.base + "/oauth/token",
                                 data={"grant_type": "client_credentials"},
                                 auth=(client_id, secret), timeout=10)
        except requests.RequestException:
            return  # the server died: stop, as a client whose calls now fail
        if response.status_code == 200:
            received.append(response.json()["access_token"])


def test_sigkill_mid_load_loses_no_token_a_client_received(server, deployment):
    dep, client = deployment
    received: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_load, args=(server, client, received, stop))
               for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    time.sleep(LOAD_SECONDS)
    server.kill()  # SIGKILL to the server and its workers, mid-request
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert len(received) >= 20, "too little load to show anything"

    server.start()  # the same database, a new process

    jtis = {jwt.decode(t, options={"verify_signature": False})["jti"] for t in received}
    engine = create_engine(normalise_url(dep.env["LATCHKEY_DATABASE_URL"]))
    try:
        with engine.connect() as conn:
            recorded = {row[0] for row in conn.execute(text("SELECT jti FROM issued_tokens"))}
    finally:
        engine.dispose()
    assert jtis - recorded == set(), f"{len(jtis - recorded)} of {len(jtis)} tokens lost"
    client_id, secret = client.split(":", 1)
    http = requests.Session()
    inactive = [t for t in received
                if not http.post(server.base + "/oauth/introspect", data={"token": t},
                                 auth=(client_id, secret), timeout=10).json()["active"]]
    assert inactive == [], f"{len(inactive)} of {len(received)} received tokens are inactive"
