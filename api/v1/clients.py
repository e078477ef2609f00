"""``/api/v1/clients``: clients, their secrets and their tokens, through the portal's services."""

from __future__ import annotations

from typing import Any

from flask import Response

from api.v1 import auth
from api.v1.common import CLIENTS, bp, no_content, precondition_failed, problems, respond, session
from api.v1.pagination import page
from api.v1.schemas import (
    ClientCreate,
    ClientCreated,
    ClientOut,
    ClientPage,
    ClientPatch,
    ClientPath,
    ClientQuery,
    GrantIn,
    IfMatch,
    Minted,
    MintRequest,
    PageQuery,
    RevokedCount,
    SecretCreate,
    SecretCreated,
    SecretList,
    SecretOut,
    SecretPatch,
    SecretPath,
    TokenOut,
    TokenPage,
    TokenPath,
)
from portal.core.apis import services as apis
from portal.core.apis.models import Api
from portal.core.clients import services as clients
from portal.core.clients.models import Client, ClientSecret
from portal.core.errors import NotFound, ValidationFailed
from portal.core.tokens import services as tokens
from portal.core.tokens.exchange import TokenRequest
from portal.core.tokens.models import IssuedToken, TokenSource
from portal.core.types import utcnow
from portal.core.users import services as users
from portal.core.users.models import User

TAGS = [CLIENTS]
#: The token rules name the token endpoint's parameters; the mint body names them so.
MINT_FIELDS = {"scope": "scopes", "custom_claims": "claims", "resource": "audience"}


# -- shaping ------------------------------------------------------------------------------


def client_out(client: Client) -> ClientOut:
    return ClientOut(
        client_id=client.public_id, name=client.name, description=client.description,
        kind=client.kind.value, user=client.user.public_id if client.user else None,
        enabled=client.enabled,
        grants=[{"api": g.api.identifier, "scopes": list(g.scopes)}  # type: ignore[misc]
                for g in client.grants],
        default_api=client.default_audience, ttl=client.token_ttl,
        auth_methods=list(client.auth_methods), custom_claims=client.custom_claims or {},
        jwks=client.jwks, created_at=client.created_at, updated_at=client.updated_at,
        last_used_at=client.last_used_at)


def secret_out(secret: ClientSecret) -> SecretOut:
    return SecretOut(id=secret.id, hint=secret.hint, status=_status(secret),
                     created_at=secret.created_at, expires_at=secret.expires_at,
                     last_used_at=secret.last_used_at, revoked_at=secret.revoked_at)


def _status(secret: ClientSecret) -> Any:
    if secret.revoked_at is not None:
        return "revoked"
    return "active" if secret.is_active(utcnow()) else "expired"


def _client(public_id: str) -> Client:
    return clients.get_client(session(), org_id=auth.org_id(), public_id=public_id)


def _grants(wanted: list[GrantIn], default: str | None) -> tuple[list[tuple[Api, list[str]]],
                                                                  Api | None]:
    """The APIs named by identifier (the org's or the deployment's); unknown: on ``grants``."""
    found: dict[str, Api] = {}
    for grant in [*wanted, *([GrantIn(api=default)] if default else [])]:
        if grant.api not in found:
            try:
                found[grant.api] = apis.get_api_by_identifier(
                    session(), org_id=auth.org_id(), identifier=grant.api)
            except NotFound as e:
                field = "default_api" if grant.api == default and grant not in wanted \
                    else "grants"
                raise ValidationFailed(e.message, field=field) from e
    return ([(found[g.api], list(g.scopes)) for g in wanted],
            found[default] if default else None)


def _user(public_id: str | None) -> User | None:
    if public_id is None:
        return None
    user = users.find_member(session(), org_id=auth.org_id(), public_id=public_id)
    if user is None:
        raise ValidationFailed("that user is not a member of this organisation", field="user")
    return user


# -- clients ------------------------------------------------------------------------------


@bp.post("/clients", tags=TAGS, responses={201: ClientCreated, **problems(409)})
def create_client(body: ClientCreate) -> Response:
    """Create a client; the response holds its secret, shown this once."""
    actor = auth.current_actor()
    grants, default = _grants(body.grants, body.default_api)
    plaintext, client = clients.create_client(
        session(), org=auth.current_org(), name=body.name, description=body.description,
        kind=body.kind, user=_user(body.user), grants=grants, default_api=default,
        ttl=body.ttl, auth_methods=list(body.auth_methods) if body.auth_methods else None,
        jwks=body.jwks, custom_claims=body.custom_claims, actor=actor)
    session().commit()
    created = ClientCreated(**client_out(client).model_dump(), client_secret=plaintext)
    return respond(created, 201, headers={"Location": f"/api/v1/clients/{client.public_id}"})


@bp.get("/clients", tags=TAGS, responses={200: ClientPage})
def list_clients(query: ClientQuery) -> Response:
    """The org's clients, newest first; filter by kind, enabled and part of the name."""
    stmt = clients.clients_query(org_id=auth.org_id(), kind=query.kind, enabled=query.enabled,
                                 name=query.name)
    rows, cursor = page(session(), stmt, Client.id, limit=query.limit, cursor=query.cursor)
    return respond(ClientPage(items=[client_out(c) for c in rows], next_cursor=cursor))


@bp.get("/clients/<client_id>", tags=TAGS, responses={200: ClientOut})
def get_client(path: ClientPath) -> Response:
    """One client; its ETag goes in If-Match of a PATCH."""
    return respond(client_out(_client(path.client_id)), etag=True)


@bp.patch("/clients/<client_id>", tags=TAGS, responses={200: ClientOut, **problems(412)})
def update_client(path: ClientPath, body: ClientPatch, header: IfMatch) -> Response:
    """Change a client's settings (the fields sent; checked as on creation)."""
    client = _client(path.client_id)
    refused = precondition_failed(header.if_match, client_out(client))
    if refused is not None:
        return refused
    sent = body.model_fields_set
    if "grants" in sent or "default_api" in sent:
        wanted = body.grants if body.grants is not None else [
            GrantIn(api=g.api.identifier, scopes=list(g.scopes)) for g in client.grants]
        grants, default = _grants(wanted, body.default_api or client.default_audience)
    else:
        grants = [(g.api, list(g.scopes)) for g in client.grants]
        default = client.default_api
    actor = auth.current_actor()
    clients.update_client(
        session(), client,
        name=body.name if body.name is not None else client.name,
        description=body.description if body.description is not None else client.description,
        grants=grants, default_api=default,
        ttl=body.ttl if body.ttl is not None else client.token_ttl,
        custom_claims=(body.custom_claims if "custom_claims" in sent
                       else client.custom_claims),
        auth_methods=(list(body.auth_methods) if body.auth_methods is not None
                      else list(client.auth_methods)),
        actor=actor)
    session().commit()
    return respond(client_out(client), etag=True)


@bp.delete("/clients/<client_id>", tags=TAGS, responses={204: None})
def delete_client(path: ClientPath) -> Response:
    """Delete a client with its secrets and tokens."""
    actor = auth.current_actor()
    clients.delete_client(session(), _client(path.client_id), actor=actor)
    session().commit()
    return no_content()


def _set_enabled(client_id: str, *, enabled: bool) -> Response:
    actor = auth.current_actor()
    client = clients.set_enabled(session(), _client(client_id), enabled=enabled,
                                 actor=actor)
    session().commit()
    return respond(client_out(client))


@bp.post("/clients/<client_id>/disable", tags=TAGS, responses={200: ClientOut})
def disable_client(path: ClientPath) -> Response:
    """Disable a client: no new tokens, and its tokens introspect inactive."""
    return _set_enabled(path.client_id, enabled=False)


@bp.post("/clients/<client_id>/enable", tags=TAGS, responses={200: ClientOut})
def enable_client(path: ClientPath) -> Response:
    """Enable a disabled client again."""
    return _set_enabled(path.client_id, enabled=True)


# -- secrets ------------------------------------------------------------------------------


@bp.get("/clients/<client_id>/secrets", tags=TAGS, responses={200: SecretList})
def list_secrets(path: ClientPath) -> Response:
    """The client's secrets (never their values), newest first."""
    client = _client(path.client_id)
    items = [secret_out(s) for s in sorted(client.secrets, key=lambda s: s.id, reverse=True)]
    return respond(SecretList(items=items))


@bp.post("/clients/<client_id>/secrets", tags=TAGS,
         responses={201: SecretCreated,
                    **problems(409, s409="The client already has the most active secrets")})
def add_secret(path: ClientPath, body: SecretCreate) -> Response:
    """Add a secret (at most five active); the response holds it, shown this once."""
    client = _client(path.client_id)
    actor = auth.current_actor()
    plaintext, secret = clients.add_secret(session(), client, expires_at=body.expires_at,
                                           actor=actor)
    session().commit()
    return respond(SecretCreated(**secret_out(secret).model_dump(), client_secret=plaintext),
                   201)


@bp.put("/clients/<client_id>/secret", tags=TAGS, responses={200: SecretCreated})
def regenerate_secret(path: ClientPath, body: SecretCreate) -> Response:
    """Replace every secret of the client with one new one, shown this once."""
    client = _client(path.client_id)
    actor = auth.current_actor()
    plaintext, secret = clients.regenerate_secret(session(), client, expires_at=body.expires_at,
                                                  actor=actor)
    session().commit()
    return respond(SecretCreated(**secret_out(secret).model_dump(), client_secret=plaintext))


@bp.patch("/clients/<client_id>/secrets/<int:secret_id>", tags=TAGS,
          responses={200: SecretOut})
def update_secret(path: SecretPath, body: SecretPatch) -> Response:
    """Set or move the expiry of an active secret."""
    client = _client(path.client_id)
    actor = auth.current_actor()
    secret = clients.set_secret_expiry(session(), client, secret_id=path.secret_id,
                                       expires_at=body.expires_at, actor=actor)
    session().commit()
    return respond(secret_out(secret))


@bp.delete("/clients/<client_id>/secrets/<int:secret_id>", tags=TAGS,
           responses={200: SecretOut})
def revoke_secret(path: SecretPath) -> Response:
    """Revoke a secret: the token endpoint refuses it from now on."""
    client = _client(path.client_id)
    actor = auth.current_actor()
    secret = clients.revoke_secret(session(), client, secret_id=path.secret_id,
                                   actor=actor)
    session().commit()
    return respond(secret_out(secret))


# -- tokens -------------------------------------------------------------------------------


def token_out(record: IssuedToken) -> TokenOut:
    return TokenOut(jti=record.jti, scopes=list(record.scopes), audience=list(record.audience),
                    source=record.source.value, issued_at=record.issued_at,
                    expires_at=record.expires_at)


@bp.post("/clients/<client_id>/tokens", tags=TAGS, responses={201: Minted})
def mint_token(path: ClientPath, body: MintRequest) -> Response:
    """Mint a token for the client, by the token endpoint's rules, with custom claims."""
    client = _client(path.client_id)
    wanted = TokenRequest(scopes=tuple(body.scopes) if body.scopes is not None else None,
                          audiences=tuple(body.audience) if body.audience else None,
                          ttl=body.ttl, extra_claims=body.claims or None)
    try:
        issued = tokens.mint(session(), org_id=client.org_id, client_public_id=client.public_id,
                             wanted=wanted, source=TokenSource.API, actor=auth.current_actor())
    except ValidationFailed as e:  # the token endpoint's parameter names -> this body's
        e.field = MINT_FIELDS.get(e.field or "", e.field)
        raise
    session().commit()
    values = issued.values
    return respond(Minted(access_token=issued.access_token, expires_in=issued.expires_in,
                          jti=values["jti"], scope=" ".join(values["scopes"]),
                          audience=list(values["audience"])), 201)


@bp.get("/clients/<client_id>/tokens", tags=TAGS, responses={200: TokenPage})
def list_tokens(path: ClientPath, query: PageQuery) -> Response:
    """The client's active (unrevoked, unexpired) tokens, newest first."""
    client = _client(path.client_id)
    stmt = tokens.active_tokens_query(client=client, now=utcnow())
    rows, cursor = page(session(), stmt, IssuedToken.id, limit=query.limit, cursor=query.cursor)
    return respond(TokenPage(items=[token_out(r) for r in rows], next_cursor=cursor))


@bp.delete("/clients/<client_id>/tokens", tags=TAGS, responses={200: RevokedCount})
def revoke_tokens(path: ClientPath) -> Response:
    """Revoke every active token of the client."""
    client = _client(path.client_id)
    actor = auth.current_actor()
    count = tokens.revoke_all_for_client(session(), client, actor=actor)
    session().commit()
    return respond(RevokedCount(revoked=count))


@bp.delete("/tokens/<jti>", tags=TAGS, responses={204: None})
def revoke_token(path: TokenPath) -> Response:
    """Revoke one of the org's tokens by its jti (already revoked: the same 204)."""
    record = tokens.get_record(session(), org_id=auth.org_id(), jti=path.jti)
    actor = auth.current_actor()
    tokens.revoke_from_portal(session(), record, actor=actor)
    session().commit()
    return no_content()
