"""Forms of the APIs pages: register or edit an API, add or describe a scope, and the
API-and-scope pickers of the client and mint forms.

Each field's validator runs the domain's own check (``portal.core.apis.services``),
so a submit shows every error at once; the service checks again, and adds the
rules that need the database (an identifier already taken).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from flask_wtf import FlaskForm
from werkzeug.datastructures import MultiDict
from wtforms import Field, IntegerField, StringField, TextAreaField, ValidationError
from wtforms.validators import InputRequired, Length, Optional

from portal.core.apis import services as apis
from portal.core.apis.models import Api
from portal.core.errors import ValidationFailed
from portal.forms import sentence


def _checked(check: Callable[..., Any]) -> Callable[[FlaskForm, Field], None]:
    """A WTForms validator running a domain check on the field's data."""

    def validate(_form: FlaskForm, field: Field) -> None:
        try:
            check(field.data)
        except ValidationFailed as e:
            raise ValidationError(sentence(e.message)) from e

    return validate


def parse_scope_lines(text: str | None) -> list[tuple[str, str]]:
    """Scopes typed one per line: the name, then optionally its description."""
    scopes = []
    for line in (text or "").splitlines():
        name, _, description = line.strip().partition(" ")
        if name:
            scopes.append((name, description.strip()))
    return scopes


def _check_scope_lines(text: str | None) -> None:
    for name, description in parse_scope_lines(text):
        apis.check_scope(name, description)


class ApiSettingsForm(FlaskForm):
    """What can change after an API is registered (the identifier cannot)."""

    name = StringField("Name", validators=[
        InputRequired(message="Give the API a name."), Length(max=200)])
    description = TextAreaField("Description", validators=[Length(max=2000)])
    default_ttl = IntegerField("Default token lifetime (seconds)", validators=[Optional()])
    max_ttl = IntegerField("Maximum token lifetime (seconds)", validators=[Optional()])

    def validate_default_ttl(self, field: Field) -> None:
        _checked(lambda v: apis.check_lifetimes(v, None))(self, field)

    def validate_max_ttl(self, field: Field) -> None:
        _checked(lambda v: apis.check_lifetimes(None, v))(self, field)
        if not self.default_ttl.errors and field.data is not None \
                and self.default_ttl.data is not None and self.default_ttl.data > field.data:
            raise ValidationError("The maximum cannot be shorter than the default lifetime.")

    def settings(self) -> dict[str, Any]:
        return {"name": self.name.data or "", "description": self.description.data or "",
                "default_ttl": self.default_ttl.data, "max_ttl": self.max_ttl.data}


class NewApiForm(ApiSettingsForm):
    """Registering an API: its identifier (for good) and its first scopes."""

    identifier = StringField("Identifier", validators=[
        InputRequired(message="Enter the API's identifier, like https://api.example.com."),
        _checked(apis.check_identifier)])
    scopes = TextAreaField("Scopes", validators=[Length(max=20000), _checked(_check_scope_lines)])

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "identifier": self.identifier.data or "",
                "scopes": parse_scope_lines(self.scopes.data)}


class ScopeForm(FlaskForm):
    """Add a scope to an API."""

    scope = StringField("Scope", validators=[
        InputRequired(message="Enter the scope's name, like orders:read."),
        _checked(apis.check_scope)])
    scope_description = StringField("What it allows", validators=[
        Length(max=apis.MAX_SCOPE_DESCRIPTION)])


class ScopeDescriptionForm(FlaskForm):
    """Describe an existing scope (its name never changes)."""

    scope_description = StringField("What it allows", validators=[
        Length(max=apis.MAX_SCOPE_DESCRIPTION)])


# -- the pickers --------------------------------------------------------------------------


@dataclass
class ApiChoice:
    """One API in a picker, with the scopes offered and those ticked."""

    api: Api
    scopes: list[tuple[str, str]]  # (name, description) offered
    chosen: bool = False
    ticked: set[str] = field(default_factory=set)

    @property
    def key(self) -> str:
        return self.api.public_id


@dataclass
class GrantPicker:
    """The client form's APIs: one fieldset per API the org sees, a box to grant it and
    a box per scope; ``default`` is the API a token request without audience gets.

    Works without JavaScript: ticking a scope grants its API too.
    """

    choices: list[ApiChoice]
    default: str = ""  # public id
    errors: list[str] = field(default_factory=list)

    @classmethod
    def offering(cls, visible: Sequence[Api]) -> GrantPicker:
        return cls([ApiChoice(api, [(s.name, s.description) for s in api.scopes])
                    for api in visible])

    def show(self, grants: Sequence[tuple[Api, Sequence[str]]], default: Api | None) -> None:
        """Tick what a client already has."""
        held = {api.id: set(scopes) for api, scopes in grants}
        for choice in self.choices:
            if choice.api.id in held:
                choice.chosen, choice.ticked = True, held[choice.api.id]
        self.default = default.public_id if default is not None else ""

    def read(self, formdata: MultiDict[str, str]) -> None:
        """Take what was ticked from a submitted form."""
        granted = set(formdata.getlist("api"))
        for choice in self.choices:
            choice.ticked = set(formdata.getlist(f"scopes-{choice.key}"))
            choice.chosen = choice.key in granted or bool(choice.ticked)
        self.default = formdata.get("default_api", "")

    def grants(self) -> list[tuple[Api, list[str]]]:
        """Each API ticked with its scopes ticked (anything else ticked too: the service
        refuses a name that is not the API's, rather than this form dropping it)."""
        grants = []
        for c in self.choices:
            if c.chosen:
                offered = [s for s, _ in c.scopes if s in c.ticked]
                grants.append((c.api, offered + sorted(c.ticked - set(offered))))
        return grants

    def default_api(self) -> Api | None:
        return next((c.api for c in self.choices if c.key == self.default), None)

    def check(self) -> bool:
        """The picker's own errors (the service checks the rest); True when none."""
        if not any(c.chosen for c in self.choices):
            self.errors.append("Choose at least one API the client may get tokens for.")
        elif self.default and not any(c.chosen and c.key == self.default
                                      for c in self.choices):
            self.errors.append("The default API must be one of the APIs ticked.")
        return not self.errors


@dataclass
class AudiencePicker:
    """The mint form's APIs: the client's grants, one fieldset each with a box for the
    API (an ``aud`` of the token) and a box per granted scope.

    What is posted goes to the token service as it is, so an audience or scope the
    client is not granted (typed into a crafted request) is refused there, exactly
    as the token endpoint refuses it.
    """

    choices: list[ApiChoice]
    errors: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)  # posted audiences the client lacks

    @classmethod
    def of(cls, grants: Sequence[Any]) -> AudiencePicker:
        """From a client's grants (``ClientGrant`` rows)."""
        choices = []
        for grant in grants:
            about = {s.name: s.description for s in grant.api.scopes}
            choices.append(ApiChoice(grant.api, [(s, about.get(s, "")) for s in grant.scopes]))
        return cls(choices)

    def preselect(self, default_audience: str | None) -> None:
        """The default API with every scope granted on it."""
        for choice in self.choices:
            if choice.api.identifier == default_audience:
                choice.chosen, choice.ticked = True, {s for s, _ in choice.scopes}

    def read(self, formdata: MultiDict[str, str]) -> None:
        posted = [a for a in formdata.getlist("audience") if a]
        known = {c.api.identifier for c in self.choices}
        for choice in self.choices:
            choice.ticked = set(formdata.getlist(f"scopes-{choice.key}"))
            choice.chosen = choice.api.identifier in posted or bool(choice.ticked)
        self.extra = [a[:300] for a in posted if a not in known]

    def audiences(self) -> list[str] | None:
        """The ``aud`` values asked for (None: the client's default API)."""
        chosen = [c.api.identifier for c in self.choices if c.chosen] + self.extra
        return chosen or None

    def scopes(self) -> list[str] | None:
        """The scopes asked for (None: every scope granted on the chosen APIs)."""
        picked: dict[str, None] = {}
        for choice in self.choices:
            if choice.chosen:
                offered = [s for s, _ in choice.scopes if s in choice.ticked]
                picked.update(dict.fromkeys(offered + sorted(choice.ticked - set(offered))))
        return list(picked) or None
