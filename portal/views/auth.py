"""Sign in, sign out, optional sign-up, and the portal's security headers and error pages."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from flask import (
    Flask,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_login import UserMixin, current_user, login_required, login_user, logout_user
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import TooManyRequests

from portal.core.actor import Actor
from portal.core.db import get_session
from portal.core.errors import Conflict, ValidationFailed
from portal.core.orgs import services as orgs
from portal.core.orgs.models import Organization
from portal.core.users import services as users
from portal.core.users.models import Membership, Role, User
from portal.extensions import SECURITY_HEADERS, limiter, login_manager
from portal.forms import sentence
from portal.forms.auth import SignInForm, SignUpForm
from portal.views import bp, end_read, source_ip

#: Default limits; each can be overridden by the setting of the same name.
RATE_LIMITS = {
    "SIGNIN_RATE_LIMIT_PER_ACCOUNT": "10/minute",
    "SIGNIN_RATE_LIMIT_PER_ADDRESS": "30/minute",
    "SIGNUP_RATE_LIMIT_PER_ADDRESS": "10/hour",
}
SIGNIN_LIMITED = "Too many sign-in attempts. Wait a minute, then try again."
SIGNUP_LIMITED = "Too many sign-ups from your network. Try again later."
# Said for an email that already has an account: sign-up cannot hide that it
# exists (emails are unique), but it says no more than that.
EMAIL_UNAVAILABLE = ("This email address cannot be used to sign up. "
                     "If you already have an account, sign in instead.")

#: Session keys: the user's session generation when it began (a session made
#: before the user's generation last changed is over) and the chosen org.
SESSION_GENERATION = "user_gen"
SESSION_ORG = "org"


class PortalUser(UserMixin):
    """The signed-in user, all their memberships and the one they are acting in."""

    def __init__(self, user: User, memberships: list[Membership],
                 membership: Membership | None) -> None:
        self.user = user
        self.memberships = memberships
        self.membership = membership

    def get_id(self) -> str:
        return str(self.user.id)


@login_manager.user_loader
def load_user(user_id: str) -> PortalUser | None:
    """The session's user, if the session is still theirs, in the org they chose.

    A session whose generation is older than the user's (signed out, password
    changed or reset since) is anonymous. The chosen org is checked against the
    user's memberships on every request: a removed membership falls back to the
    only one left, or to none, and the user is asked to choose.
    """
    if not user_id.isdigit():
        return None
    db = get_session()
    user = db.get(User, int(user_id), populate_existing=True)
    if user is None or session.get(SESSION_GENERATION) != user.session_generation:
        return None
    memberships = users.memberships_of(db, user_id=user.id)
    return PortalUser(user, memberships, _chosen(memberships))


def _chosen(memberships: list[Membership]) -> Membership | None:
    wanted = session.get(SESSION_ORG)
    for membership in memberships:
        if membership.org.public_id == wanted:
            return membership
    if len(memberships) == 1:
        session[SESSION_ORG] = memberships[0].org.public_id
        return memberships[0]
    session.pop(SESSION_ORG, None)
    return None


def start_session(user: User, *, org: Organization | None = None) -> PortalUser:
    """Sign ``user`` in on a fresh session (nothing of a previous one carries over)."""
    session.clear()
    session[SESSION_GENERATION] = user.session_generation
    if org is not None:
        session[SESSION_ORG] = org.public_id
    portal_user = load_user(str(user.id))
    if portal_user is None:  # pragma: no cover (the generation was just set)
        abort(500)
    login_user(portal_user)
    return portal_user


def after_sign_in(portal_user: PortalUser, target: str | None) -> str:
    """Where a new session goes: a forced password change, choosing an org, or ``target``."""
    safe = safe_next(target)
    if portal_user.user.must_change_password:
        return url_for("portal.account_password_form", next=safe)
    if portal_user.membership is None and portal_user.memberships:
        return url_for("portal.choose_org", next=safe)
    return safe


def safe_next(target: str | None) -> str:
    """Only same-site relative paths; anything else goes home."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return url_for("portal.home")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return url_for("portal.home")  # browsers drop tabs and newlines: "/\t/evil.com"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return url_for("portal.home")
    return target


def _limit(name: str) -> Callable[[], str]:
    """A rate limit read from the app config when the request is checked."""
    return lambda: str(current_app.config.get(name) or RATE_LIMITS[name])


def _email_key() -> str:
    return "signin:" + (request.form.get("email") or "").strip().lower()[:320]


@bp.route("/signin", methods=["GET", "POST"])
@limiter.limit(_limit("SIGNIN_RATE_LIMIT_PER_ACCOUNT"), methods=["POST"], key_func=_email_key,
               error_message=SIGNIN_LIMITED)
@limiter.limit(_limit("SIGNIN_RATE_LIMIT_PER_ADDRESS"), methods=["POST"],
               error_message=SIGNIN_LIMITED)
def signin() -> ResponseReturnValue:
    """Sign in with email and password; go back to ``next`` if it is a path on this site.

    The password is checked with no transaction open: read, end the read,
    argon2, then one short write of the sign-in time.
    """
    form = SignInForm()
    if form.validate_on_submit():
        db = get_session()
        password = form.password.data or ""
        credentials = users.find_credentials(db, form.email.data or "")
        end_read()
        # An unknown email costs the same argon2 verification as a wrong password.
        if users.check_password(credentials, password) and credentials is not None:
            rehashed = users.rehash_if_needed(credentials, password)
            user = users.record_sign_in(db, credentials=credentials, rehashed=rehashed)
            if user is not None:
                db.commit()
                portal_user = start_session(user)
                return redirect(after_sign_in(portal_user, request.args.get("next")))
        form.password.errors.append("Email or password is incorrect.")
    status = 400 if form.errors else 200
    return render_template("portal/signin.html", form=form), status


@bp.post("/signout")
@login_required
def signout() -> ResponseReturnValue:
    """Sign out (POST with a CSRF token): every session of this user ends, server-side."""
    db = get_session()
    users.end_sessions(db, user_id=current_user.user.id)
    db.commit()
    logout_user()
    session.clear()
    flash("Signed out, in this browser and any other.", "info")
    return redirect(url_for("portal.signin"))


_SIGNUP_FIELDS = {"name": "org_name", "email": "email", "password": "password"}


@bp.route("/signup", methods=["GET", "POST"])
@limiter.limit(_limit("SIGNUP_RATE_LIMIT_PER_ADDRESS"), methods=["POST"],
               error_message=SIGNUP_LIMITED)
def signup() -> ResponseReturnValue:
    """Create an organisation and its first owner, then sign in (only with SIGNUP on)."""
    if not current_app.config.get("SIGNUP"):
        abort(404)
    form = SignUpForm()
    if form.validate_on_submit():
        db = get_session()
        name = (form.org_name.data or "").strip()
        try:
            email = users.normalise_email(form.email.data or "")
            end_read()
            password = users.hash_new_password(form.password.data or "")  # before writing
            if users.find_user(db, email) is not None:
                raise Conflict(EMAIL_UNAVAILABLE)
            who = f"user:{email}"
            org = orgs.create_org(db, name=name, slug=orgs.available_slug(db, name),
                                  actor=Actor(who, source_ip()))
            user = users.create_user(db, email=email, password=password, org=org,
                                     role=Role.OWNER.value, actor=Actor(who, source_ip()))
        except ValidationFailed as e:
            db.rollback()
            field = getattr(form, _SIGNUP_FIELDS.get(e.field or "", "org_name"))
            field.errors.append(sentence(e.message))
        except Conflict:
            db.rollback()
            form.email.errors.append(EMAIL_UNAVAILABLE)
        else:
            db.commit()
            start_session(user, org=org)
            flash(f"Welcome to Latchkey. {org.name} is ready: create your first client.",
                  "success")
            return redirect(url_for("portal.clients"))
    status = 400 if form.errors else 200
    return render_template("portal/signup.html", form=form), status


@bp.errorhandler(TooManyRequests)
def too_many_requests(e: TooManyRequests) -> ResponseReturnValue:
    """A refused sign-in or sign-up shows its form again with a friendly message."""
    if request.endpoint == "portal.signin":
        return render_template("portal/signin.html", form=SignInForm(),
                               limited=e.description), 429
    if request.endpoint == "portal.signup" and current_app.config.get("SIGNUP"):
        return render_template("portal/signup.html", form=SignUpForm(),
                               limited=e.description), 429
    return render_template("errors/error.html", error=e), 429


@bp.errorhandler(CSRFError)
def csrf_failed(e: CSRFError) -> ResponseReturnValue:
    """A portal form without a valid CSRF token: a friendly 400 page, nothing changed."""
    return render_template("errors/error.html", error=e, csrf_failed=True), 400


def init_app(app: Flask) -> None:
    login_manager.login_view = "portal.signin"
    login_manager.login_message = "Sign in to continue."
    login_manager.login_message_category = "info"

    @app.after_request
    def security_headers(response):  # type: ignore[no-untyped-def]
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.context_processor
    def inject_user() -> dict[str, object]:
        return {"current_user": current_user}
