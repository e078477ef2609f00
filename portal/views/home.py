"""The portal home: the signed-in org's clients."""

from __future__ import annotations

from flask import redirect, url_for
from flask.typing import ResponseReturnValue
from flask_login import login_required

from portal.views import bp


@bp.get("/")
@login_required
def home() -> ResponseReturnValue:
    """The portal starts at the clients list."""
    return redirect(url_for("portal.clients"))
