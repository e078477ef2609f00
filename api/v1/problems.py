"""RFC 9457 ``application/problem+json`` for every error of ``/api/v1``.

One writer: domain errors (``portal.core.errors``), request validation (pydantic,
through flask-openapi3's ``validation_error_callback``) and HTTP errors (unknown
route, wrong method, refused credentials) all become the same body.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from flask import Response, json
from pydantic import ValidationError

from portal.core.errors import LatchkeyError, ValidationFailed

PROBLEM_TYPE = "https://latchkey.dev/problems/"
MEDIA_TYPE = "application/problem+json"


def problem(status: int, *, code: str, detail: str,
            errors: list[dict[str, str]] | None = None,
            headers: dict[str, str] | None = None, **extra: Any) -> Response:
    """A problem response: ``type`` names the stable error code, ``title`` the status."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE + code,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if errors:
        body["errors"] = errors
    body.update(extra)
    response = Response(json.dumps(body), status=status, mimetype=MEDIA_TYPE)
    response.headers["Cache-Control"] = "no-store"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "body"


def from_validation_error(e: ValidationError) -> Response:
    """A request that does not fit its schema: 400, one entry per invalid field."""
    errors = []
    for item in e.errors(include_url=False, include_context=False, include_input=False):
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        errors.append({"field": _location(item["loc"]), "message": message})
    names = ", ".join(dict.fromkeys(err["field"] for err in errors))
    return problem(400, code="validation_failed", detail=f"invalid fields: {names}",
                   errors=errors)


def from_domain_error(e: LatchkeyError) -> Response:
    """A domain refusal at its own status; a bad field is named in ``errors``."""
    errors = None
    field = getattr(e, "field", None)
    if isinstance(e, ValidationFailed):
        errors = [{"field": field or "body", "message": e.message}]
    status = e.http_status if 400 <= e.http_status < 600 else 400
    return problem(status, code=e.code, detail=e.message, errors=errors)
