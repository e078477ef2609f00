"""Registering APIs and their scopes, and granting them to clients.

Tenancy: an org sees its own APIs and the deployment's (``org_id`` NULL, shared by
every org); another org's API is :class:`NotFound`, exactly like a missing one.
An org may change only its own APIs: a deployment API is the operator's
(``acting_org_id=None``, the CLI), and an org trying to change one gets
:class:`NotPermitted`. A client of an org may be granted that org's APIs and
the deployment's, never another org's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Select, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from portal.core import crypto, settings
from portal.core.actor import Actor
from portal.core.apis.grants import check_ttl
from portal.core.apis.models import API_ID_PREFIX, Api, ApiScope, ClientGrant
from portal.core.audit import services as audit
from portal.core.clients.models import Client
from portal.core.errors import Conflict, NotFound, NotPermitted, ValidationFailed
from portal.core.orgs.models import Organization
from portal.core.tokens.claims import check_scope_names
from portal.core.types import utcnow

MAX_IDENTIFIER_LENGTH = 255
MAX_SCOPE_DESCRIPTION = 500
MAX_SCOPES_PER_API = 200
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
# RFC 3986 characters (unreserved, reserved but '#', percent-encodings): no spaces, no
# quotes, no backslash, no non-ASCII (percent-encode them).
_URI = re.compile(r"^(?:[A-Za-z0-9\-._~:/?\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})+$")
SHARED_HELP = ("it is shared by every organisation on this server; only the operator can "
               "change it (latchkey CLI)")


# -- checks -------------------------------------------------------------------------------


def check_identifier(value: str | None) -> str:
    """An API identifier (the token's ``aud``): an absolute URI without a fragment,
    at most 255 characters (RFC 8707 §2: a resource indicator)."""
    identifier = (value or "").strip()
    if not identifier:
        raise ValidationFailed(
            "an API needs an identifier: an absolute URI such as https://api.example.com",
            field="identifier")
    if len(identifier) > MAX_IDENTIFIER_LENGTH:
        raise ValidationFailed(
            f"the identifier is {len(identifier)} characters long; "
            f"at most {MAX_IDENTIFIER_LENGTH} are allowed", field="identifier")
    if "#" in identifier:
        raise ValidationFailed(
            "the identifier must not have a fragment (the part from #)", field="identifier")
    if not is_absolute_uri(identifier):
        raise ValidationFailed(
            f"the identifier must be an absolute URI, like https://api.example.com or "
            f"urn:example:orders (got {identifier[:80]!r})", field="identifier")
    return identifier


def is_absolute_uri(value: str) -> bool:
    """RFC 3986 §4.3 absolute-URI (no fragment), written in URI characters only;
    http and https URIs need a host."""
    match = _SCHEME.match(value)
    if match is None or len(value) == match.end() or "#" in value or not _URI.match(value):
        return False
    if match.group().lower() in ("http:", "https:"):
        try:
            return bool(urlsplit(value).hostname)
        except ValueError:  # e.g. an unclosed IPv6 bracket
            return False
    return True


def check_name(name: str | None) -> str:
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise ValidationFailed("an API needs a name (at most 200 characters)", field="name")
    return name


def check_lifetimes(default_ttl: int | None, max_ttl: int | None) -> tuple[int | None, int | None]:
    """Optional default and maximum token lifetimes, each within the server's bounds."""
    if default_ttl is not None:
        check_ttl(default_ttl, field="default_ttl")
    if max_ttl is not None:
        check_ttl(max_ttl, field="max_ttl")
    if default_ttl is not None and max_ttl is not None and default_ttl > max_ttl:
        raise ValidationFailed("the default lifetime cannot be longer than the maximum",
                               field="default_ttl")
    return default_ttl, max_ttl


def check_scope(name: str | None, description: str | None = "") -> tuple[str, str]:
    """A scope name (RFC 6749 §3.3 scope-token) and its description."""
    text = (name or "").strip()
    if not text:
        raise ValidationFailed("a scope needs a name, like orders:read", field="scope")
    try:
        (clean,) = check_scope_names([text])
    except ValidationFailed as e:
        raise ValidationFailed(
            f"invalid scope name {text[:60]!r}: use printable ASCII without spaces, quotes "
            "or backslashes (at most 128 characters)", field="scope") from e
    supported = settings.scopes_supported()
    if supported and clean not in supported:
        raise ValidationFailed(
            f"scope {clean} is not offered by this server (SCOPES_SUPPORTED)", field="scope")
    about = (description or "").strip()
    if len(about) > MAX_SCOPE_DESCRIPTION:
        raise ValidationFailed(
            f"a scope description is at most {MAX_SCOPE_DESCRIPTION} characters",
            field="scope_description")
    return clean, about


def _require_changeable(api: Api, acting_org_id: int | None) -> None:
    """An org changes only its own APIs; ``acting_org_id`` None is the operator."""
    if acting_org_id is not None and api.org_id != acting_org_id:
        raise NotPermitted(f"{api.name} is not yours to change: {SHARED_HELP}")


def _audit(session: Session, api: Api, *, action: str, actor: Actor,
           details: dict[str, Any] | None = None, now: datetime | None = None) -> None:
    audit.record(session, org_id=api.org_id, actor=actor, action=action,
                 target_type="api", target_id=api.identifier,
                 details=details, now=now)


# -- finding ------------------------------------------------------------------------------


def _visible_to(org_id: int) -> Any:
    return or_(Api.org_id == org_id, Api.org_id.is_(None))


def get_api(session: Session, *, org_id: int, public_id: str) -> Api:
    """The org's API or a deployment API with this public id; another org's is NotFound."""
    api = session.scalar(select(Api).where(Api.public_id == public_id[:40], _visible_to(org_id)))
    if api is None:
        raise NotFound("no such API")
    return api


def find_api(session: Session, identifier: str) -> Api | None:
    """The API with this identifier, whoever owns it (for the operator and for checks)."""
    return session.scalar(select(Api).where(Api.identifier == identifier[:MAX_IDENTIFIER_LENGTH]))


def get_api_by_identifier(session: Session, *, org_id: int | None, identifier: str) -> Api:
    """The API with this identifier among those ``org_id`` sees (None: the operator sees all)."""
    stmt = select(Api).where(Api.identifier == identifier[:MAX_IDENTIFIER_LENGTH])
    if org_id is not None:
        stmt = stmt.where(_visible_to(org_id))
    api = session.scalar(stmt)
    if api is None:
        raise NotFound(f"no API with identifier {identifier[:80]}")
    return api


def list_apis(session: Session, *, org_id: int) -> list[Api]:
    """The org's APIs by name, then the deployment's."""
    stmt = (select(Api).where(_visible_to(org_id))
            .order_by(Api.org_id.is_(None), func.lower(Api.name), Api.id))
    return list(session.scalars(stmt))


def apis_query(*, org_id: int) -> Select[Any]:
    """The APIs the org sees (its own and the deployment's), newest first."""
    return select(Api).where(_visible_to(org_id)).order_by(Api.id.desc())


def list_deployment_apis(session: Session) -> list[Api]:
    return list(session.scalars(select(Api).where(Api.org_id.is_(None)).order_by(Api.id)))


def granted_clients(session: Session, api: Api, *, org_id: int | None) -> list[Client]:
    """Clients granted ``api``: of ``org_id`` only, or of every org (None, the operator)."""
    stmt = (select(Client).join(ClientGrant, ClientGrant.client_id == Client.id)
            .where(ClientGrant.api_id == api.id).order_by(Client.name, Client.id))
    if org_id is not None:
        stmt = stmt.where(Client.org_id == org_id)
    return list(session.scalars(stmt))


def grant_counts(session: Session, *, org_id: int) -> dict[int, int]:
    """API id -> how many of the org's clients are granted it."""
    rows = session.execute(
        select(ClientGrant.api_id, func.count())
        .join(Client, Client.id == ClientGrant.client_id)
        .where(Client.org_id == org_id)
        .group_by(ClientGrant.api_id))
    return {api_id: int(count) for api_id, count in rows}


def grants_of(session: Session, client: Client) -> tuple[dict[str, list[str]], str | None]:
    """What ``client`` may get: identifier -> granted scopes, and its default API's
    identifier (the audience of a token request that names none)."""
    return ({g.api.identifier: list(g.scopes) for g in client.grants}, client.default_audience)


def deployment_scopes(session: Session) -> list[str]:
    """Every scope of the deployment APIs (``scopes_supported`` in the metadata);
    org APIs' scopes stay private to their org."""
    rows = session.scalars(
        select(ApiScope.name).join(Api, Api.id == ApiScope.api_id)
        .where(Api.org_id.is_(None)).order_by(Api.id, ApiScope.id))
    return list(dict.fromkeys(rows))


# -- APIs ---------------------------------------------------------------------------------


def create_api(
    session: Session,
    *,
    org: Organization | None,
    identifier: str,
    name: str,
    description: str = "",
    scopes: Iterable[tuple[str, str]] = (),
    default_ttl: int | None = None,
    max_ttl: int | None = None,
    actor: Actor,
    now: datetime | None = None,
) -> Api:
    """Register an API for ``org``, or for the deployment (``org`` None: the operator).

    Identifiers are unique across the deployment: one already taken, by this org
    or any other, is refused (without saying whose it is).
    """
    now = now or utcnow()
    identifier = check_identifier(identifier)
    name = check_name(name)
    description = _check_description(description)
    default_ttl, max_ttl = check_lifetimes(default_ttl, max_ttl)
    checked = _check_scopes(scopes)
    _check_identifier_free(session, identifier, org)
    api = Api(public_id=crypto.new_public_id(API_ID_PREFIX), org_id=org.id if org else None,
              identifier=identifier, name=name, description=description,
              default_ttl=default_ttl, max_ttl=max_ttl, created_at=now, updated_at=now)
    api.scopes = [ApiScope(name=n, description=d) for n, d in checked]
    try:
        with session.begin_nested():
            session.add(api)
            session.flush()
    except IntegrityError as e:  # registered by someone else since the check
        raise _taken(identifier, same_org=False) from e
    _audit(session, api, action="api:created", actor=actor, now=now, details={
        "name": name, "identifier": identifier, "scopes": [n for n, _ in checked],
        "default_ttl": default_ttl, "max_ttl": max_ttl,
        "owner": "deployment" if org is None else "org"})
    return api


def _check_description(description: str | None) -> str:
    text = (description or "").strip()
    if len(text) > 2000:
        raise ValidationFailed("the description is at most 2000 characters", field="description")
    return text


def _check_scopes(scopes: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    checked: dict[str, str] = {}
    for name, description in scopes:
        clean, about = check_scope(name, description)
        checked[clean] = about or checked.get(clean, "")
    if len(checked) > MAX_SCOPES_PER_API:
        raise ValidationFailed(f"an API has at most {MAX_SCOPES_PER_API} scopes", field="scopes")
    return list(checked.items())


def _taken(identifier: str, *, same_org: bool) -> ValidationFailed:
    if same_org:
        return ValidationFailed(f"you already have an API with identifier {identifier}",
                                field="identifier")
    return ValidationFailed(
        f"identifier {identifier} is already taken on this server: API identifiers are "
        "unique across organisations, so choose one under a domain you own",
        field="identifier")


def _check_identifier_free(session: Session, identifier: str, org: Organization | None) -> None:
    owner = session.execute(
        select(Api.id, Api.org_id).where(Api.identifier == identifier)).first()
    if owner is not None:
        raise _taken(identifier, same_org=org is not None and owner.org_id == org.id)


def update_api(
    session: Session,
    api: Api,
    *,
    acting_org_id: int | None,
    name: str,
    description: str,
    default_ttl: int | None,
    max_ttl: int | None,
    actor: Actor,
    now: datetime | None = None,
) -> list[str]:
    """Change an API's name, description and lifetimes; returns the changed fields.

    The identifier never changes: tokens and resource servers depend on it.
    """
    _require_changeable(api, acting_org_id)
    now = now or utcnow()
    default_ttl, max_ttl = check_lifetimes(default_ttl, max_ttl)
    values = {"name": check_name(name), "description": _check_description(description),
              "default_ttl": default_ttl, "max_ttl": max_ttl}
    changed = [f for f, v in values.items() if getattr(api, f) != v]
    if not changed:
        return []
    for field in changed:
        setattr(api, field, values[field])
    api.updated_at = now
    _audit(session, api, action="api:updated", actor=actor, now=now,
           details={"changed": changed, **{f: values[f] for f in changed if f != "description"}})
    session.flush()
    return changed


def delete_api(session: Session, api: Api, *, acting_org_id: int | None, actor: Actor,
               now: datetime | None = None) -> None:
    """Delete an API; refused while any client is granted it."""
    _require_changeable(api, acting_org_id)
    holders = granted_clients(session, api, org_id=None)
    if holders:
        names = ", ".join(c.name for c in holders[:5]) + (", …" if len(holders) > 5 else "")
        several = len(holders) != 1
        raise Conflict(
            f"{api.name} is still granted to {len(holders)} client{'s' if several else ''} "
            f"({names}): remove it from {'them' if several else 'that client'} first")
    _audit(session, api, action="api:deleted", actor=actor, now=now,
           details={"name": api.name})
    session.delete(api)
    session.flush()


# -- scopes -------------------------------------------------------------------------------


def add_scope(session: Session, api: Api, *, acting_org_id: int | None, name: str,
              description: str = "", actor: Actor, now: datetime | None = None) -> ApiScope:
    """Add a scope to an API (no client has it until granted)."""
    _require_changeable(api, acting_org_id)
    clean, about = check_scope(name, description)
    if clean in api.scope_names:
        raise ValidationFailed(f"{api.name} already has scope {clean}", field="scope")
    if len(api.scopes) >= MAX_SCOPES_PER_API:
        raise ValidationFailed(f"an API has at most {MAX_SCOPES_PER_API} scopes", field="scope")
    scope = ApiScope(name=clean, description=about)
    api.scopes.append(scope)
    session.flush()
    _audit(session, api, action="api:scope:added", actor=actor, now=now,
           details={"scope": clean})
    return scope


def _scope_of(api: Api, scope_id: int) -> ApiScope:
    scope = next((s for s in api.scopes if s.id == scope_id), None)
    if scope is None:
        raise NotFound("no such scope on this API")
    return scope


def get_scope(api: Api, scope_id: int) -> ApiScope:
    """One of the API's scopes by id (NotFound otherwise)."""
    return _scope_of(api, scope_id)


def update_scope(session: Session, api: Api, *, acting_org_id: int | None, scope_id: int,
                 description: str, actor: Actor, now: datetime | None = None) -> bool:
    """Change a scope's description (names never change: grants and tokens carry them)."""
    _require_changeable(api, acting_org_id)
    scope = _scope_of(api, scope_id)
    _name, about = check_scope(scope.name, description)
    if about == scope.description:
        return False
    scope.description = about
    _audit(session, api, action="api:scope:updated", actor=actor, now=now,
           details={"scope": scope.name})
    session.flush()
    return True


def remove_scope(session: Session, api: Api, *, acting_org_id: int | None, scope_id: int,
                 actor: Actor, now: datetime | None = None) -> list[Client]:
    """Remove a scope from an API and from every grant that has it; returns those clients.

    Their new tokens no longer carry it (asking for it is ``invalid_scope``);
    tokens already issued keep it until they expire.
    """
    _require_changeable(api, acting_org_id)
    now = now or utcnow()
    scope = _scope_of(api, scope_id)
    affected = []
    for grant in session.scalars(select(ClientGrant).where(ClientGrant.api_id == api.id)):
        if scope.name in grant.scopes:
            grant.scopes = [s for s in grant.scopes if s != scope.name]
            affected.append(grant.client)
            audit.record(session, org_id=grant.client.org_id, actor=actor,
                         action="client:grant:updated", target_type="client",
                         target_id=grant.client.public_id, now=now,
                         details={"api": api.identifier, "scopes": list(grant.scopes),
                                  "removed": [scope.name]})
    api.scopes.remove(scope)
    _audit(session, api, action="api:scope:removed", actor=actor, now=now,
           details={"scope": scope.name, "clients": len(affected)})
    session.flush()
    return affected


def set_scopes(session: Session, api: Api, *, acting_org_id: int | None,
               scopes: Iterable[tuple[str, str]], actor: Actor,
               now: datetime | None = None) -> bool:
    """Make the API's scopes exactly ``scopes``: new ones added, descriptions updated,
    missing ones removed (and from every grant, as :func:`remove_scope`). Returns whether
    anything changed."""
    _require_changeable(api, acting_org_id)
    wanted = dict(_check_scopes(scopes))
    changed = False
    for scope in list(api.scopes):
        if scope.name not in wanted:
            remove_scope(session, api, acting_org_id=acting_org_id, scope_id=scope.id,
                         actor=actor, now=now)
            changed = True
        elif wanted[scope.name] != scope.description:
            changed |= update_scope(session, api, acting_org_id=acting_org_id,
                                    scope_id=scope.id, description=wanted[scope.name],
                                    actor=actor, now=now)
    for name, description in wanted.items():
        if name not in api.scope_names:
            add_scope(session, api, acting_org_id=acting_org_id, name=name,
                      description=description, actor=actor, now=now)
            changed = True
    return changed


# -- grants -------------------------------------------------------------------------------


def check_grants(org_id: int, grants: Sequence[tuple[Api, Sequence[str]]],
                 default: Api | None = None) -> None:
    """The grants a client of ``org_id`` is given on its form: at least one API, known
    scopes, a default among them (checked before anything is written)."""
    if not grants:
        raise ValidationFailed("choose at least one API the client may get tokens for",
                               field="grants")
    for api, scopes in grants:
        _check_grant_of(org_id, api, scopes)
    if default is not None and default.id not in {api.id for api, _ in grants}:
        raise ValidationFailed("the default API must be one of the APIs granted",
                               field="default_api")


def _check_grant(client: Client, api: Api, scopes: Sequence[str]) -> list[str]:
    return _check_grant_of(client.org_id, api, scopes)


def _check_grant_of(org_id: int, api: Api, scopes: Sequence[str]) -> list[str]:
    if api.org_id is not None and api.org_id != org_id:
        raise NotFound("no such API")  # another org's API is never grantable, nor visible
    unknown = [s for s in scopes if s not in api.scope_names]
    if unknown:
        raise ValidationFailed(
            f"not a scope of {api.name} ({api.identifier}): " + " ".join(unknown),
            field="grants")
    wanted = set(scopes)
    return [s for s in api.scope_names if s in wanted]  # in the API's order


@dataclass(frozen=True)
class GrantChange:
    """What :func:`replace_grants` changed, for the caller's audit entry."""

    added: dict[str, list[str]]
    removed: list[str]
    changed: dict[str, list[str]]
    default: str | None

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed or self.default)


def replace_grants(session: Session, client: Client, grants: Sequence[tuple[Api, Sequence[str]]],
                   *, default: Api | None = None) -> GrantChange:
    """Make ``grants`` the client's whole set of grants (the client form); at least one.

    ``default`` (one of them) is the API a token request without an audience gets;
    None keeps the current default if still granted, else the first one.
    Audited by the caller (client created or updated).
    """
    if not grants:
        raise ValidationFailed("choose at least one API the client may get tokens for",
                               field="grants")
    wanted: dict[int, tuple[Api, list[str]]] = {}
    for api, scopes in grants:
        wanted[api.id] = (api, _check_grant(client, api, scopes))
    if default is not None and default.id not in wanted:
        raise ValidationFailed("the default API must be one of the APIs granted",
                               field="default_api")
    existing = {g.api_id: g for g in client.grants}
    added: dict[str, list[str]] = {}
    changed: dict[str, list[str]] = {}
    removed = [g.api.identifier for api_id, g in existing.items() if api_id not in wanted]
    for api_id, held in list(existing.items()):
        if api_id not in wanted:
            client.grants.remove(held)
    session.flush()  # deletions first: a removed default must be gone before a new one is set
    for api_id, (api, scopes) in wanted.items():
        found = existing.get(api_id)
        if found is None:
            client.grants.append(ClientGrant(api=api, scopes=scopes))
            added[api.identifier] = scopes
        elif found.scopes != scopes:
            found.scopes = scopes
            changed[api.identifier] = scopes
    old_default = client.default_api
    if default is None:
        default = old_default if old_default is not None and old_default.id in wanted \
            else next(iter(wanted.values()))[0]
    _set_default(session, client, default)
    session.flush()
    new_default = default.identifier if old_default is None or default.id != old_default.id \
        else None
    return GrantChange(added=added, removed=removed, changed=changed, default=new_default)


def _set_default(session: Session, client: Client, api: Api) -> None:
    """Make ``api`` the client's default; the old flag goes first (the unique index)."""
    if client.default_api is api:
        return
    for g in client.grants:
        g.is_default = False
    session.flush()
    for g in client.grants:
        g.is_default = g.api is api


def grant(session: Session, client: Client, api: Api, *, scopes: Sequence[str],
          make_default: bool = False, actor: Actor, now: datetime | None = None) -> ClientGrant:
    """Grant ``client`` these scopes of ``api`` (replacing any earlier grant of it).

    The client's first grant becomes its default API, as does this one with
    ``make_default``.
    """
    chosen = _check_grant(client, api, scopes)
    found = next((g for g in client.grants if g.api_id == api.id), None)
    if found is None:
        found = ClientGrant(api=api, scopes=chosen)
        client.grants.append(found)
    else:
        found.scopes = chosen
    if make_default or client.default_api is None:
        _set_default(session, client, api)
    session.flush()
    audit.record(session, org_id=client.org_id, actor=actor, action="client:granted",
                 target_type="client", target_id=client.public_id,
                 now=now, details={"api": api.identifier, "scopes": chosen,
                                   "default": found.is_default})
    return found


def ungrant(session: Session, client: Client, api: Api, *, actor: Actor,
            now: datetime | None = None) -> None:
    """Take an API away from a client (its last one is refused: delete the client instead).

    When it was the default, the earliest remaining grant becomes the default.
    """
    found = next((g for g in client.grants if g.api_id == api.id), None)
    if found is None:
        raise NotFound("that API is not granted to this client")
    if len(client.grants) == 1:
        raise ValidationFailed(
            "a client needs at least one API: grant another one first, or delete the client",
            field="grants")
    client.grants.remove(found)
    if found.is_default:
        # Flush the removal first: two defaults at once would break the unique index.
        session.flush()
        _set_default(session, client, client.grants[0].api)
    session.flush()
    audit.record(session, org_id=client.org_id, actor=actor, action="client:ungranted",
                 target_type="client", target_id=client.public_id,
                 now=now, details={"api": api.identifier})


def apis_for_audiences(
    session: Session, *, org: Organization, audiences: Sequence[str], scopes: Sequence[str],
    actor: Actor, now: datetime | None = None,
) -> list[tuple[Api, list[str]]]:
    """Grants for a client given the way scripts did before APIs existed
    (``latchkey create-client --audience URI --scopes "a b"``).

    Each audience is the org's API with that identifier (created with these scopes
    when it does not exist, and given any of them it lacks) or a deployment API
    (which must already define them). Another org's identifier is refused.
    """
    if not audiences:
        raise ValidationFailed("a client needs at least one audience (an API identifier)",
                               field="audiences")
    names = [n for n, _ in _check_scopes((s, "") for s in scopes)]
    grants: list[tuple[Api, list[str]]] = []
    for audience in dict.fromkeys(audiences):
        identifier = check_identifier(audience)
        api = find_api(session, identifier)
        if api is None:
            api = create_api(session, org=org, identifier=identifier, name=default_name(identifier),
                             scopes=[(n, "") for n in names], actor=actor, now=now)
        elif api.org_id is None:
            missing = [n for n in names if n not in api.scope_names]
            if missing:
                raise ValidationFailed(
                    f"{identifier} is a deployment API without scope(s) {' '.join(missing)}; "
                    "only the operator can add them", field="scopes")
        elif api.org_id != org.id:
            raise _taken(identifier, same_org=False)
        else:
            for n in names:
                if n not in api.scope_names:
                    add_scope(session, api, acting_org_id=org.id, name=n, actor=actor, now=now)
        grants.append((api, names))
    return grants


def default_name(identifier: str) -> str:
    """A readable name for an API known only by its identifier (its host and path)."""
    try:
        parts = urlsplit(identifier)
        name = (parts.netloc + parts.path).rstrip("/") if parts.netloc else identifier
    except ValueError:
        name = identifier
    return name[:200] or identifier[:200]


# -- the operator's check -----------------------------------------------------------------


@dataclass(frozen=True)
class SharedApi:
    """A deployment API granted to clients of several orgs: its resource servers
    must tell the orgs apart by ``oid``."""

    api: Api
    org_slugs: list[str]


def shared_apis(session: Session) -> list[SharedApi]:
    """Deployment APIs that clients of more than one org are granted."""
    rows = session.execute(
        select(Api, Organization.slug)
        .join(ClientGrant, ClientGrant.api_id == Api.id)
        .join(Client, Client.id == ClientGrant.client_id)
        .join(Organization, Organization.id == Client.org_id)
        .where(Api.org_id.is_(None))
        .distinct()
        .order_by(Api.id, Organization.slug))
    found: dict[int, SharedApi] = {}
    for api, slug in rows:
        found.setdefault(api.id, SharedApi(api=api, org_slugs=[])).org_slugs.append(slug)
    return [s for s in found.values() if len(s.org_slugs) > 1]


def malformed_identifiers(session: Session) -> list[Api]:
    """APIs whose identifier is not an absolute URI (kept from free-text audiences)."""
    return [api for api in session.scalars(select(Api).order_by(Api.id))
            if not is_absolute_uri(api.identifier)]
