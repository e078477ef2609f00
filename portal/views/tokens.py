"""Minting a test token for a client, and revoking any token of the org by value or ``jti``.

The minted token is shown on the POST response only (``no_store``), guarded by
a one-time nonce so that reloading it mints nothing. A token of another org is
never found: revoking it reads exactly like revoking an unknown token.
"""

from __future__ import annotations

import json
import shlex
from datetime import UTC, datetime

import jwt
from flask import abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import login_required

from portal.core import settings
from portal.core.clients.models import Client
from portal.core.clients.services import find_client, list_enabled_clients
from portal.core.db import get_session
from portal.core.errors import LatchkeyError, ValidationFailed
from portal.core.tokens import services as tokens
from portal.core.tokens.exchange import TokenRequest
from portal.core.tokens.models import TokenSource
from portal.core.types import utcnow
from portal.forms import attach_error, sentence
from portal.forms.apis import AudiencePicker
from portal.forms.tokens import MintForm, RevokeForm
from portal.views import (
    bp,
    can_manage,
    consume_nonce,
    current_actor,
    current_org,
    issue_nonce,
    no_store,
)
from portal.views.snippets import Snippet, use_snippets

MINT_NONCE = "mint"
ALREADY_MINTED = "That form was already submitted; a minted token is only shown once."
NO_MATCH = "No token of this organisation matches. Nothing was revoked."


def _introspect_snippet(client: Client, token: str) -> Snippet:
    """Introspection with the client's own credentials; the portal never has the secret."""
    url = settings.issuer() + "/oauth/introspect"
    credentials = shlex.quote(client.public_id + ":") + '"$CLIENT_SECRET"'
    return Snippet("snippet-introspect", "Introspect the token (set CLIENT_SECRET first)",
                   f"curl -s {shlex.quote(url)} \\\n  -u {credentials} \\\n"
                   f"  -d token={shlex.quote(token)}")


def _render_form(form: MintForm | None, clients: list[Client], client: Client | None,
                 picker: AudiencePicker | None = None, status: int = 200) -> ResponseReturnValue:
    return render_template("portal/tokens/mint.html", form=form, clients=clients, client=client,
                           picker=picker, ttl_bounds=settings.ttl_bounds()), status


@bp.route("/tokens/mint", methods=["GET", "POST"], endpoint="mint")
@login_required
def mint() -> ResponseReturnValue:
    """Mint a token for one of the org's clients; the response to a valid POST shows it, once."""
    session = get_session()
    clients = list_enabled_clients(session, org_id=current_org().id)
    by_id = {c.public_id: c for c in clients}
    wanted = (request.form.get("client") if request.method == "POST"
              else request.args.get("client")) or ""
    if wanted and wanted not in by_id:
        if find_client(session, org_id=current_org().id, public_id=wanted) is None:
            abort(404)  # another org's client looks exactly like a missing one
        if request.method == "GET":
            flash("That client is disabled: enable it to mint tokens for it.", "warning")
    client = by_id.get(wanted) or (clients[0] if clients and request.method == "GET" else None)
    if client is None or not can_manage():
        if request.method == "POST":  # a client disabled since the form was shown
            flash("That client is disabled or gone; choose another one.", "error")
            return redirect(url_for("portal.mint"))
        return _render_form(None, clients, client)

    form = MintForm()
    picker = AudiencePicker.of(client.grants)
    if request.method == "GET":
        form.client.data = client.public_id
        picker.preselect(client.default_audience)
        form.ttl.data = client.token_ttl
        form.nonce.data = issue_nonce(MINT_NONCE)
        return _render_form(form, clients, client, picker)

    picker.read(request.form)
    if not form.validate_on_submit():
        # The form's own errors, and in the same round the rules' about what it could read.
        asked = TokenRequest(
            scopes=tuple(picker.scopes() or ()) or None,
            audiences=tuple(picker.audiences() or ()) or None,
            ttl=form.ttl.data if not form.ttl.errors else None,
            extra_claims=(form.claims() or None) if not form.custom_claims.errors else None)
        try:
            tokens.check_mint(session, org_id=current_org().id,
                              client_public_id=client.public_id, wanted=asked)
        except ValidationFailed as e:
            _mint_errors(form, picker, e)
    else:
        if not consume_nonce(MINT_NONCE, form.nonce.data):
            flash(ALREADY_MINTED, "warning")
            return redirect(url_for("portal.mint", client=client.public_id))
        try:
            # The token service judges the APIs and scopes as the token endpoint does:
            # another org's API is refused (invalid_target), an ungranted scope too.
            asked = TokenRequest(scopes=tuple(picker.scopes() or ()) or None,
                                 audiences=tuple(picker.audiences() or ()) or None,
                                 ttl=form.ttl.data, extra_claims=form.claims() or None)
            issued = tokens.mint(session, org_id=current_org().id,
                                 client_public_id=client.public_id, wanted=asked,
                                 source=TokenSource.PORTAL,
                                 actor=current_actor())
        except LatchkeyError as e:
            session.rollback()
            if isinstance(e, ValidationFailed):
                _mint_errors(form, picker, e)
            else:
                form.form_errors.append(sentence(e.message))
            form.nonce.data = issue_nonce(MINT_NONCE)  # the old one is spent
        else:
            session.commit()
            return no_store(_render_minted(client, issued))
    return _render_form(form, clients, client, picker, status=400)


def _mint_errors(form: MintForm, picker: AudiencePicker, error: ValidationFailed) -> None:
    """The token service's refusals, each next to its field (APIs and scopes: the picker)."""
    attach_error(form, error, elsewhere={"audience": picker.errors, "scope": picker.errors})


def _render_minted(client: Client, issued: tokens.Issued) -> str:
    token = issued.access_token
    audience = issued.values["audience"][0] if issued.values["audience"] else ""
    snippets = [use_snippets(client.public_id, "", token=token, audience=audience or None)[0],
                _introspect_snippet(client, token)]
    return render_template(
        "portal/tokens/minted.html",
        client=client,
        token=token,
        record=issued.values,
        expires_in=issued.expires_in,
        header_json=json.dumps(jwt.get_unverified_header(token), indent=2),
        claims_json=json.dumps(issued.claims, indent=2),
        claims=issued.claims,
        # exp / iat / nbf are seconds since 1970: shown beside them as UTC times.
        timestamps={name: datetime.fromtimestamp(issued.claims[name], UTC)
                    for name in ("exp", "iat", "nbf")
                    if isinstance(issued.claims.get(name), int)},
        snippets=snippets,
    )


@bp.route("/tokens/revoke", methods=["GET", "POST"], endpoint="revoke")
@login_required
def revoke() -> ResponseReturnValue:
    """Revoke one of the org's tokens, pasted whole or named by its ``jti``."""
    form = RevokeForm()
    if request.method == "GET" or not can_manage():
        return render_template("portal/tokens/revoke.html", form=form)
    if form.validate_on_submit():
        session = get_session()
        result = tokens.revoke_by_reference(
            session, org_id=current_org().id, value=form.token.data or "", actor=current_actor())
        record, client = result.record, result.client
        if record is None:
            form.token.errors = [NO_MATCH]
        else:
            session.commit()
            name = client.name if client is not None else "a deleted client"
            expiry = f"{record.expires_at:%Y-%m-%d %H:%M} UTC"
            if result.revoked and record.expires_at <= utcnow():
                flash(f"Revoked token {record.jti} of {name}; it had already expired at "
                      f"{expiry}.", "success")
            elif result.revoked:
                flash(f"Revoked token {record.jti} of {name}, which was valid until {expiry}. "
                      "It introspects inactive from now on.", "success")
            else:
                when = (f" on {record.revoked_at:%Y-%m-%d %H:%M} UTC"
                        if record.revoked_at else "")
                flash(f"Token {record.jti} of {name} was already revoked{when}; "
                      "nothing changed.", "info")
            return redirect(url_for("portal.revoke"))
    return render_template("portal/tokens/revoke.html", form=form), 400
