"""A received message and its settlement: ack, retry later or reject, once."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

Settle = Callable[[str], Awaitable[None]]


async def _settle_nothing(reason: str) -> None:
    return None


class Outcome(enum.Enum):
    """How a message was settled."""

    ACKED = "acked"
    RETRY_LATER = "retry_later"
    REJECTED = "rejected"


@dataclass(eq=False)
class Message:
    """One message from a source, with the callbacks that settle it at that source.

    Only the first settlement counts, as in FastStream: later calls are ignored.
    `message_type` is the type given outside the body (a Kafka header...), if any.
    """

    source: str
    body: bytes
    native_id: str | None = None
    message_type: str | None = None
    on_ack: Settle = _settle_nothing
    on_retry_later: Settle = _settle_nothing
    on_reject: Settle = _settle_nothing
    outcome: Outcome | None = field(default=None, init=False)
    reason: str | None = field(default=None, init=False)

    async def ack(self, note: str = "") -> bool:
        """Settle as done: its flow run exists. Returns False if already settled."""
        return await self._settle(Outcome.ACKED, note, self.on_ack)

    async def retry_later(self, reason: str) -> bool:
        """Release it back to the source for a later delivery."""
        return await self._settle(Outcome.RETRY_LATER, reason, self.on_retry_later)

    async def reject(self, reason: str) -> bool:
        """Settle as impossible: dead-letter it where the source has a dead letter."""
        return await self._settle(Outcome.REJECTED, reason, self.on_reject)

    async def _settle(self, outcome: Outcome, reason: str, callback: Settle) -> bool:
        if self.outcome is not None:
            return False
        self.outcome = outcome
        self.reason = reason or None
        await callback(reason)
        return True
