"""Asymmetric keys that sign access tokens, one set per organisation."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from portal.core.db import Base
from portal.core.types import CreatedAt, UTCDateTime, text_enum


class KeyState(enum.StrEnum):
    NEXT = "next"  # published in the JWKS, not yet signing
    ACTIVE = "active"  # signing
    RETIRED = "retired"  # published until every token it signed has expired


class SigningKey(Base):
    __tablename__ = "signing_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    kid: Mapped[str] = mapped_column(String(64), unique=True)
    alg: Mapped[str] = mapped_column(String(10))  # RS256, ES256, EdDSA
    state: Mapped[KeyState] = mapped_column(
        text_enum(KeyState, 10)
    )
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    private_key_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)  # Fernet of PKCS#8 PEM
    created_at: Mapped[CreatedAt]
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When a retired key may leave the JWKS: the expiry of the last token it signed.
    publish_until: Mapped[datetime | None] = mapped_column(UTCDateTime)

    SENSITIVE = frozenset({"private_key_ciphertext"})

    def is_published(self, now: datetime) -> bool:
        if self.state is not KeyState.RETIRED:
            return True
        return self.publish_until is not None and self.publish_until > now
