"""RFC 6749 §5.2 error bodies for ``/oauth/*`` beyond the ones Authlib defines."""

from __future__ import annotations

from authlib.oauth2.rfc6749.errors import InvalidClientError, OAuth2Error


class InvalidTargetError(OAuth2Error):
    """RFC 8707 §2: the requested resource or audience is invalid or not allowed."""

    error = "invalid_target"


class TooManyFailures(OAuth2Error):
    """Too many failed client authentications from one address (HTTP 429)."""

    error = "invalid_request"
    status_code = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            description="Too many failed client authentications from this address; "
            f"retry after {retry_after} seconds."
        )
        self.retry_after = retry_after

    def get_headers(self) -> list[tuple[str, str]]:
        return [*super().get_headers(), ("Retry-After", str(self.retry_after))]


def invalid_client(description: str, *, basic: bool) -> InvalidClientError:
    """``invalid_client``: 401 with ``WWW-Authenticate`` when Basic was used (RFC 6749 §5.2)."""
    return InvalidClientError(description=description, status_code=401 if basic else 400)


def safe_description(text: str, limit: int = 300) -> str:
    """Printable ASCII without quote or backslash, as RFC 6749 §5.2 requires."""
    return "".join(c for c in text if 0x20 <= ord(c) <= 0x7E and c not in '"\\')[:limit]
