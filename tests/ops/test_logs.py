"""Logs: one JSON object per line, request ids, and the access log's fields."""

from __future__ import annotations

import json
import logging
import re
from http import HTTPStatus

import pytest

from portal.ops import logs
from portal.ops.middleware import RequestMiddleware
from tests.factories import basic, make_client, make_org

GRANT = {"grant_type": "client_credentials"}
HEX32 = re.compile(r"[0-9a-f]{32}\Z")
#: The access log is off by default (portal.ops.DEFAULTS); these tests read its lines.
ACCESS = {"ACCESS_LOG": True}
JSON = {"LOG_FORMAT": "json", **ACCESS}


@pytest.fixture
def app_config():
    return ACCESS


def json_lines(captured: str) -> list[dict[str, object]]:
    """Every line of the captured stderr, each parsed as one JSON object."""
    return [json.loads(line) for line in captured.splitlines() if line.strip()]


def access_lines(captured: str) -> list[dict[str, object]]:
    return [doc for doc in json_lines(captured) if doc["logger"] == "latchkey.access"]


@pytest.mark.parametrize("app_config", [JSON])
def test_json_format_writes_one_object_per_line_with_the_access_fields(client, capsys):
    capsys.readouterr()

    response = client.get("/healthz?probe=1")

    (line,) = access_lines(capsys.readouterr().err)
    assert line["request_id"] == response.headers["X-Request-Id"]
    assert line["level"] == "INFO" and re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z", line["time"])
    assert (line["method"], line["path"], line["status"]) == ("GET", "/healthz", 200)
    assert isinstance(line["duration_ms"], float) and line["route"] == "ops.healthz"


@pytest.mark.parametrize("app_config", [JSON])
def test_access_log_never_carries_the_query_string(client, capsys):
    capsys.readouterr()

    client.get("/healthz?client_secret=lk_secret_in_a_query")

    assert "lk_secret_in_a_query" not in capsys.readouterr().err


@pytest.mark.parametrize("app_config", [JSON])
def test_fast_path_requests_are_logged_with_their_request_id(client, session, capsys):
    secret, c = make_client(session, make_org(session))
    capsys.readouterr()

    response = client.post("/oauth/token", data=GRANT, headers=basic(c.public_id, secret))

    (line,) = access_lines(capsys.readouterr().err)
    assert response.status_code == HTTPStatus.OK
    assert line["route"] == "oauth.token" and line["status"] == 200
    assert line["request_id"] == response.headers["X-Request-Id"]


@pytest.mark.parametrize("app_config", [{"LOG_FORMAT": "json"}])
def test_access_log_is_off_by_default(client, capsys):
    capsys.readouterr()

    response = client.get("/healthz")

    assert access_lines(capsys.readouterr().err) == []
    assert HEX32.match(response.headers["X-Request-Id"])  # ids stay on


def test_text_format_is_the_default_and_one_line_per_request(client, capsys):
    capsys.readouterr()

    response = client.get("/healthz")

    (line,) = capsys.readouterr().err.splitlines()
    assert f"INFO latchkey.access [{response.headers['X-Request-Id']}] GET /healthz 200 " in line


def test_control_characters_in_a_path_cannot_forge_a_log_line(client, capsys):
    capsys.readouterr()

    client.get("/x%0aFAKE INFO latchkey.access forged")

    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "\\n" in err


# -- request ids -------------------------------------------------------------------------


def test_a_request_id_is_generated_when_no_proxy_is_trusted(client):
    response = client.get("/healthz", headers={"X-Request-Id": "from-the-internet"})

    assert HEX32.match(response.headers["X-Request-Id"])


@pytest.mark.parametrize("app_config", [{**JSON, "PROXY_FIX": 1}])
def test_a_trusted_proxys_request_id_is_kept_and_logged(client, capsys):
    capsys.readouterr()

    response = client.get("/healthz", headers={"X-Request-Id": "edge-4f2a.9"})

    assert response.headers["X-Request-Id"] == "edge-4f2a.9"
    assert access_lines(capsys.readouterr().err)[0]["request_id"] == "edge-4f2a.9"


@pytest.mark.parametrize("app_config", [{"PROXY_FIX": 1, **ACCESS}])
@pytest.mark.parametrize("offered", ["", "a b", "x" * 129, "id\u00e9", "a\"b"])
def test_a_malformed_request_id_from_a_proxy_is_replaced(client, offered):
    response = client.get("/healthz", headers={"X-Request-Id": offered})

    assert HEX32.match(response.headers["X-Request-Id"])


def test_every_kind_of_response_carries_a_request_id(client, session):
    secret, c = make_client(session, make_org(session))
    responses = [
        client.post("/oauth/token", data=GRANT, headers=basic(c.public_id, secret)),  # fast
        client.post("/oauth/token", data=GRANT, headers=basic(c.public_id, "nope")),  # Flask
        client.get("/.well-known/jwks.json"),
        client.get("/.well-known/jwks.json"),  # replayed without Flask
        client.get("/no/such/page"),
        client.get("/oauth/token"),  # 405
        client.get("/signin"),
        client.get("/static/css/latchkey.css"),
    ]

    for response in responses:
        response.close()
    ids = [r.headers.get("X-Request-Id", "") for r in responses]
    assert all(HEX32.match(i) for i in ids) and len(set(ids)) == len(ids)


@pytest.fixture
def failing_app(app):
    def boom() -> str:
        raise RuntimeError("kaboom")

    app.add_url_rule("/boom", "boom", boom)
    return app


@pytest.mark.parametrize("app_config", [JSON])
def test_a_500_shows_logs_and_returns_the_same_request_id(failing_app, capsys):
    capsys.readouterr()

    response = failing_app.test_client().get("/boom")

    request_id = response.headers["X-Request-Id"]
    assert response.status_code == HTTPStatus.INTERNAL_SERVER_ERROR
    assert request_id.encode() in response.data
    lines = json_lines(capsys.readouterr().err)
    (error,) = [doc for doc in lines if doc["level"] == "ERROR"]
    assert error["request_id"] == request_id and "kaboom" in str(error["exc_info"])
    assert [doc["status"] for doc in lines if doc["logger"] == "latchkey.access"] == [500]


# -- what the protocol code tells the middleware -------------------------------------------


def _inner(environ, start_response):
    environ["latchkey.client_id"] = "lkc_abc"
    environ["latchkey.org"] = "org_xyz"
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def test_client_id_and_org_from_the_environ_are_logged(capsys):
    logs.configure(JSON)
    middleware = RequestMiddleware(_inner, proxies=0, access=True)
    capsys.readouterr()

    middleware({"REQUEST_METHOD": "POST", "PATH_INFO": "/oauth/token", "REMOTE_ADDR": "::1"},
               lambda status, headers, exc_info=None: None)

    (line,) = access_lines(capsys.readouterr().err)
    assert (line["client_id"], line["org"], line["remote"]) == ("lkc_abc", "org_xyz", "::1")


def test_behind_a_proxy_the_logged_address_is_the_clients(capsys):
    logs.configure(JSON)
    middleware = RequestMiddleware(_inner, proxies=1, access=True)
    capsys.readouterr()

    middleware({"REQUEST_METHOD": "GET", "PATH_INFO": "/", "REMOTE_ADDR": "127.0.0.1",
                "HTTP_X_FORWARDED_FOR": "198.51.100.7, 203.0.113.4"},
               lambda status, headers, exc_info=None: None)

    assert access_lines(capsys.readouterr().err)[0]["remote"] == "203.0.113.4"


def test_log_format_other_than_text_or_json_is_a_clear_error():
    with pytest.raises(ValueError, match="LOG_FORMAT must be one of text, json, not 'xml'"):
        logs.configure({"LOG_FORMAT": "xml"})


def test_only_one_handler_however_many_apps_are_built(app, another_app):
    another_app(app.config)

    ours = [h for h in logging.getLogger().handlers if getattr(h, "_latchkey", False)]
    assert len(ours) == 1


def test_server_log_config_gives_the_servers_own_lines_the_same_format(capsys):
    import logging.config

    logging.config.dictConfig(logs.server_log_config(JSON))
    capsys.readouterr()

    logging.getLogger("_granian").info("Starting granian")

    (line,) = json_lines(capsys.readouterr().err)
    assert (line["logger"], line["message"]) == ("_granian", "Starting granian")
