"""Shell snippets the portal shows next to clients and tokens, filled in with real values.

Values are quoted for POSIX shells, so a pasted snippet runs as shown.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from portal.core import settings

API_PLACEHOLDER = "https://api.example.com/resource"


@dataclass(frozen=True)
class Snippet:
    id: str
    title: str
    command: str


def _q(value: str) -> str:
    return shlex.quote(value)


def token_snippets(client_id: str, secret: str, *, audience: str | None = None) -> list[Snippet]:
    """Getting a token three ways: Basic auth, a form body, a JSON body."""
    token_url = settings.issuer() + "/oauth/token"
    extra = f" \\\n  -d audience={_q(audience)}" if audience else ""
    body: dict[str, str] = {"grant_type": "client_credentials", "client_id": client_id,
                            "client_secret": secret}
    if audience:
        body["audience"] = audience
    return [
        Snippet("snippet-basic", "Get a token (HTTP Basic)",
                f"curl -s {_q(token_url)} \\\n  -u {_q(client_id + ':' + secret)} \\\n"
                f"  -d grant_type=client_credentials{extra}"),
        Snippet("snippet-form", "Get a token (credentials in the form body)",
                f"curl -s {_q(token_url)} \\\n  -d grant_type=client_credentials \\\n"
                f"  -d client_id={_q(client_id)} \\\n  -d client_secret={_q(secret)}{extra}"),
        Snippet("snippet-json", "Get a token (JSON body)",
                f"curl -s {_q(token_url)} \\\n  -H 'Content-Type: application/json' \\\n"
                f"  -d {_q(json.dumps(body))}"),
    ]


TOKEN_VARIABLE = "$TOKEN"  # noqa: S105 (a shell variable name, not a secret)


def use_snippets(client_id: str, secret: str, token: str | None = None,
                 *, api_url: str | None = None) -> list[Snippet]:
    """Calling an API with a token (default: ``$TOKEN``), and introspecting it."""
    introspect_url = settings.issuer() + "/oauth/introspect"
    if token is None:
        shown, header = TOKEN_VARIABLE, f'"Authorization: Bearer {TOKEN_VARIABLE}"'
    else:
        shown, header = _q(token), _q(f"Authorization: Bearer {token}")
    return [
        Snippet("snippet-call", "Call your API with the token",
                f"curl -s {_q(api_url or API_PLACEHOLDER)} \\\n  -H {header}"),
        Snippet("snippet-introspect", "Introspect the token",
                f"curl -s {_q(introspect_url)} \\\n  -u {_q(client_id + ':' + secret)} \\\n"
                f"  -d token={shown}"),
    ]


def export_token_snippet(client_id: str, secret: str) -> Snippet:
    """Store a fresh token in $TOKEN (needs python3 to read the JSON)."""
    token_url = settings.issuer() + "/oauth/token"
    return Snippet(
        "snippet-export", "Keep a token in $TOKEN",
        f"TOKEN=$(curl -s {_q(token_url)} -u {_q(client_id + ':' + secret)} "
        "-d grant_type=client_credentials \\\n"
        "  | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')",
    )
