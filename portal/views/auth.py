"""Sign in and sign out."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import UserMixin, current_user, login_required, login_user, logout_user
from sqlalchemy import select

from portal.core.db import get_session
from portal.core.users import services as users
from portal.core.users.models import Membership, User
from portal.extensions import limiter, login_manager
from portal.forms.auth import SignInForm
from portal.views import bp


class PortalUser(UserMixin):
    """The signed-in user and the org they are acting in."""

    def __init__(self, user: User, membership: Membership | None) -> None:
        self.user = user
        self.membership = membership

    def get_id(self) -> str:
        return str(self.user.id)


@login_manager.user_loader
def load_user(user_id: str) -> PortalUser | None:
    if not user_id.isdigit():
        return None
    session = get_session()
    user = session.get(User, int(user_id))
    if user is None:
        return None
    membership = session.scalar(
        select(Membership).where(Membership.user_id == user.id).order_by(Membership.id)
    )
    return PortalUser(user, membership)


def _safe_next(target: str | None) -> str:
    """Only same-site relative paths; anything else goes home."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return url_for("portal.home")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return url_for("portal.home")
    return target


def _email_key() -> str:
    return "signin:" + (request.form.get("email") or "").strip().lower()[:320]


@bp.route("/signin", methods=["GET", "POST"])
@limiter.limit("10/minute", methods=["POST"], key_func=_email_key)
@limiter.limit("30/minute", methods=["POST"])
def signin() -> ResponseReturnValue:
    """Sign in with email and password."""
    form = SignInForm()
    if form.validate_on_submit():
        session = get_session()
        user = users.authenticate(session, email=form.email.data or "",
                                  password=form.password.data or "")
        if user is not None:
            session.commit()
            login_user(load_user(str(user.id)))  # type: ignore[arg-type]
            return redirect(_safe_next(request.args.get("next")))
        form.password.errors.append("Email or password is incorrect.")
    return render_template("portal/signin.html", form=form)


@bp.post("/signout")
@login_required
def signout() -> ResponseReturnValue:
    """Sign out (POST with a CSRF token)."""
    logout_user()
    flash("Signed out.", "info")
    return redirect(url_for("portal.signin"))


def init_app(app: Flask) -> None:
    login_manager.login_view = "portal.signin"
    login_manager.login_message = "Sign in to continue."

    @app.after_request
    def security_headers(response):  # type: ignore[no-untyped-def]
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
            "base-uri 'self'; form-action 'self'",
        )
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    @app.context_processor
    def inject_user() -> dict[str, object]:
        return {"current_user": current_user}
