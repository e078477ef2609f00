"""Domain errors, each with a stable ``code`` that the edges translate.

The portal shows ``message`` as a form error or flash, ``/api/v1`` answers
an RFC 9457 problem (``api.v1.problems``) and the CLI prints it on one line.
"""

from __future__ import annotations

from datetime import datetime


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


class ValidationFailed(LatchkeyError):
    """Input that breaks a rule; ``field`` names the input when there is one."""

    code = "validation_failed"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


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
