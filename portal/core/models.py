"""Every model, imported once so ``Base.metadata`` is complete (Alembic, tests)."""

from portal.core.api_keys.models import ApiKey
from portal.core.apis.models import Api, ApiScope, ClientGrant
from portal.core.audit.models import AuditEntry
from portal.core.clients.models import AuthMethod, Client, ClientKind, ClientSecret
from portal.core.db import Base
from portal.core.orgs.models import Organization
from portal.core.ratelimit.models import RateLimitCounter
from portal.core.signing_keys.models import KeyState, SigningKey
from portal.core.tokens.models import IssuedToken, TokenSource, UsedAssertion
from portal.core.usage.models import UsageEvent, UsageHourly, UsageKind
from portal.core.users.models import Invitation, Membership, Role, User

__all__ = [
    "Api", "ApiKey", "ApiScope", "AuditEntry", "AuthMethod", "Base", "Client", "ClientGrant",
    "ClientKind", "ClientSecret", "Invitation", "IssuedToken", "KeyState", "Membership",
    "Organization", "RateLimitCounter", "Role", "SigningKey", "TokenSource", "UsageEvent",
    "UsedAssertion", "UsageHourly", "UsageKind", "User",
]
