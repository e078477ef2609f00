"""The portal home: the signed-in org's clients."""

from __future__ import annotations

from flask import render_template
from flask.typing import ResponseReturnValue
from flask_login import current_user, login_required

from portal.core import settings
from portal.core.clients import services as clients
from portal.core.db import get_session
from portal.views import bp


@bp.get("/")
@login_required
def home() -> ResponseReturnValue:
    """The org's clients and the endpoints its APIs use."""
    membership = current_user.membership
    client_list = (
        clients.list_clients(get_session(), org_id=membership.org_id) if membership else []
    )
    return render_template(
        "portal/home.html", membership=membership, clients=client_list, issuer=settings.issuer()
    )
