"""The message loop's owner: bounded concurrency, one decision per message, retries, drain."""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import asdict, dataclass

from router.dispatch import Dispatcher
from router.errors import MessageRejected, PermanentDispatchError, TransientDispatchError
from router.message import Message
from router.routing import TriggerRequest, parse_message, route
from router.sources.base import RouteTarget

BODY_EXCERPT = 2000


def backoff_delay(attempt: int, initial: float, maximum: float, rng: random.Random) -> float:
    """Exponential backoff with equal jitter: between half and all of min(max, initial*2^n)."""
    ceiling = min(maximum, initial * 2 ** max(attempt - 1, 0))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


@dataclass
class RuntimeStats:
    """What the runtime did, for the router's logs and return value."""

    received: int = 0
    triggered: int = 0
    rejected: int = 0
    released: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict."""
        return asdict(self)


class Runtime:
    """Handles messages submitted by sources: route, dispatch with retries, settle once."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        routes: dict[str, dict[str, RouteTarget]],
        logger: logging.Logger | logging.LoggerAdapter,
        *,
        max_concurrency: int = 8,
        retry_initial_seconds: float = 0.5,
        retry_max_seconds: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        self._dispatcher = dispatcher
        self._routes = routes
        self._logger = logger
        self._slots = asyncio.Semaphore(max_concurrency)
        self._retry_initial = retry_initial_seconds
        self._retry_max = retry_max_seconds
        self._rng = rng or random.Random()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self.stats = RuntimeStats()

    async def submit(self, message: Message) -> None:
        """Take a message; waits while `max_concurrency` messages are in flight.

        Once draining has begun, a message is released at once instead.
        """
        if not self._closing:
            await self._slots.acquire()
            if self._closing:
                self._slots.release()
        if self._closing:
            await self._release(message, "router stopping: not dispatched")
            return
        task = asyncio.create_task(self._handle(message))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    @property
    def in_flight(self) -> int:
        """Messages taken and not yet settled."""
        return len(self._tasks)

    async def join(self) -> None:
        """Wait until no message is in flight."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def drain(self, grace_seconds: float) -> None:
        """Let in-flight messages finish for `grace_seconds`, then release what is left."""
        self._closing = True
        if self._tasks:
            self._logger.info(
                "Waiting up to %.0fs for %d in-flight message(s)", grace_seconds, len(self._tasks)
            )
            await asyncio.wait(set(self._tasks), timeout=grace_seconds)
        leftover = set(self._tasks)
        for task in leftover:
            task.cancel()
        if leftover:
            await asyncio.gather(*leftover, return_exceptions=True)

    async def _handle(self, message: Message) -> None:
        try:
            await self.process(message)
        except asyncio.CancelledError:
            await self._release(message, "router stopped before its flow run was created")
            raise
        except Exception as exc:  # a bug here must neither crash the router nor lose the message
            self.stats.released += 1
            self._logger.exception("Internal error on a message from '%s'", message.source)
            await message.retry_later(f"internal error: {exc!r}")

    async def process(self, message: Message) -> None:
        """Route, dispatch and settle one message."""
        self.stats.received += 1
        try:
            parsed = parse_message(message.body, message.message_type)
            requests = route(
                parsed, message.source, message.native_id, self._routes[message.source]
            )
        except MessageRejected as exc:
            await self._reject(message, exc.reason, exc.message_type)
            return
        self._logger.info(
            "Received %s from source '%s' (identity %s)",
            parsed.message_type,
            message.source,
            parsed.message_id or message.native_id,
        )
        for request in requests:
            try:
                flow_run = await self._dispatch(request, message.source)
            except PermanentDispatchError as exc:
                await self._reject(message, str(exc), request.message_type)
                return
            self._logger.info(
                "Triggered flow run '%s' (%s) of '%s' for %s from source '%s'",
                flow_run.name,
                flow_run.id,
                request.deployment,
                request.message_type,
                message.source,
            )
        self.stats.triggered += 1
        await message.ack()

    async def _dispatch(self, request: TriggerRequest, source: str):  # noqa: ANN202
        attempt = 0
        while True:
            try:
                return await self._dispatcher.trigger(request)
            except TransientDispatchError as exc:
                attempt += 1
                delay = backoff_delay(attempt, self._retry_initial, self._retry_max, self._rng)
                self._logger.warning(
                    "Could not trigger '%s' for %s from source '%s' (attempt %d): %s; "
                    "retrying in %.1fs",
                    request.deployment,
                    request.message_type,
                    source,
                    attempt,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)

    async def _release(self, message: Message, reason: str) -> None:
        self.stats.released += 1
        self._logger.error(
            "Released without a flow run (%s) from source '%s': %s",
            reason,
            message.source,
            _excerpt(message.body),
        )
        await message.retry_later(reason)

    async def _reject(self, message: Message, reason: str, message_type: str | None) -> None:
        self.stats.rejected += 1
        self._logger.error(
            "Rejected %s from source '%s': %s; message: %s",
            message_type or "a message",
            message.source,
            reason,
            _excerpt(message.body),
        )
        await message.reject(reason)


def _excerpt(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace")
    return text if len(text) <= BODY_EXCERPT else text[:BODY_EXCERPT] + f"... ({len(text)} chars)"
