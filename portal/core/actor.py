"""Who makes a change, and from where: what every audit entry records."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Actor:
    """The author of a change: ``user:<email>``, ``api_key:<hint>``, ``cli`` or ``system``,
    and the address the request came from (empty for the CLI)."""

    label: str
    source_ip: str = ""


CLI = Actor("cli")
SYSTEM = Actor("system")
