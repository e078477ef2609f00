"""The OpenAPI 3.1 document (``/api/v1/openapi.json``) and its reference page
(``/api/v1/docs``: Swagger UI from the ``flask-openapi3-swagger`` package, served from
here, no CDN)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import flask_openapi3_swagger
from flask import Response, json, render_template, send_from_directory
from flask_openapi3 import APISpec, Components, Info, SecurityScheme
from flask_openapi3.models import Schema
from flask_openapi3.utils import get_model_schema

from api.v1.common import bp
from api.v1.schemas import EventPage, Problem

SWAGGER_ASSETS = Path(flask_openapi3_swagger.__file__).parent / "templates" / "swagger"
DESCRIPTION = (
    "Everything the Latchkey portal does for an organisation, over HTTP. Authenticate with "
    "an org API key (`Authorization: Bearer lk_apikey_...`) whose role is `viewer` (reads) "
    "or `admin` (changes). Errors are RFC 9457 `application/problem+json`; lists are "
    "paged with `limit` and `next_cursor`; `PATCH` honours `If-Match`.")


@functools.cache
def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route of the blueprint (built once)."""
    schemas = dict(bp.components_schemas)
    for model in (Problem, EventPage):  # named by responses written as plain dicts
        schema = get_model_schema(model, mode="serialization")
        for name, value in schema.pop("$defs", {}).items():
            schemas[name] = Schema(**value)
        schemas[model.__name__] = Schema(**schema)
    spec = APISpec(
        openapi="3.1.0",
        info=Info(title="Latchkey management API", version="1", description=DESCRIPTION),
        paths=bp.paths,
        tags=bp.tags,
        components=Components(schemas=schemas, securitySchemes={
            "apiKey": SecurityScheme(type="http", scheme="bearer",
                                     description="An org API key, lk_apikey_...")}),
    )
    doc: dict[str, Any] = spec.model_dump(mode="json", by_alias=True, exclude_unset=True,
                                          warnings=False)
    _optional_bodies(doc)
    return doc


def _optional_bodies(doc: dict[str, Any]) -> None:
    """A body whose every field is optional may be left out (it is read as ``{}``:
    ``auth.empty_body_is_an_empty_object``); say so, so clients need not send ``{}``."""
    schemas = doc.get("components", {}).get("schemas", {})
    for operations in doc.get("paths", {}).values():
        for operation in operations.values():
            body = operation.get("requestBody") if isinstance(operation, dict) else None
            if not isinstance(body, dict):
                continue
            ref = body.get("content", {}).get("application/json", {}) \
                .get("schema", {}).get("$ref", "")
            schema = schemas.get(ref.rpartition("/")[2]) if ref else None
            if schema is not None and not schema.get("required"):
                body["required"] = False


@bp.get("/openapi.json", doc_ui=False)
def openapi_document() -> Response:
    """The OpenAPI 3.1 document."""
    return Response(json.dumps(document()), mimetype="application/json")


@bp.get("/docs", doc_ui=False)
def docs() -> str:
    """The API reference, rendered in the browser from the document."""
    return render_template("api/docs.html")


def docs_asset(filename: str) -> Response:
    """Swagger UI's files, from the installed package."""
    return send_from_directory(SWAGGER_ASSETS, filename, max_age=3600)


# A plain Flask rule: flask-openapi3 passes a view only the parameters it has models for.
bp.add_url_rule("/docs/assets/<path:filename>", endpoint="docs_asset", view_func=docs_asset)
