"""bench/: the ratios the benchmark reports, and the signing ceiling's token response."""

from __future__ import annotations

import base64
import importlib.util
import json
import sys
from pathlib import Path

import jwt
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


run = load("run")
floor_app = load("floor_app")


def result(endpoint: str, rps: float, *, backend: str = "sqlite", adjacent=None):
    return run.Result(backend=backend, worker_class="sync", endpoint=endpoint, concurrency=16,
                      requests=int(rps * 5), seconds=5.0, rps=rps, p50_ms=1.0, p99_ms=2.0,
                      non_2xx=0, socket_errors=0, peak_rss_mb=None, adjacent_floor_rps=adjacent)


def test_a_run_with_floors_around_it_is_measured_against_them_not_the_floor_row():
    floor = result(run.FLOOR.name, 2000.0, backend="-")
    token = result("token (basic)", 900.0, adjacent=1500.0)
    jwks = result("jwks", 1800.0)  # no floors of its own: the floor row's
    run.add_ratios([floor, token, jwks])
    assert (token.floor_rps, token.floor_ratio) == (1500.0, 0.6)
    assert (jwks.floor_rps, jwks.floor_ratio) == (2000.0, 0.9)
    assert floor.floor_ratio == 1.0
    table = run.format_table([floor, token, jwks]).splitlines()
    assert "x floor  floor/s" in table[0]
    cells = table[3].split()  # the token's row: its ratio, then the floor it is of
    assert cells[cells.index("0.60") + 1] == "1500"


def test_without_any_floor_there_is_no_ratio():
    token = result("token (basic)", 900.0)
    run.add_ratios([token])
    assert token.floor_ratio is None and token.floor_rps is None


@pytest.mark.parametrize("alg", floor_app.ALGS)
def test_the_signing_ceiling_answers_a_fresh_signed_token_each_time(alg):
    app = floor_app.create_floor_app()
    wsgi = floor_app.with_sign_ceiling(app, alg)
    statuses = []

    def start_response(status, headers):
        statuses.append((status, dict(headers)))

    environ = {"PATH_INFO": floor_app.SIGN_PATH, "REQUEST_METHOD": "GET"}
    first, second = (json.loads(b"".join(wsgi(environ, start_response))) for _ in range(2))
    assert [s for s, _ in statuses] == ["200 OK", "200 OK"]
    assert statuses[0][1]["Content-Type"] == "application/json"
    token = first["access_token"]
    head = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert head == {"alg": alg, "kid": "bench", "typ": "at+jwt"}
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["jti"] != jwt.decode(second["access_token"],
                                       options={"verify_signature": False})["jti"]
    assert first["token_type"] == "Bearer" and first["expires_in"] == 3600


def test_the_introspection_ceiling_verifies_reads_and_writes_one_event_per_call(tmp_path):
    ceilings = load("ceilings")
    url = f"sqlite:///{tmp_path}/ceiling.db"
    ceilings.create_schema(url)
    wsgi = ceilings.ceiling_app(url, "ES256")
    statuses = []
    environ = {"PATH_INFO": ceilings.CEILING_PATH, "REMOTE_ADDR": "127.0.0.1"}
    answers = [json.loads(b"".join(wsgi(environ, lambda s, h: statuses.append(s))))
               for _ in range(3)]
    assert statuses == ["200 OK"] * 3
    assert answers == [{"active": True, "scope": "read write"}] * 3
    import sqlite3

    conn = sqlite3.connect(tmp_path / "ceiling.db")
    events = conn.execute("SELECT client_id, kind, reason FROM events").fetchall()
    conn.close()
    assert events == [(7, "token_introspected", "active")] * 3
