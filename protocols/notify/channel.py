"""What every channel adapter is: a rendered message in, an outcome out.

A channel adapter turns one :class:`Message` (a notice rendered for one contact) into the
provider's request and the provider's answer into an :class:`Outcome`. It decides nothing
about retries or dead letters beyond classifying the answer: ``delivered``; ``retry`` (the
provider or the network failed, or asked us to slow down: try again later, with the same
notice id); ``dead`` (the provider refused this message for good: a wrong number, an unknown
template; retrying would only be refused again). The delivery loop does the rest
(``policies.notices``).

Adapters own their I/O and their library types; nothing of httpx or smtplib leaves them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal, Protocol

import attrs

OutcomeKind = Literal["delivered", "retry", "dead"]


@attrs.frozen
class Message:
    """A notice rendered for one contact (``protocols.notify.templates``)."""

    notice_id: str
    kind: str
    channel: str
    address: str
    language: str
    subject: str
    body: str
    fields: Mapping[str, str] = attrs.field(factory=dict)
    """The notice's values (amounts as decimal strings): what template-parameter channels (SMS
    providers, WeChat) send instead of ``body``."""
    tenant: str = ""
    meter: str = ""
    ts_ms: int = 0


@attrs.frozen
class Outcome:
    kind: OutcomeKind
    detail: str = ""
    """The provider's words (an error code and message) for the log and the dead letters."""
    retry_after_s: float | None = None
    """A provider's own wait (HTTP Retry-After, a rate-limit code), when it gave one."""


DELIVERED: Final = Outcome("delivered")


class Channel(Protocol):
    """One channel's adapter. ``send`` never raises for a provider's or the network's failure:
    those are outcomes. It may be called concurrently for different messages."""

    name: str

    async def send(self, message: Message) -> Outcome: ...

    async def aclose(self) -> None: ...
