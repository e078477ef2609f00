"""The management REST API, ``/api/v1``: org API keys as Bearer credentials, JSON in and
out, RFC 9457 problems, and an OpenAPI 3.1 document generated from the same pydantic
models that validate the requests (flask-openapi3).

Registered by ``create_app`` with :func:`init_app`; creates no app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Response, g

from api.v1 import apis, clients, docs, history, keys  # noqa: F401 (they add the routes)
from api.v1.auth import authenticate, empty_body_is_an_empty_object, refuse_nul
from api.v1.common import PREFIX, bp
from api.v1.problems import from_domain_error, from_validation_error, problem
from portal.core.errors import LatchkeyError

if TYPE_CHECKING:
    from flask import Flask
    from werkzeug.exceptions import HTTPException

__all__ = ["PREFIX", "bp", "http_problem", "init_app", "wants_problem"]

bp.before_request(authenticate)
bp.before_request(refuse_nul)
bp.before_request(empty_body_is_an_empty_object)


@bp.errorhandler(LatchkeyError)
def domain_error(e: LatchkeyError) -> Response:
    """A refusal undoes whatever the service had flushed: nothing is half-written."""
    session = g.get("db_session")
    if session is not None:
        session.rollback()
    return from_domain_error(e)



def wants_problem(path: str) -> bool:
    """Whether an error at ``path`` is answered as problem+json."""
    return path == PREFIX or path.startswith(PREFIX + "/")


def http_problem(e: HTTPException) -> Response:
    """An HTTP error (unknown route, wrong method, body too large) as a problem."""
    code = e.code or 500
    headers = {}
    if code == 405:
        allow = e.get_response().headers.get("Allow")
        if allow:
            headers["Allow"] = allow
    return problem(code, code="not_found" if code == 404 else e.name.lower().replace(" ", "_"),
                   detail=e.description or e.name, headers=headers)


def init_app(app: Flask) -> None:
    """Register the blueprint; pydantic's refusals become 400 problems (flask-openapi3 reads
    the callback from the app)."""
    app.validation_error_callback = from_validation_error  # type: ignore[attr-defined]
    app.register_blueprint(bp)
