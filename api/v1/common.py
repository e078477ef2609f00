"""The ``/api/v1`` blueprint and what its views share: responses, ETags, the session."""

from __future__ import annotations

import hashlib
from http import HTTPStatus
from typing import Any

from flask import Response, json
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel

from api.v1.problems import MEDIA_TYPE, problem
from portal.core.db import get_session

PREFIX = "/api/v1"


def _operation_id(name: str, path: str, method: str) -> str:
    """Operation ids are the view functions' names (what a generated client calls)."""
    return name


def _problem_response(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}}


#: Every operation may answer these (the reference page lists them once per operation).
COMMON_RESPONSES: dict[str | int | HTTPStatus, Any] = {
    400: _problem_response("Invalid input: errors names each field"),
    401: _problem_response("No API key, or an unknown or revoked one"),
    403: _problem_response("The API key's role is too weak"),
    404: _problem_response("No such object in this organisation"),
    429: _problem_response("Too many requests with this API key; see Retry-After"),
}

bp = APIBlueprint(
    "api_v1", __name__, url_prefix=PREFIX,
    abp_security=[{"apiKey": []}],
    abp_responses=COMMON_RESPONSES,
    operation_id_callback=_operation_id,
)

CLIENTS = Tag(name="clients", description="OAuth clients, their secrets and tokens")
APIS = Tag(name="apis", description="Registered APIs (token audiences) and their scopes")
HISTORY = Tag(name="history", description="Usage and the audit log")
KEYS = Tag(name="signing-keys", description="The org's token signing keys")


def problems(*codes: int, **described: str) -> dict[str | int, Any]:
    """Problem responses of one operation beyond :data:`COMMON_RESPONSES`."""
    names = {409: "Conflict with the current state", 412: "If-Match does not match the ETag",
             406: "Not an acceptable media type"}
    return {code: _problem_response(described.get(f"s{code}", names.get(code, "Refused")))
            for code in codes}


def session() -> Any:
    return get_session()


def respond(model: BaseModel, status: int = 200, *, etag: bool = False,
         headers: dict[str, str] | None = None) -> Response:
    """``model`` as the JSON response (with its ETag when asked)."""
    text = model.model_dump_json()
    response = Response(text, status=status, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    if etag:
        response.headers["ETag"] = etag_of(model)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def no_content() -> Response:
    response = Response(status=204)
    response.headers["Cache-Control"] = "no-store"
    return response


def etag_of(model: BaseModel) -> str:
    """A strong ETag of the representation (RFC 9110 §8.8.3)."""
    digest = hashlib.sha256(json.dumps(model.model_dump(mode="json"), sort_keys=True)
                            .encode()).hexdigest()
    return f'"{digest[:32]}"'


def precondition_failed(if_match: str | None, current: BaseModel) -> Response | None:
    """412 when ``If-Match`` names another version than ``current`` (RFC 9110 §13.1.1)."""
    if if_match is None or if_match.strip() == "*":
        return None
    tags = [t.strip() for t in if_match.split(",")]  # strong comparison: W/ never matches
    if etag_of(current) in tags:
        return None
    return problem(412, code="precondition_failed",
                   detail="the object changed since that ETag: GET it again and retry")
