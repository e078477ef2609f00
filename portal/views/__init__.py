"""The portal blueprint (server-rendered pages) and what every page shares.

Conventions every portal view follows:

* The org is the one the signed-in user chose (``current_org()``): kept in the
  session, checked against their memberships on every request (a user in
  several orgs picks one with the switcher in the top bar). There is no org in
  the URL, and every lookup is filtered by that org, so another org's object
  answers 404.
* A user whose password was reset by an owner can do nothing but choose a new
  one (``_enforce_password_change``).
* Viewers read everything and change nothing: every POST from a viewer is
  refused with 403 before the view runs (``_enforce_roles``). Views that only
  an owner may use are decorated with ``@owner_required``.
* Every change is recorded with ``current_actor()``: the signed-in user and the
  request's address, passed to the service as one ``Actor``.
* A page that shows a one-time secret is the POST response itself, sent with
  ``Cache-Control: no-store`` (``no_store``); the form that leads to it carries
  a one-time nonce (``issue_nonce`` / ``consume_nonce``) so a reload re-posting
  the form creates nothing and shows nothing again.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Blueprint, Flask, abort, flash, redirect, request, session, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user

from portal.core.actor import Actor
from portal.core.db import get_session
from portal.core.orgs.models import Organization
from portal.core.users.models import Membership, Role

bp = Blueprint("portal", __name__)

F = TypeVar("F", bound=Callable[..., Any])

# POSTs a viewer (or a signed-in user with no org) may still make: they act on
# the user's own account, not on an org.
OPEN_POSTS = frozenset({
    "portal.signin", "portal.signout", "portal.signup",
    "portal.account_password", "portal.account_end_sessions", "portal.switch_org",
    "portal.invitation_accept",
})
# What a user who must change their password may still reach.
PASSWORD_CHANGE_ENDPOINTS = frozenset({
    "portal.account_password_form", "portal.account_password", "portal.signout",
    "portal.signin",
})
MAX_NONCES = 20


def current_membership() -> Membership:
    """The membership of the org the user is acting in.

    A user in several orgs who has not chosen one (or whose chosen membership
    was removed) is sent to choose; an account in no org gets 403.
    """
    membership: Membership | None = getattr(current_user, "membership", None)
    if membership is None:
        if getattr(current_user, "memberships", None):
            back = request.full_path.rstrip("?") if request.method == "GET" else None
            abort(redirect(url_for("portal.choose_org", next=back)))
        abort(403, "Your account is not a member of any organisation.")
    return membership


def current_org() -> Organization:
    return current_membership().org


def can_manage() -> bool:
    """Owners and admins change things; viewers only read."""
    membership = getattr(current_user, "membership", None)
    return membership is not None and membership.role in (Role.OWNER, Role.ADMIN)


def is_owner() -> bool:
    membership = getattr(current_user, "membership", None)
    return membership is not None and membership.role is Role.OWNER


def owner_required(view: F) -> F:
    """Only an org owner may use this view (403 otherwise)."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not is_owner():
            abort(403, "Only an owner of the organisation can do this.")
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def source_ip() -> str:
    return (request.remote_addr or "")[:45]


def current_actor() -> Actor:
    """The signed-in user as the author of a change, with the request's address."""
    return Actor(f"user:{current_user.user.email}", source_ip())


def end_read() -> None:
    """End the request's read-only transaction before slow work (argon2).

    Signed-in requests read the user when they start; a transaction left open
    across password hashing would hold a connection (and on SQLite possibly the
    write lock) for that long. Nothing is pending here, so this writes nothing.
    """
    db = get_session()
    if db.in_transaction():
        db.commit()


def flash_at(message: str, category: str, section: str) -> None:
    """Flash a message meant for one section of a long page (shown there, not at the top).

    The page lists the sections that show their messages in ``flash_sections``;
    on any other page the message shows at the top as usual.
    """
    flash(message, f"{category}#{section}")


def redirect_to_section(url: str, section: str) -> ResponseReturnValue:
    """Back to the section of a long page that was acted on (its id is ``section``)."""
    return redirect(f"{url}#{section}")


def no_store(response: ResponseReturnValue) -> Any:
    """Mark a response (a page showing a secret) as never to be cached."""
    from flask import make_response

    resp = make_response(response)
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Pragma"] = "no-cache"
    return resp


def issue_nonce(purpose: str) -> str:
    """A one-time value for a form whose POST response shows a secret."""
    value = secrets.token_urlsafe(16)
    nonces = [*session.get("nonces", []), [purpose, value]]
    session["nonces"] = nonces[-MAX_NONCES:]  # the oldest unused forms expire
    return value


def consume_nonce(purpose: str, value: str | None) -> bool:
    """True once for a nonce issued for ``purpose``; False on a replay (reload)."""
    nonces = session.get("nonces", [])
    if not value or [purpose, value] not in nonces:
        return False
    nonces.remove([purpose, value])
    session["nonces"] = nonces
    return True


def _enforce_password_change() -> ResponseReturnValue | None:
    """After an owner's reset, nothing but choosing a new password works (GET or POST)."""
    if request.endpoint in PASSWORD_CHANGE_ENDPOINTS or not current_user.is_authenticated:
        return None
    if not current_user.user.must_change_password:
        return None
    return redirect(url_for("portal.account_password_form"))


def _enforce_roles() -> None:
    if request.method != "POST" or request.endpoint in OPEN_POSTS:
        return
    if not current_user.is_authenticated:
        return  # @login_required on the view redirects to sign-in
    current_membership()  # a user in several orgs who has not chosen one is asked to choose
    if not can_manage():
        abort(403, "Your role in this organisation is read-only.")


bp.before_request(_enforce_password_change)
bp.before_request(_enforce_roles)

# Routes register on the blueprint as their modules are imported.
from portal.views import (  # noqa: E402,F401
    account,
    api_keys,
    apis,
    audit,
    auth,
    clients,
    home,
    invitations,
    keys,
    members,
    tokens,
    usage,
)


def init_app(app: Flask) -> None:
    """Hooks the portal needs on the app (user loader, security headers)."""
    auth.init_app(app)

    @app.context_processor
    def portal_helpers() -> dict[str, Any]:
        return {"can_manage": can_manage(), "is_owner": is_owner(), "nav_items": NAV}


# The side navigation, in order.
NAV = (
    ("portal.clients", "Clients"),
    ("portal.apis", "APIs"),
    ("portal.mint", "Mint a token"),
    ("portal.revoke", "Revoke a token"),
    ("portal.usage", "Usage"),
    ("portal.audit", "Audit log"),
    ("portal.keys", "Signing keys"),
    ("portal.api_keys", "API keys"),
    ("portal.members", "Members"),
)
