"""In-memory stand-ins for unit tests of the runtime's logic (never a source's only test)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

from router.errors import PermanentDispatchError, TransientDispatchError
from router.message import Message
from router.routing import TriggerRequest


@dataclass
class FakeRun:
    id: uuid.UUID
    name: str


@dataclass
class FakeDispatcher:
    """Creates runs in memory; `failures` are raised first, one per call."""

    failures: list[Exception] = field(default_factory=list)
    delay: float = 0.0
    runs: dict[str, FakeRun] = field(default_factory=dict)
    calls: list[TriggerRequest] = field(default_factory=list)
    active: int = 0
    peak: int = 0

    async def trigger(self, request: TriggerRequest) -> FakeRun:
        self.calls.append(request)
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.failures:
                raise self.failures.pop(0)
            run = self.runs.get(request.idempotency_key)
            if run is None:
                run = FakeRun(uuid.uuid4(), f"run-{len(self.runs)}")
                self.runs[request.idempotency_key] = run
            return run
        finally:
            self.active -= 1


@dataclass
class Settlements:
    """Records what each message's source was told."""

    log: list[tuple[str, str, str]] = field(default_factory=list)

    def message(self, body: bytes, native_id: str = "1", source: str = "src") -> Message:
        async def record(kind: str, reason: str) -> None:
            self.log.append((native_id, kind, reason))

        return Message(
            source=source,
            body=body,
            native_id=native_id,
            on_ack=lambda reason: record("ack", reason),
            on_retry_later=lambda reason: record("retry_later", reason),
            on_reject=lambda reason: record("reject", reason),
        )


__all__ = ["FakeDispatcher", "Settlements", "PermanentDispatchError", "TransientDispatchError"]
