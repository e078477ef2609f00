"""Shell snippets the portal shows next to clients and tokens, filled in with real values.

Values are quoted for POSIX shells, so a pasted snippet runs as shown.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING

from portal.core import settings

if TYPE_CHECKING:
    from portal.core.apis.models import Api

#: What the "call your API" snippet calls when the API's identifier is not a URL
#: (``urn:…``): a shell variable the snippet tells the reader to set.
API_URL_VARIABLE = "$API_URL"


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


def is_url(identifier: str | None) -> bool:
    """Whether an API identifier is an address curl can call (http or https)."""
    return bool(identifier) and str(identifier).startswith(("https://", "http://"))


def use_snippets(client_id: str, secret: str, token: str | None = None,
                 *, audience: str | None = None) -> list[Snippet]:
    """Calling the token's API with it (default: ``$TOKEN``), and introspecting it.

    The API is ``audience``, the client's own API identifier: called as is when it is
    a URL; otherwise (``urn:…``, or none) through ``$API_URL``, which the snippet
    says to set to where that API answers.
    """
    introspect_url = settings.issuer() + "/oauth/introspect"
    if token is None:
        shown, header = TOKEN_VARIABLE, f'"Authorization: Bearer {TOKEN_VARIABLE}"'
    else:
        shown, header = _q(token), _q(f"Authorization: Bearer {token}")
    if audience and is_url(audience):
        call = f"curl -s {_q(audience)} \\\n  -H {header}"
    else:
        where = f"API {audience}" if audience else "API"
        call = (f"# API_URL: the address where your {where} answers\n"
                f'curl -s "{API_URL_VARIABLE}" \\\n  -H {header}')
    return [
        Snippet("snippet-call", "Call your API with the token", call),
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


def quickstart_snippets(client_id: str | None) -> list[Snippet]:
    """The getting-started panel's two steps: the credentials into the shell (the client
    id filled in when there is a client), then a token from this server's endpoint."""
    token_url = settings.issuer() + "/oauth/token"
    shown_id = _q(client_id) if client_id else "'lkc_…'  # the Client ID from step 2"
    return [
        Snippet("quickstart-credentials", "Put the client's credentials in your shell",
                f"export CLIENT_ID={shown_id}\n"
                "export CLIENT_SECRET='paste the secret here'  # shown once, when created"),
        Snippet("quickstart-token", "Get a token",
                'curl -s -u "$CLIENT_ID:$CLIENT_SECRET" \\\n'
                f"  -d grant_type=client_credentials \\\n  {_q(token_url)}"),
    ]


# -- validating tokens in a resource server (an API's page) ----------------------------

#: The algorithms this server signs with (a verifier should accept no other).
SIGNING_ALGS = ("RS256", "ES256", "EdDSA")


def _python_literal(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid Python string literal


def validation_snippets(api: Api, *, org_public_id: str) -> list[Snippet]:
    """Complete programs that validate an access token for ``api`` exactly as it should
    be validated: signature against the JWKS, ``typ`` at+jwt, ``iss``, ``aud`` = the
    API's identifier, ``exp`` (required), ``oid``, and a scope when asked for.

    An org's API accepts only its org's ``oid``; a deployment API serves every org,
    so it requires an ``oid`` and must use it to choose whose data to serve.
    """
    issuer = settings.issuer()
    algs = ", ".join(json.dumps(a) for a in SIGNING_ALGS)
    shared = api.org_id is None
    if shared:
        py_oid = (
            '    org_id = claims.get("oid")\n'
            "    if not isinstance(org_id, str) or not org_id:\n"
            '        raise jwt.InvalidTokenError("no oid: no organisation to act for")\n'
            "    # A shared API: every organisation's tokens are valid here. Serve only\n"
            '    # the data of claims["oid"], and never take the organisation from elsewhere.\n')
        js_oid = (
            '  if (typeof payload.oid !== "string" || !payload.oid) {\n'
            '    throw new Error("no oid: no organisation to act for");\n'
            "  }\n"
            "  // A shared API: every organisation's tokens are valid here. Serve only\n"
            "  // the data of payload.oid, and never take the organisation from elsewhere.\n")
        py_org = js_org = ""
    else:
        py_oid = ('    if claims.get("oid") != ORG_ID:\n'
                  '        raise jwt.InvalidTokenError("token of another organisation")\n')
        js_oid = ("  if (payload.oid !== ORG_ID) {\n"
                  '    throw new Error("token of another organisation");\n'
                  "  }\n")
        py_org = f"ORG_ID = {_python_literal(org_public_id)}  # your organisation (oid)\n"
        js_org = f"const ORG_ID = {json.dumps(org_public_id)}; // your organisation (oid)\n"
    python = (
        '# pip install "pyjwt[crypto]"    then: python verify_token.py "$TOKEN" [scope]\n'
        "import sys\n\n"
        "import jwt\n\n"
        f"ISSUER = {_python_literal(issuer)}\n"
        f"AUDIENCE = {_python_literal(api.identifier)}  # this API's identifier\n"
        f"{py_org}"
        'jwks = jwt.PyJWKClient(ISSUER + "/.well-known/jwks.json")\n\n\n'
        "def verify(token, scope=None):\n"
        '    """The claims of a valid access token for this API; else jwt.InvalidTokenError."""\n'
        '    if jwt.get_unverified_header(token).get("typ") != "at+jwt":\n'
        '        raise jwt.InvalidTokenError("not an access token (typ must be at+jwt)")\n'
        "    key = jwks.get_signing_key_from_jwt(token)\n"
        "    claims = jwt.decode(\n"
        f"        token, key.key, algorithms=[{algs}],\n"
        "        issuer=ISSUER, audience=AUDIENCE,\n"
        '        options={"require": ["iss", "aud", "exp", "iat", "sub", "jti"]},\n'
        "    )\n"
        f"{py_oid}"
        '    if scope is not None and scope not in claims.get("scope", "").split():\n'
        '        raise jwt.InvalidTokenError("missing scope " + scope)\n'
        "    return claims\n\n\n"
        'if __name__ == "__main__":\n'
        "    try:\n"
        "        print(verify(sys.argv[1], *sys.argv[2:3]))\n"
        "    except jwt.PyJWTError as e:\n"
        '        sys.exit(f"refused: {e}")\n'
    )
    node = (
        '// npm install jose    then: node verify_token.mjs "$TOKEN" [scope]\n'
        'import { createRemoteJWKSet, jwtVerify } from "jose";\n'
        'import { fileURLToPath } from "node:url";\n\n'
        f"const ISSUER = {json.dumps(issuer)};\n"
        f"const AUDIENCE = {json.dumps(api.identifier)}; // this API's identifier\n"
        f"{js_org}"
        'const JWKS = createRemoteJWKSet(new URL(ISSUER + "/.well-known/jwks.json"));\n\n'
        "// The claims of a valid access token for this API; throws otherwise.\n"
        "export async function verify(token, scope) {\n"
        "  const { payload } = await jwtVerify(token, JWKS, {\n"
        "    issuer: ISSUER,\n"
        "    audience: AUDIENCE,\n"
        '    typ: "at+jwt",\n'
        f"    algorithms: [{algs}],\n"
        '    requiredClaims: ["iss", "aud", "exp", "iat", "sub", "jti"],\n'
        "  });\n"
        f"{js_oid}"
        '  if (scope && !String(payload.scope ?? "").split(" ").includes(scope)) {\n'
        "    throw new Error(`missing scope ${scope}`);\n"
        "  }\n"
        "  return payload;\n"
        "}\n\n"
        "if (process.argv[1] === fileURLToPath(import.meta.url)) {\n"
        "  verify(process.argv[2], process.argv[3]).then(\n"
        "    (claims) => console.log(JSON.stringify(claims)),\n"
        "    (error) => { console.error(`refused: ${error.message}`); process.exit(1); },\n"
        "  );\n"
        "}\n"
    )
    return [
        Snippet("snippet-verify-python", "Python (PyJWT), verify_token.py", python),
        Snippet("snippet-verify-node", "Node.js (jose), verify_token.mjs", node),
    ]
