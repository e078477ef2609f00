"""``/metrics``: Prometheus text that prometheus-client's parser reads, who may scrape it,
what it counts, and labels that stay bounded."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from http import HTTPStatus

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from portal.core.clients import services as clients
from portal.core.db import get_engine, get_session
from portal.core.signing_keys.models import KeyState, SigningKey
from portal.core.types import utcnow
from portal.ops import metrics
from tests.factories import (
    TEST_ACTOR,
    basic,
    bearer,
    get_token,
    make_api_key,
    make_client,
    make_org,
)
from tests.ops.conftest import scrape, value

GRANT = {"grant_type": "client_credentials"}
LATENCY = "latchkey_http_request_duration_seconds_count"


def test_scrape_is_prometheus_text_with_every_family(client, org):
    response = client.get("/metrics")

    assert response.status_code == HTTPStatus.OK
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.headers["Cache-Control"] == "no-store"
    families = {f.name for f in text_string_to_metric_families(response.get_data(as_text=True))}
    assert {
        "latchkey_tokens_issued", "latchkey_token_requests_refused",
        "latchkey_introspections", "latchkey_revocations",
        "latchkey_database_errors", "latchkey_http_request_duration_seconds",
        "latchkey_org_signing_key_age_seconds", "latchkey_signing_key_max_age_seconds",
        "latchkey_client_secrets_expiring_soon", "latchkey_org_client_secrets_expiring_soon",
        "latchkey_orgs", "latchkey_orgs_without_signing_key", "latchkey_database_up",
    } <= families


# -- who may scrape ----------------------------------------------------------------------


def test_without_a_token_loopback_may_scrape(client):
    assert client.get("/metrics").status_code == HTTPStatus.OK
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200


def test_without_a_token_other_addresses_are_refused(client):
    response = client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.9"})

    assert response.status_code == HTTPStatus.FORBIDDEN
    assert b"latchkey_" not in response.data


@pytest.mark.parametrize("app_config", [{"PROXY_FIX": 1}])
def test_behind_a_proxy_on_loopback_the_clients_address_counts(client):
    # The proxy connects from 127.0.0.1; the caller it forwards is not loopback.
    response = client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})

    assert response.status_code == HTTPStatus.FORBIDDEN


@pytest.mark.parametrize("app_config", [{"METRICS_TOKEN": "m-token-123"}])
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": "Basic m-token-123"}])
def test_with_a_token_set_anything_else_is_401(client, headers):
    response = client.get("/metrics", headers=headers)

    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"latchkey_" not in response.data


@pytest.mark.parametrize("app_config", [{"METRICS_TOKEN": "m-token-123"}])
def test_with_a_token_set_the_bearer_may_scrape_from_anywhere(client):
    response = client.get("/metrics", headers={"Authorization": "Bearer m-token-123"},
                          environ_base={"REMOTE_ADDR": "203.0.113.9"})

    assert response.status_code == HTTPStatus.OK


# -- request latency per route -----------------------------------------------------------


def test_fast_path_token_requests_are_timed_under_their_route(client, org):
    secret, c = make_client(get_session(), org)
    before = value(scrape(client), LATENCY, route="oauth.token", status="2xx")

    get_token(client, c, secret)

    assert value(scrape(client), LATENCY, route="oauth.token", status="2xx") == before + 1


def test_replayed_jwks_responses_are_timed_too(client, org):
    before = value(scrape(client), LATENCY, route="wellknown.jwks", status="2xx")

    for _ in range(3):  # the first through Flask, the others replayed before it
        assert client.get("/.well-known/jwks.json").status_code == HTTPStatus.OK

    assert value(scrape(client), LATENCY, route="wellknown.jwks", status="2xx") == before + 3


def test_portal_pages_are_timed_under_their_endpoint_name(client):
    before = value(scrape(client), LATENCY, route="portal.signin", status="2xx")

    client.get("/signin")

    assert value(scrape(client), LATENCY, route="portal.signin", status="2xx") == before + 1


def test_unmatched_paths_share_one_route_and_never_appear_in_labels(client):
    before = value(scrape(client), LATENCY, route="unmatched", status="4xx")

    client.get("/no/such/page-x7q2")

    response = client.get("/metrics")
    assert b"page-x7q2" not in response.data
    assert value(scrape(client), LATENCY, route="unmatched", status="4xx") == before + 1


def test_latency_lands_in_a_bucket(client):
    client.get("/healthz")

    samples = scrape(client)
    count = value(samples, LATENCY, route="ops.healthz", status="2xx")
    inf = value(samples, "latchkey_http_request_duration_seconds_bucket",
                route="ops.healthz", status="2xx", le="+Inf")
    assert count >= 1 and inf == count


# -- the counting functions (the protocol code calls them) --------------------------------


def test_counting_functions_add_to_their_series(client):
    before = scrape(client)

    metrics.token_issued("client_secret_basic")
    metrics.token_refused("invalid_client", "client_secret_post")
    metrics.token_refused("invalid_request", None)
    metrics.introspected(True)
    metrics.introspected(False)
    metrics.revoked()

    after = scrape(client)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("latchkey_tokens_issued_total", auth_method="client_secret_basic") == 1
    assert grew("latchkey_token_requests_refused_total", error="invalid_client",
                auth_method="client_secret_post") == 1
    assert grew("latchkey_token_requests_refused_total", error="invalid_request",
                auth_method="none") == 1
    assert grew("latchkey_introspections_total", result="active") == 1
    assert grew("latchkey_introspections_total", result="inactive") == 1
    assert grew("latchkey_revocations_total") == 1


def test_label_values_outside_the_known_sets_count_as_other(client):
    before = value(scrape(client), "latchkey_token_requests_refused_total", error="other",
                   auth_method="other")

    metrics.token_refused("<script>", "x" * 500)
    metrics.token_issued("made_up")

    response = client.get("/metrics")
    assert b"<script>" not in response.data and b"made_up" not in response.data
    assert value(scrape(client), "latchkey_token_requests_refused_total", error="other",
                 auth_method="other") == before + 1


def test_database_errors_are_counted_but_constraint_violations_are_not(client, session, org):
    before = value(scrape(client), "latchkey_database_errors_total")
    with pytest.raises(SQLAlchemyError):
        session.execute(text("SELECT * FROM no_such_table"))
    session.rollback()
    key = session.scalars(select(SigningKey)).first()
    with pytest.raises(IntegrityError):
        session.add(SigningKey(org_id=org.id, kid=key.kid, alg="RS256", state=KeyState.NEXT,
                               public_jwk={}, private_key_ciphertext=b"x"))
        session.flush()
    session.rollback()

    assert value(scrape(client), "latchkey_database_errors_total") == before + 1


# -- wired by the protocol code (issue 13) -------------------------------------------------

def test_tokens_issued_at_the_endpoint_are_counted_by_auth_method(client, org):
    secret, c = make_client(get_session(), org)
    before = value(scrape(client), "latchkey_tokens_issued_total",
                   auth_method="client_secret_basic")

    get_token(client, c, secret)

    assert value(scrape(client), "latchkey_tokens_issued_total",
                 auth_method="client_secret_basic") == before + 1


def test_refused_token_requests_are_counted_by_error_and_auth_method(client, org):
    secret, c = make_client(get_session(), org)
    labels = {"error": "invalid_client", "auth_method": "client_secret_basic"}
    before = value(scrape(client), "latchkey_token_requests_refused_total", **labels)

    client.post("/oauth/token", data=GRANT, headers=basic(c.public_id, secret + "x"))

    assert value(scrape(client), "latchkey_token_requests_refused_total", **labels) == before + 1


def test_introspections_are_counted_by_result(client, org):
    secret, c = make_client(get_session(), org)
    token = get_token(client, c, secret)
    api_key, _ = make_api_key(get_session(), org)
    before = scrape(client)

    client.post("/oauth/introspect", data={"token": token}, headers=basic(c.public_id, secret))
    client.post("/oauth/introspect", data={"token": "junk"}, headers=bearer(api_key))

    after = scrape(client)
    for result in ("active", "inactive"):
        assert value(after, "latchkey_introspections_total", result=result) == \
            value(before, "latchkey_introspections_total", result=result) + 1


def test_revocations_are_counted(client, org):
    secret, c = make_client(get_session(), org)
    token = get_token(client, c, secret)
    before = value(scrape(client), "latchkey_revocations_total")

    client.post("/oauth/revoke", data={"token": token}, headers=basic(c.public_id, secret))

    assert value(scrape(client), "latchkey_revocations_total") == before + 1


# -- gauges read from the database at scrape time -------------------------------------------


def test_each_orgs_active_key_age_is_reported(client, session):
    old, new = make_org(session, slug="old-org"), make_org(session, slug="new-org")
    key = session.scalar(select(SigningKey).where(SigningKey.org_id == old.id,
                                                  SigningKey.state == KeyState.ACTIVE))
    key.activated_at = utcnow() - timedelta(days=30)
    session.commit()

    samples = scrape(client)

    age = value(samples, "latchkey_org_signing_key_age_seconds", org="old-org")
    assert 30 * 86400 <= age < 30 * 86400 + 60
    assert 0 <= value(samples, "latchkey_org_signing_key_age_seconds", org="new-org") < 60
    assert value(samples, "latchkey_signing_key_max_age_seconds") == pytest.approx(age, abs=5)
    assert value(samples, "latchkey_orgs") == 2 and new.slug == "new-org"


@pytest.mark.parametrize("app_config", [{"METRICS_ORG_SERIES": 1}])
def test_per_org_series_are_limited_to_the_oldest_keys(client, session):
    make_org(session, slug="first-org")
    make_org(session, slug="second-org")

    samples = scrape(client)

    labelled = {labels for name, labels in samples
                if name == "latchkey_org_signing_key_age_seconds"}
    assert labelled == {(("org", "first-org"),)}
    assert value(samples, "latchkey_orgs") == 2


def test_orgs_without_an_active_key_are_counted(client, session, org):
    session.execute(text("UPDATE signing_keys SET state = 'retired' WHERE org_id = :id"),
                    {"id": org.id})
    session.commit()

    assert value(scrape(client), "latchkey_orgs_without_signing_key") == 1


def test_secrets_expiring_within_seven_days_are_counted_per_org(client, session):
    soon, later = make_org(session, slug="soon-org"), make_org(session, slug="later-org")
    _, c = make_client(session, soon)
    now = utcnow()
    clients.add_secret(session, c, expires_at=now + timedelta(days=3), actor=TEST_ACTOR)
    clients.add_secret(session, c, expires_at=now + timedelta(days=10), actor=TEST_ACTOR)
    _, revoked = clients.add_secret(session, c, expires_at=now + timedelta(days=2),
                                    actor=TEST_ACTOR)
    session.flush()
    clients.revoke_secret(session, c, secret_id=revoked.id, actor=TEST_ACTOR)
    _, other = make_client(session, later)
    clients.add_secret(session, other, expires_at=now + timedelta(days=8), actor=TEST_ACTOR)
    session.commit()

    samples = scrape(client)

    assert value(samples, "latchkey_org_client_secrets_expiring_soon", org="soon-org") == 1
    assert value(samples, "latchkey_org_client_secrets_expiring_soon", org="later-org") == 0
    assert value(samples, "latchkey_client_secrets_expiring_soon") == 1


def test_scrape_reads_no_transaction_into_the_request_session(client, org):
    scrape(client)

    assert not get_engine().pool.checkedout()


# -- multi-process mode ------------------------------------------------------------------


@pytest.fixture
def multiprocess_dir(tmp_path, monkeypatch):
    """Multi-process mode in this process for one test, with a stale file to clear."""
    path = tmp_path / "metrics"
    path.mkdir()
    (path / "counter_1.db").write_bytes(b"stale")
    monkeypatch.setenv(metrics.ENV_DIR, str(path))
    yield path
    monkeypatch.delenv(metrics.ENV_DIR)
    metrics.install()  # back to counting in memory for the tests that follow


def test_prepare_multiprocess_dir_empties_the_dir_and_exports_it(multiprocess_dir):
    path = metrics.prepare_multiprocess_dir({})

    assert path == multiprocess_dir and os.environ[metrics.ENV_DIR] == str(path)
    assert not (path / "counter_1.db").exists()


def test_prepare_multiprocess_dir_refuses_a_dir_holding_other_files(multiprocess_dir):
    (multiprocess_dir / "latchkey.db").write_bytes(b"SQLite format 3")

    with pytest.raises(ValueError, match="must be a directory for metrics only; it holds "
                                         "latchkey.db"):
        metrics.prepare_multiprocess_dir({})
    assert (multiprocess_dir / "latchkey.db").exists()


def test_prepare_multiprocess_dir_makes_a_private_dir_when_none_is_named(monkeypatch):
    monkeypatch.delenv(metrics.ENV_DIR, raising=False)
    try:
        path = metrics.prepare_multiprocess_dir({})
        assert path.is_dir() and os.environ[metrics.ENV_DIR] == str(path)
        assert oct(path.stat().st_mode & 0o777) == "0o700"
    finally:
        os.environ.pop(metrics.ENV_DIR, None)
        metrics.remove_multiprocess_dir(path)
        metrics.install()


def test_a_private_dir_lives_as_long_as_the_server(monkeypatch):
    monkeypatch.delenv(metrics.ENV_DIR, raising=False)
    try:
        with metrics.multiprocess_metrics({}) as path:
            metrics.revoked()
            assert list(path.glob("counter_*.db"))
        assert not path.exists()
    finally:
        os.environ.pop(metrics.ENV_DIR, None)
        metrics.install()


def test_every_processs_counts_add_up_in_one_scrape(client, multiprocess_dir):
    metrics.prepare_multiprocess_dir({})
    metrics.revoked()
    metrics.revoked()
    # Another worker: a separate process counting into the same directory.
    subprocess.run([sys.executable, "-c", "from portal.ops import metrics; "
                    "[metrics.revoked() for _ in range(3)]"],
                   check=True, env=os.environ.copy(), timeout=60)

    assert value(scrape(client), "latchkey_revocations_total") == 5


def test_latency_counted_in_bulk_lands_where_each_observation_would(client, multiprocess_dir):
    """The hot paths' counts are added to the histogram in bulk: every bucket, the count
    and the sum are what one ``observe`` per request gives (a bound is its own bucket's)."""
    metrics.prepare_multiprocess_dir({})
    durations = [0.0004, 0.001, 0.0011, 0.003, 0.003, 0.049, 0.7, 12.0]
    for seconds in durations:
        metrics.observe_request("oauth.token", 200, seconds)

    samples = scrape(client)  # this process's counts are in its scrape at once

    def bucket(le: str) -> float:
        return value(samples, "latchkey_http_request_duration_seconds_bucket",
                     route="oauth.token", status="2xx", le=le)

    bounds = {"0.001": 0.001, "0.0025": 0.0025, "0.005": 0.005, "0.05": 0.05, "1.0": 1.0,
              "10.0": 10.0, "+Inf": float("inf")}
    for le, bound in bounds.items():
        assert bucket(le) == sum(1 for d in durations if d <= bound), le
    assert value(samples, LATENCY, route="oauth.token", status="2xx") == len(durations)
    assert value(samples, "latchkey_http_request_duration_seconds_sum", route="oauth.token",
                 status="2xx") == pytest.approx(sum(durations))


def test_another_processs_hot_counts_reach_a_scrape_within_a_second_and_at_its_exit(
        client, multiprocess_dir, tmp_path):
    metrics.prepare_multiprocess_dir({})
    name = "latchkey_tokens_issued_total"
    started = tmp_path / "counted"
    # A worker that counts and goes on living, then one that counts and exits at once.
    living = subprocess.Popen([sys.executable, "-c", (
        "import pathlib, time; from portal.ops import metrics; "
        "[metrics.token_issued('client_secret_basic') for _ in range(3)]; "
        f"pathlib.Path({str(started)!r}).touch(); time.sleep(60)")], env=os.environ.copy())
    try:
        deadline = time.monotonic() + 30
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        seen, waited = 0.0, time.monotonic()
        while seen < 3 and time.monotonic() - waited < metrics.PUBLISH_SECONDS + 5:
            seen = value(scrape(client), name, auth_method="client_secret_basic")
            time.sleep(0.1)
        assert seen == 3
    finally:
        living.kill()
        living.wait(timeout=30)
    subprocess.run([sys.executable, "-c", "from portal.ops import metrics; "
                    "[metrics.token_issued('client_secret_basic') for _ in range(2)]"],
                   check=True, env=os.environ.copy(), timeout=60)

    assert value(scrape(client), name, auth_method="client_secret_basic") == 5


def test_a_request_is_answered_even_when_its_metrics_cannot_be_written(client, multiprocess_dir):
    import shutil

    metrics.prepare_multiprocess_dir({})
    shutil.rmtree(multiprocess_dir)  # say, a cleaner removed the directory

    response = client.get("/healthz")

    assert response.status_code == HTTPStatus.OK
