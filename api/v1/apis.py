"""``/api/v1/apis``: the registered APIs (token audiences) and their scopes."""

from __future__ import annotations

from flask import Response

from api.v1 import auth
from api.v1.common import APIS, bp, no_content, precondition_failed, problems, respond, session
from api.v1.pagination import page
from api.v1.schemas import ApiCreate, ApiOut, ApiPage, ApiPatch, ApiPath, IfMatch, PageQuery
from portal.core.apis import services as apis
from portal.core.apis.models import Api

TAGS = [APIS]


def api_out(api: Api) -> ApiOut:
    return ApiOut(id=api.public_id, identifier=api.identifier, name=api.name,
                  description=api.description,
                  owner="deployment" if api.org_id is None else "org",
                  scopes=[{"name": s.name, "description": s.description}  # type: ignore[misc]
                          for s in api.scopes],
                  default_ttl=api.default_ttl, max_ttl=api.max_ttl, created_at=api.created_at,
                  updated_at=api.updated_at)


def _api(api_id: str) -> Api:
    return apis.get_api(session(), org_id=auth.org_id(), public_id=api_id)


@bp.get("/apis", tags=TAGS, responses={200: ApiPage})
def list_apis(query: PageQuery) -> Response:
    """The org's APIs and the deployment's, newest first."""
    stmt = apis.apis_query(org_id=auth.org_id())
    rows, cursor = page(session(), stmt, Api.id, limit=query.limit, cursor=query.cursor)
    return respond(ApiPage(items=[api_out(a) for a in rows], next_cursor=cursor))


@bp.post("/apis", tags=TAGS, responses={201: ApiOut})
def create_api(body: ApiCreate) -> Response:
    """Register an API with its scopes; its identifier is the tokens' aud."""
    api = apis.create_api(session(), org=auth.current_org(), identifier=body.identifier,
                          name=body.name, description=body.description,
                          scopes=[(s.name, s.description) for s in body.scopes],
                          default_ttl=body.default_ttl, max_ttl=body.max_ttl,
                          actor=auth.current_actor())
    session().commit()
    return respond(api_out(api), 201, headers={"Location": f"/api/v1/apis/{api.public_id}"})


@bp.get("/apis/<api_id>", tags=TAGS, responses={200: ApiOut})
def get_api(path: ApiPath) -> Response:
    """One API; its ETag goes in If-Match of a PATCH."""
    return respond(api_out(_api(path.api_id)), etag=True)


@bp.patch("/apis/<api_id>", tags=TAGS, responses={200: ApiOut, **problems(409, 412)})
def update_api(path: ApiPath, body: ApiPatch, header: IfMatch) -> Response:
    """Change an API's name, description, lifetimes and scopes (never its identifier)."""
    api = _api(path.api_id)
    refused = precondition_failed(header.if_match, api_out(api))
    if refused is not None:
        return refused
    sent = body.model_fields_set
    actor = auth.current_actor()
    org_id = auth.org_id()
    apis.update_api(
        session(), api, acting_org_id=org_id,
        name=body.name if body.name is not None else api.name,
        description=body.description if body.description is not None else api.description,
        default_ttl=body.default_ttl if "default_ttl" in sent else api.default_ttl,
        max_ttl=body.max_ttl if "max_ttl" in sent else api.max_ttl, actor=actor)
    if body.scopes is not None:
        apis.set_scopes(session(), api, acting_org_id=org_id,
                        scopes=[(s.name, s.description) for s in body.scopes], actor=actor)
    session().commit()
    return respond(api_out(api), etag=True)


@bp.delete("/apis/<api_id>", tags=TAGS, responses={204: None, **problems(409)})
def delete_api(path: ApiPath) -> Response:
    """Delete an API; refused (409) while a client is granted it."""
    apis.delete_api(session(), _api(path.api_id), acting_org_id=auth.org_id(),
                    actor=auth.current_actor())
    session().commit()
    return no_content()
