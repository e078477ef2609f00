"""The curl snippets shown with a new client's secret, run as shown with the real ``curl``.

A real HTTP server (werkzeug, in a thread) serves the app with ``ISSUER`` set
to its own URL; a ``requests`` session signs in and creates the client through
the portal's forms, exactly as a browser without JavaScript would.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from typing import Any

import pytest
import requests

from tests.factories import PASSWORD, make_api, make_org, make_user

pytestmark = pytest.mark.live

CURL = shutil.which("curl")
API_URL = "https://api.curl-org.test"


class _Form(HTMLParser):
    """Hidden inputs of the form posting to ``action``, and every textarea by id."""

    def __init__(self, action: str) -> None:
        super().__init__()
        self.action, self.inside, self.hidden = action, False, {}
        self.textareas: dict[str, str] = {}
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form":
            self.inside = a.get("action") == self.action
        elif tag == "input" and self.inside and a.get("type") == "hidden" and a.get("name"):
            self.hidden[a["name"]] = a.get("value") or ""
        elif tag == "textarea" and a.get("id"):
            self._textarea = a["id"]
            self.textareas[self._textarea] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self.textareas[self._textarea] += data


def parse(page: str, action: str = "") -> _Form:
    form = _Form(action)
    form.feed(page)
    return form


def snippet_text(page: str, snippet_id: str) -> str:
    """A snippet exactly as the page shows it (the textarea's text, entities decoded)."""
    match = re.search(rf'<textarea id="{snippet_id}"[^>]*>(.*?)</textarea>', page, re.S)
    assert match, f"the page shows no {snippet_id}"
    return html.unescape(match.group(1))


def run_shell(command: str) -> dict[str, Any]:
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


@pytest.fixture
def created_page(live_server: str, session) -> str:
    """Sign in as an admin and create a client; the page that shows its secret once."""
    org = make_org(session, name="Curl Org")
    api = make_api(session, org, identifier=API_URL, scopes=("read", "write"))
    user = make_user(session, org=org, role="admin")
    http = requests.Session()
    signin = http.get(live_server + "/signin", timeout=10).text
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', signin)
    assert token
    signed_in = http.post(live_server + "/signin", timeout=10, data={
        "email": user.email, "password": PASSWORD, "csrf_token": token.group(1)})
    assert signed_in.url.endswith("/clients"), signed_in.text[:500]

    form = parse(http.get(live_server + "/clients/new", timeout=10).text, "/clients/new").hidden
    response = http.post(live_server + "/clients/new", timeout=10, data={
        **form, "name": "curl-check", "api": api.public_id,
        f"scopes-{api.public_id}": ["read", "write"], "ttl": "600", "kind": "org",
        "auth_methods": ["client_secret_basic", "client_secret_post"]})
    assert response.status_code == 200, response.text[:2000]
    assert response.headers["Cache-Control"] == "no-store"
    return response.text


@pytest.mark.skipif(CURL is None, reason="the curl binary is not installed")
def test_basic_snippet_gets_a_token_from_the_live_server(live_server, created_page):
    command = snippet_text(created_page, "snippet-basic")
    assert command.startswith(f"curl -s {live_server}/oauth/token")

    body = run_shell(command)

    assert body["token_type"] == "Bearer" and body["expires_in"] == 600
    assert body["access_token"].count(".") == 2


@pytest.mark.skipif(CURL is None, reason="the curl binary is not installed")
def test_json_and_form_snippets_get_tokens_too(live_server, created_page):
    for snippet_id in ("snippet-json", "snippet-form"):
        body = run_shell(snippet_text(created_page, snippet_id))

        assert body["access_token"].count(".") == 2, snippet_id


@pytest.mark.skipif(CURL is None, reason="the curl binary is not installed")
def test_export_then_introspect_snippets_chain(live_server, created_page):
    script = "\n".join([snippet_text(created_page, "snippet-export"),
                        snippet_text(created_page, "snippet-introspect")])

    body = run_shell(script)

    assert body["active"] is True and body["scope"] == "read write"
    assert body["iss"] == live_server


def test_call_snippet_calls_the_clients_own_api(created_page):
    command = snippet_text(created_page, "snippet-call")

    assert command == f'curl -s {API_URL} \\\n  -H "Authorization: Bearer $TOKEN"'


@pytest.mark.skipif(CURL is None, reason="the curl binary is not installed")
def test_getting_started_steps_get_a_token_from_the_live_server(live_server, created_page):
    from portal.views.snippets import quickstart_snippets

    client_id = html.unescape(
        re.search(r'<input id="client-id"[^>]*value="([^"]+)"', created_page).group(1))
    secret = html.unescape(
        re.search(r'<input id="client-secret"[^>]*value="([^"]+)"', created_page).group(1))
    credentials, token = quickstart_snippets(client_id)
    assert token.command.endswith(f"{live_server}/oauth/token")

    # Step 2 pasted with the secret in its place, then step 3, as a user would.
    body = run_shell(credentials.command.replace("paste the secret here", secret)
                     + "\n" + token.command)

    assert body["token_type"] == "Bearer" and body["access_token"].count(".") == 2
