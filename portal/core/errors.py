"""Domain errors, each with a stable ``code`` that the edges translate.

The portal shows ``message`` as a form error or flash, ``/api/v1`` answers
an RFC 9457 problem (``api.v1.problems``) and the CLI prints it on one line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

T = TypeVar("T")


class LatchkeyError(Exception):
    """Base class of every error the domain raises on purpose."""

    code = "error"
    http_status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(LatchkeyError):
    code = "not_found"
    http_status = 404


@dataclass(frozen=True)
class FieldError:
    """One broken rule: the input it is about (None: the whole request) and what is wrong."""

    field: str | None
    message: str


class ValidationFailed(LatchkeyError):
    """Input that breaks one rule or several; ``field`` names the (first) input.

    ``errors`` lists every broken rule: a service that checks several inputs
    collects them all (:class:`Checks`) so the portal shows every error at once
    and the CLI prints every message.
    """

    code = "validation_failed"

    def __init__(self, message: str, *, field: str | None = None,
                 errors: Iterable[FieldError] | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.errors: list[FieldError] = list(errors) if errors else [FieldError(field, message)]

    @classmethod
    def of(cls, errors: list[FieldError]) -> ValidationFailed:
        """Several broken rules as one error; its message joins theirs."""
        return cls("; ".join(e.message for e in errors), field=errors[0].field, errors=errors)


class Checks:
    """Run every check of a request and raise all their failures together.

    ``value = checks.run(check_name, name)`` returns the check's result, or None
    when it failed (the failure is kept); ``checks.done()`` raises them: the one
    failure as it was raised (its subclass and ``code`` kept), several as one
    :class:`ValidationFailed` whose ``errors`` lists each.
    """

    def __init__(self) -> None:
        self.failures: list[ValidationFailed] = []

    def run(self, check: Callable[..., T], *args: object, **kwargs: object) -> T | None:
        try:
            return check(*args, **kwargs)
        except ValidationFailed as e:
            self.failures.append(e)
            return None

    def add(self, failure: ValidationFailed) -> None:
        self.failures.append(failure)

    def failed(self, field: str) -> bool:
        """True when a check about ``field`` failed already."""
        return any(e.field == field for f in self.failures for e in f.errors)

    def done(self) -> None:
        if len(self.failures) == 1:
            raise self.failures[0]
        if self.failures:
            raise ValidationFailed.of([e for f in self.failures for e in f.errors])


class ReservedClaim(ValidationFailed):
    code = "reserved_claim"


class ScopeNotAllowed(ValidationFailed):
    """A scope the client is not granted on the token's API(s): RFC 6749 ``invalid_scope``."""

    code = "invalid_scope"


class AudienceNotAllowed(ValidationFailed):
    """An audience the client is not granted (another org's API too): ``invalid_target``."""

    code = "invalid_target"


class NotPermitted(LatchkeyError):
    """Visible but not changeable by this actor (a deployment API, for an org)."""

    code = "forbidden"
    http_status = 403


class SecretLimitReached(LatchkeyError):
    code = "secret_limit_reached"
    http_status = 409


class Conflict(LatchkeyError):
    code = "conflict"
    http_status = 409


class RotationTooSoon(LatchkeyError):
    """The next key has not been published long enough for resource servers to know it.

    ``ready_at``: when the rotation can happen. The refusal may itself have
    published a next key (an org that had none); the caller commits to keep it.
    """

    code = "rotation_too_soon"
    http_status = 409

    def __init__(self, message: str, *, ready_at: datetime) -> None:
        super().__init__(message)
        self.ready_at = ready_at


class NoSigningKey(LatchkeyError):
    code = "no_signing_key"
    http_status = 503


class UndecryptableKey(LatchkeyError):
    """A stored private key that no configured key-encryption key opens."""

    code = "undecryptable_key"
    http_status = 500
