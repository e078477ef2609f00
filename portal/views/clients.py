"""Clients: the list, creating one (its secret shown once), its detail page and every change to it.

Every lookup goes through ``clients.get_client`` with the signed-in org, so a
client of another org answers 404. Viewers can read the list and the detail
page; the before_request hook in ``portal.views`` refuses their POSTs, and the
form pages (new, edit, delete) answer them 403 too.
"""

from __future__ import annotations

import json
from datetime import timedelta

from flask import abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import login_required
from wtforms import Field
from wtforms.fields.choices import SelectChoice

from portal.core import settings
from portal.core.apis import services as apis
from portal.core.audit import services as audit
from portal.core.clients import services as clients
from portal.core.clients.models import AuthMethod, Client, ClientKind, ClientSecret
from portal.core.db import get_session
from portal.core.errors import NotFound, SecretLimitReached, ValidationFailed
from portal.core.tokens import services as tokens
from portal.core.types import utcnow
from portal.core.usage import services as usage
from portal.core.users import services as users
from portal.core.users.models import User
from portal.forms import attach_error, sentence
from portal.forms.apis import GrantPicker
from portal.forms.clients import (
    PRIVATE_KEY_JWT_CHOICE,
    SECRET_METHOD_CHOICES,
    ClientSettingsForm,
    DeleteClientForm,
    NewClientForm,
    parse_claims,
    parse_expiry,
)
from portal.views import (
    bp,
    can_manage,
    consume_nonce,
    current_actor,
    current_org,
    flash_at,
    issue_nonce,
    no_store,
    redirect_to_section,
)
from portal.views.confirm import Confirmation, confirm_first
from portal.views.pagination import paginate
from portal.views.snippets import (
    export_token_snippet,
    quickstart_snippets,
    token_snippets,
    use_snippets,
)

NEW_CLIENT_NONCE = "client:new"
ALREADY_SUBMITTED = "That form was already submitted; the secret is only shown once."
AUDIT_TRAIL_LENGTH = 20
TOKENS_PER_PAGE = 25


def _secret_nonce(client: Client) -> str:
    return f"client:secret:{client.public_id}"


def _require_manager() -> None:
    """Form pages that only lead to changes are for owners and admins."""
    if not can_manage():
        abort(403, "Your role in this organisation is read-only.")


def _client(public_id: str) -> Client:
    """The signed-in org's client, or 404 (another org's client looks missing)."""
    try:
        return clients.get_client(get_session(), org_id=current_org().id, public_id=public_id)
    except NotFound:
        abort(404)


def _detail_url(client: Client) -> str:
    return url_for("portal.client_detail", client_id=client.public_id)


def _auth_method_choices(client: Client | None) -> list[SelectChoice]:
    """The secret methods, plus private_key_jwt for a client that can use it (set by CLI/API)."""
    choices = list(SECRET_METHOD_CHOICES)
    if client is not None and (client.jwks or AuthMethod.PRIVATE_KEY_JWT in client.auth_methods):
        choices.append(PRIVATE_KEY_JWT_CHOICE)
    return choices


def _picker() -> GrantPicker:
    """The APIs the org's clients can be granted, to tick on the client form."""
    return GrantPicker.offering(apis.list_apis(get_session(), org_id=current_org().id))


def _domain_error(form: ClientSettingsForm, picker: GrantPicker, error: ValidationFailed) -> None:
    """A service's errors, each next to its field (grants: on the picker)."""
    attach_error(form, error, elsewhere={"grants": picker.errors, "default_api": picker.errors})


def _rule_errors(form: ClientSettingsForm, picker: GrantPicker, *,
                 client: Client | None = None, kind: str | None = None,
                 user: User | None = None) -> None:
    """A form that failed its own checks also shows the service's rules, in the same round.

    Only what could be read is checked (a TTL that is not a number is not
    checked against its bounds); the rules are the service's
    (``check_client_settings``), the same ones create and update apply.
    """
    def readable(field: Field) -> bool:
        return not field.errors

    try:
        clients.check_client_settings(
            get_session(), org=current_org(), client=client,
            name=form.name.data if readable(form.name) else None,
            ttl=form.ttl.data if readable(form.ttl) else None,
            custom_claims=(parse_claims(form.custom_claims.data)
                           if readable(form.custom_claims) else None),
            auth_methods=list(form.auth_methods.data or []) if readable(form.auth_methods)
            else None,
            grants=None if picker.errors else picker.grants(),
            default_api=None if picker.errors else picker.default_api(),
            kind=kind, user=user)
    except ValidationFailed as e:
        _domain_error(form, picker, e)


def _show_secret(client: Client, plaintext: str, *, secret: ClientSecret | None,
                 created: bool) -> ResponseReturnValue:
    """The one response that ever shows this secret: never cached, never stored."""
    snippets = [
        *token_snippets(client.public_id, plaintext),
        export_token_snippet(client.public_id, plaintext),
        *use_snippets(client.public_id, plaintext, audience=client.default_audience),
    ]
    return no_store(render_template(
        "portal/clients/created.html", client=client, plaintext=plaintext, secret=secret,
        created=created, snippets=snippets,
    ))


# -- the list and creating a client ---------------------------------------------------


@bp.get("/clients", endpoint="clients")
@login_required
def clients_list() -> ResponseReturnValue:
    """The org's clients with when each was last used and its tokens in the last 24 hours."""
    org = current_org()
    session = get_session()
    rows = clients.list_clients_with_stats(session, org_id=org.id)
    # A new org (no client, or no token yet) is shown how to get its first token.
    getting_started = not rows or not usage.has_issued_tokens(session, org_id=org.id)
    quickstart = quickstart_snippets(rows[0].client.public_id if rows else None)
    return render_template("portal/clients/list.html", org=org, rows=rows,
                           issuer=settings.issuer(), getting_started=getting_started,
                           quickstart=quickstart)


@bp.route("/clients/new", methods=["GET", "POST"])
@login_required
def clients_new() -> ResponseReturnValue:
    """Create a client; the response to a valid POST shows its secret, once."""
    _require_manager()
    session = get_session()
    org = current_org()
    members = {m.user.public_id: m for m in users.list_members(session, org_id=org.id)}
    form = NewClientForm()
    form.user.choices = [SelectChoice("", "— choose a member —")] + [
        SelectChoice(public_id, f"{m.user.email} ({m.role.value})")
        for public_id, m in members.items()]
    picker = _picker()
    if len(picker.choices) == 1 and request.method == "GET":
        picker.choices[0].chosen = True  # the only API there is
    if request.method == "GET":
        form.ttl.data = settings.ttl_bounds()[1]
        form.nonce.data = issue_nonce(NEW_CLIENT_NONCE)
    else:
        picker.read(request.form)
    # Every error at once: the form's, the picker's and the service's rules.
    valid = request.method == "POST" and (form.validate_on_submit() & picker.check())
    if request.method == "POST" and not valid:
        kind = "" if form.kind.errors else (form.kind.data or "")
        chosen = members.get(form.user.data or "") if kind == ClientKind.USER.value else None
        _rule_errors(form, picker, kind=kind or None,
                     user=chosen.user if chosen else None)
    if valid:
        if not consume_nonce(NEW_CLIENT_NONCE, form.nonce.data):
            flash(ALREADY_SUBMITTED, "warning")
            return redirect(url_for("portal.clients"))
        kind = form.kind.data or ""
        member = members.get(form.user.data or "") if kind == ClientKind.USER.value else None
        try:
            plaintext, client = clients.create_client(
                session, org=org, kind=kind, user=member.user if member else None,
                grants=picker.grants(), default_api=picker.default_api(),
                actor=current_actor(), **form.settings())
        except ValidationFailed as e:
            session.rollback()
            _domain_error(form, picker, e)
            form.nonce.data = issue_nonce(NEW_CLIENT_NONCE)  # the old one is spent
        else:
            session.commit()
            if plaintext is None:  # only private_key_jwt: there is no secret to show
                flash(f"Client {client.name} created.", "success")
                return redirect(_detail_url(client))
            return _show_secret(client, plaintext, secret=None, created=True)
    status = 400 if request.method == "POST" else 200
    return render_template("portal/clients/new.html", form=form, picker=picker,
                           ttl_bounds=settings.ttl_bounds()), status


# -- the detail page ------------------------------------------------------------------


def _render_detail(client: Client, *, status: int = 200,
                   expiry_errors: dict[int, str] | None = None,
                   add_error: str | None = None,
                   typed: str = "") -> ResponseReturnValue:
    """The client page; after a refused secret change, with the error and what was typed."""
    session = get_session()
    now = utcnow()
    token_page = paginate(session, tokens.active_tokens_query(client=client, now=now),
                          per_page=TOKENS_PER_PAGE)
    buckets = usage.series(session, org_id=client.org_id, start=now - timedelta(hours=23),
                           end=now, bucket="hour", client_id=client.id)
    trail = audit.list_entries(session, org_id=client.org_id, target_type="client",
                               target_id=client.public_id, limit=AUDIT_TRAIL_LENGTH)
    usage_url = url_for("portal.usage", client=client.public_id)
    return render_template(
        "portal/clients/detail.html",
        client=client,
        now=now,
        secrets=sorted(client.secrets, key=lambda s: s.id, reverse=True),
        active_count=len(client.active_secrets(now)),
        max_secrets=settings.max_active_secrets(),
        token_page=token_page,
        buckets=buckets,
        trail=trail,
        usage_url=usage_url,
        claims_json=json.dumps(client.custom_claims, indent=2, sort_keys=True),
        secret_nonce=issue_nonce(_secret_nonce(client)) if can_manage() else "",
        expiry_errors=expiry_errors or {},
        add_error=add_error,
        typed=typed,
    ), status


@bp.get("/clients/<client_id>")
@login_required
def client_detail(client_id: str) -> ResponseReturnValue:
    """A client's settings, secrets, active tokens, usage and audit trail."""
    return _render_detail(_client(client_id))


@bp.route("/clients/<client_id>/edit", methods=["GET", "POST"])
@login_required
def clients_edit(client_id: str) -> ResponseReturnValue:
    """Change a client's settings (not its kind)."""
    _require_manager()
    session = get_session()
    client = _client(client_id)
    picker = _picker()
    if request.method == "GET":
        form = ClientSettingsForm(data={
            "name": client.name,
            "description": client.description,
            "ttl": client.token_ttl,
            "custom_claims": (json.dumps(client.custom_claims, indent=2, sort_keys=True)
                              if client.custom_claims else ""),
            "auth_methods": list(client.auth_methods),
        })
        picker.show([(g.api, g.scopes) for g in client.grants], client.default_api)
    else:
        form = ClientSettingsForm()
        picker.read(request.form)
    form.auth_methods.choices = _auth_method_choices(client)
    valid = request.method == "POST" and (form.validate_on_submit() & picker.check())
    if request.method == "POST" and not valid:
        _rule_errors(form, picker, client=client)
    if valid:
        try:
            changed = clients.update_client(session, client, actor=current_actor(),
                                            grants=picker.grants(),
                                            default_api=picker.default_api(), **form.settings())
        except ValidationFailed as e:
            session.rollback()
            _domain_error(form, picker, e)
        else:
            session.commit()
            if changed:
                labels = ", ".join(_CHANGE_LABELS.get(f) or getattr(form, f).label.text.lower()
                                   for f in changed)
                flash(f"Saved {client.name}: changed {labels}.", "success")
            else:
                flash("Nothing changed.", "info")
            return redirect(_detail_url(client))
    status = 400 if request.method == "POST" else 200
    return render_template("portal/clients/edit.html", form=form, client=client, picker=picker,
                           ttl_bounds=settings.ttl_bounds()), status


#: Changed fields of ``update_client`` that are not a form field of the same name.
_CHANGE_LABELS = {"token_ttl": "token lifetime (seconds)", "grants": "APIs and scopes"}


# -- secrets --------------------------------------------------------------------------


@bp.post("/clients/<client_id>/secrets")
@login_required
def clients_add_secret(client_id: str) -> ResponseReturnValue:
    """Add a secret (optionally expiring); the response shows it, once."""
    session = get_session()
    client = _client(client_id)
    if not consume_nonce(_secret_nonce(client), request.form.get("nonce")):
        flash_at(ALREADY_SUBMITTED, "warning", "secrets")
        return redirect_to_section(_detail_url(client), "secrets")
    typed = (request.form.get("expires_at") or "")[:40]
    try:
        expires_at = parse_expiry(typed)
        plaintext, secret = clients.add_secret(session, client, expires_at=expires_at,
                                               actor=current_actor())
    except SecretLimitReached as e:
        session.rollback()
        flash_at(sentence(e.message), "error", "secrets")
        return redirect_to_section(_detail_url(client), "secrets")
    except ValidationFailed as e:
        session.rollback()
        return _render_detail(client, status=400, add_error=sentence(e.message), typed=typed)
    session.commit()
    return _show_secret(client, plaintext, secret=secret, created=False)


@bp.post("/clients/<client_id>/secrets/<int:secret_id>/expiry")
@login_required
def clients_secret_expiry(client_id: str, secret_id: int) -> ResponseReturnValue:
    """Set or move the expiry of an active secret."""
    session = get_session()
    client = _client(client_id)
    typed = (request.form.get("expires_at") or "")[:40]
    try:
        expires_at = parse_expiry(typed)
        if expires_at is None:
            raise ValidationFailed("choose the date and time the secret expires",
                                   field="expires_at")
        secret = clients.set_secret_expiry(session, client, secret_id=secret_id,
                                           expires_at=expires_at, actor=current_actor())
    except NotFound:
        abort(404)
    except ValidationFailed as e:
        session.rollback()
        return _render_detail(client, status=400,
                              expiry_errors={secret_id: sentence(e.message)}, typed=typed)
    session.commit()
    flash_at(f"Secret …{secret.hint} now expires {expires_at:%Y-%m-%d %H:%M} UTC.", "success",
             "secrets")
    return redirect_to_section(_detail_url(client), "secrets")


def _confirm_revoke_secret(client_id: str, secret_id: int) -> Confirmation:
    client = _client(client_id)
    secret = next((s for s in client.secrets if s.id == secret_id and not s.revoked_at), None)
    if secret is None:
        abort(404)
    return Confirmation(
        title=f"Revoke secret …{secret.hint} of {client.name}?",
        consequence="Anything still using this secret gets invalid_client from now on. "
                    "The client's other active secrets keep working. This cannot be undone.",
        button="Revoke secret", back=_detail_url(client) + "#secrets")


@bp.route("/clients/<client_id>/secrets/<int:secret_id>/revoke", methods=["GET", "POST"])
@login_required
@confirm_first(_confirm_revoke_secret, allowed=can_manage)
def clients_revoke_secret(client_id: str, secret_id: int) -> ResponseReturnValue:
    """Revoke a secret: the token endpoint refuses it from now on."""
    session = get_session()
    client = _client(client_id)
    try:
        secret = clients.revoke_secret(session, client, secret_id=secret_id, actor=current_actor())
    except NotFound:
        abort(404)
    session.commit()
    flash_at(f"Secret …{secret.hint} revoked.", "success", "secrets")
    return redirect_to_section(_detail_url(client), "secrets")


# -- tokens ---------------------------------------------------------------------------


def _confirm_revoke_token(client_id: str, jti: str) -> Confirmation:
    client = _client(client_id)
    return Confirmation(
        title=f"Revoke token {jti[:64]} of {client.name}?",
        consequence="It introspects inactive from now on; the service using it needs a new "
                    "token. Resource servers that only check the signature accept it until "
                    "it expires.",
        button="Revoke token", back=_detail_url(client) + "#tokens")


@bp.route("/clients/<client_id>/tokens/<jti>/revoke", methods=["GET", "POST"])
@login_required
@confirm_first(_confirm_revoke_token, allowed=can_manage)
def clients_revoke_token(client_id: str, jti: str) -> ResponseReturnValue:
    """Revoke one of this client's tokens (another client's token is 404)."""
    session = get_session()
    client = _client(client_id)
    record = tokens.find_record(session, org_id=client.org_id, jti=jti[:64])
    if record is None or record.client_id != client.id:
        abort(404)
    if tokens.revoke_from_portal(session, record, actor=current_actor()):
        flash_at(f"Token {record.jti} revoked; it introspects inactive from now on.", "success",
                 "tokens")
    else:
        flash_at(f"Token {record.jti} was already revoked.", "info", "tokens")
    session.commit()
    return redirect_to_section(_detail_url(client), "tokens")


def _confirm_revoke_all(client_id: str) -> Confirmation:
    client = _client(client_id)
    return Confirmation(
        title=f"Revoke every active token of {client.name}?",
        consequence="Every token it holds introspects inactive from now on; its services "
                    "need new tokens (its secrets keep working). This cannot be undone.",
        button="Revoke all tokens", back=_detail_url(client) + "#tokens")


@bp.route("/clients/<client_id>/tokens/revoke-all", methods=["GET", "POST"])
@login_required
@confirm_first(_confirm_revoke_all, allowed=can_manage)
def clients_revoke_all(client_id: str) -> ResponseReturnValue:
    """Revoke every active token of this client."""
    session = get_session()
    client = _client(client_id)
    count = tokens.revoke_all_for_client(session, client, actor=current_actor())
    session.commit()
    flash_at(f"Revoked {count} active token{'' if count == 1 else 's'} of {client.name}.",
             "success", "tokens")
    return redirect_to_section(_detail_url(client), "tokens")


# -- enabling, disabling, deleting ----------------------------------------------------


def _set_enabled(client_id: str, *, enabled: bool) -> ResponseReturnValue:
    session = get_session()
    client = _client(client_id)
    clients.set_enabled(session, client, enabled=enabled, actor=current_actor())
    session.commit()
    if enabled:
        flash_at(f"{client.name} enabled: it can get tokens again.", "success", "settings")
    else:
        flash_at(f"{client.name} disabled: it gets no tokens and its tokens are inactive.",
                 "success", "settings")
    return redirect_to_section(_detail_url(client), "settings")


def _confirm_disable(client_id: str) -> Confirmation:
    client = _client(client_id)
    return Confirmation(
        title=f"Disable {client.name}?",
        consequence="It gets no new tokens (the token endpoint answers unauthorized_client) "
                    "and its tokens stop introspecting as active. You can enable it again.",
        button="Disable client", back=_detail_url(client))


@bp.route("/clients/<client_id>/disable", methods=["GET", "POST"])
@login_required
@confirm_first(_confirm_disable, allowed=can_manage)
def clients_disable(client_id: str) -> ResponseReturnValue:
    """Disable a client: no new tokens, and its tokens introspect inactive."""
    return _set_enabled(client_id, enabled=False)


@bp.post("/clients/<client_id>/enable")
@login_required
def clients_enable(client_id: str) -> ResponseReturnValue:
    """Enable a disabled client again."""
    return _set_enabled(client_id, enabled=True)


@bp.route("/clients/<client_id>/delete", methods=["GET", "POST"])
@login_required
def clients_delete(client_id: str) -> ResponseReturnValue:
    """Confirm, then delete a client with its secrets and tokens."""
    _require_manager()
    session = get_session()
    client = _client(client_id)
    form = DeleteClientForm()
    if form.validate_on_submit():
        if (form.confirm_name.data or "").strip() != client.name:
            form.confirm_name.errors = ["That is not the client's name; nothing was deleted."]
        else:
            name = client.name
            clients.delete_client(session, client, actor=current_actor())
            session.commit()
            flash(f"Client {name} deleted; its tokens are no longer valid.", "success")
            return redirect(url_for("portal.clients"))
    status = 400 if request.method == "POST" else 200
    return render_template("portal/clients/delete.html", form=form, client=client), status
