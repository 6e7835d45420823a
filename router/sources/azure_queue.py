"""Azure Storage Queue: batches, delete after trigger, poison queue, visibility kept while held."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from router.message import Message
from router.sources.base import (
    Logger,
    Outstanding,
    Source,
    SourceConfig,
    Submit,
    read_secret,
    wait_or_stop,
)

if TYPE_CHECKING:
    from azure.storage.queue import QueueMessage
    from azure.storage.queue.aio import QueueClient

SETTLE_ATTEMPTS = 5


class AzureStorageQueueConfig(SourceConfig):
    """Read messages from an Azure Storage Queue (the original tool's production source)."""

    publisher_type: Literal["AzureStorageQueue"]
    storage_account: str | None = Field(
        default=None,
        description=(
            "Storage account name; with no connection string, the router signs in with "
            "DefaultAzureCredential at https://<account>.queue.core.windows.net."
        ),
    )
    queue_name: str = Field(min_length=3, max_length=63, description="The queue to read.")
    account_url: str | None = Field(
        default=None,
        description="Queue service URL, for Azurite or sovereign clouds (overrides the account).",
    )
    connection_string_env: str | None = Field(
        default=None, description="Name of an environment variable holding a connection string."
    )
    connection_string_secret: str | None = Field(
        default=None, description="Name of a Prefect Secret block holding a connection string."
    )
    batch_size: int = Field(default=16, ge=1, le=32, description="Messages received per request.")
    visibility_timeout_seconds: int = Field(
        default=30,
        ge=2,
        le=7 * 24 * 3600,
        description="How long a received message stays hidden; extended while it is handled.",
    )
    max_dequeue_count: int = Field(
        default=5, ge=1, description="Deliveries after which a message goes to the poison queue."
    )
    poison_queue_name: str | None = Field(
        default=None, description="Dead-letter queue; defaults to '<queue_name>-poison'."
    )
    message_encoding: Literal["auto", "base64", "text"] = Field(
        default="auto",
        description="'base64' (as Azure Functions send), 'text', or 'auto': JSON text if it "
        "looks like JSON, otherwise base64.",
    )
    min_poll_interval_seconds: float = Field(
        default=0.1, gt=0, description="Pause after an empty receive, doubled while idle..."
    )
    max_poll_interval_seconds: float = Field(default=10.0, gt=0, description="...up to this pause.")

    @model_validator(mode="after")
    def _one_way_in(self) -> AzureStorageQueueConfig:
        if self.connection_string_env and self.connection_string_secret:
            raise ValueError("set connection_string_env or connection_string_secret, not both")
        if not (
            self.storage_account
            or self.account_url
            or self.connection_string_env
            or self.connection_string_secret
        ):
            raise ValueError(
                "set storage_account (or account_url), connection_string_env or "
                "connection_string_secret"
            )
        if self.min_poll_interval_seconds > self.max_poll_interval_seconds:
            raise ValueError("min_poll_interval_seconds is above max_poll_interval_seconds")
        return self

    @property
    def poison_queue(self) -> str:
        """The dead-letter queue's name."""
        return self.poison_queue_name or f"{self.queue_name}-poison"

    @property
    def queue_url(self) -> str | None:
        """The queue service URL when signing in with a credential."""
        if self.account_url:
            return self.account_url.rstrip("/")
        if self.storage_account:
            return f"https://{self.storage_account}.queue.core.windows.net"
        return None

    def default_name(self) -> str:
        """`azure:<account>/<queue>`."""
        return f"azure:{self.storage_account or 'queue'}/{self.queue_name}"

    def build(self) -> AzureQueueSource:
        """A source reading this queue."""
        return AzureQueueSource(self)


def decode_content(content: str, encoding: str) -> bytes:
    """The message body from a queue message's text; ValueError if it cannot be decoded."""
    if encoding == "text" or (encoding == "auto" and content.lstrip()[:1] in ("{", "[")):
        return content.encode("utf-8")
    try:
        return base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError):
        if encoding == "base64":
            raise ValueError("not valid base64") from None
        return content.encode("utf-8")  # auto: neither JSON-looking nor base64; let routing say


@dataclass(eq=False)
class Held:
    """A received message until it is settled: its pop receipt changes on every extension."""

    queue_message: QueueMessage
    pop_receipt: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def id(self) -> str:
        """The queue message id."""
        return self.queue_message.id


class AzureQueueSource(Source):
    """Competing consumer of one queue; deletes a message only once its flow run exists."""

    kind = "AzureStorageQueue"

    def __init__(self, config: AzureStorageQueueConfig) -> None:
        super().__init__(config.source_name)
        self.config = config
        self._held: Outstanding[Held] = Outstanding()
        self._rng = random.Random()
        self._logger: Logger = logging.getLogger(__name__)
        self._queue: QueueClient | None = None
        self._poison: QueueClient | None = None
        self._poison_ready = False

    async def run(self, submit: Submit, stopping: asyncio.Event, logger: Logger) -> None:
        """Receive until stopped, then wait until everything received is settled."""
        self._logger = logger
        async with self._clients() as (queue, poison):
            self._queue, self._poison = queue, poison
            extender = asyncio.create_task(self._keep_invisible())
            try:
                await self._receive(submit, stopping)
            finally:
                # The runtime settles or releases everything it took (bounded by its grace).
                await self._held.wait_empty()
                extender.cancel()

    @asynccontextmanager
    async def _clients(self) -> AsyncIterator[tuple[QueueClient, QueueClient]]:
        from azure.storage.queue.aio import QueueClient

        config = self.config
        # The SDK's default retries wait 15 s and more (its ExponentialRetry takes these):
        # one quick retry here, and the source's own backoff on top.
        options: dict[str, Any] = {
            "initial_backoff": 1,
            "increment_base": 2,
            "retry_total": 1,
            "random_jitter_range": 1,
            "connection_timeout": 10,
        }
        connection_string = await read_secret(
            self.name,
            "connection_string_env",
            config.connection_string_env,
            config.connection_string_secret,
        )
        credential = None
        if connection_string:
            queue = QueueClient.from_connection_string(
                connection_string, config.queue_name, **options
            )
            poison = QueueClient.from_connection_string(
                connection_string, config.poison_queue, **options
            )
        else:
            from azure.identity.aio import DefaultAzureCredential

            credential = DefaultAzureCredential()
            queue = QueueClient(
                config.queue_url, config.queue_name, credential=credential, **options
            )
            poison = QueueClient(
                config.queue_url, config.poison_queue, credential=credential, **options
            )
        try:
            async with queue, poison:
                yield queue, poison
        finally:
            if credential is not None:
                await credential.close()

    async def _receive(self, submit: Submit, stopping: asyncio.Event) -> None:
        from azure.core.exceptions import AzureError

        config = self.config
        idle_pause = config.min_poll_interval_seconds
        failures = 0
        while not stopping.is_set():
            try:
                # Stopping abandons a receive under way: what it got reappears after the
                # visibility timeout, with its run (if any) found again by idempotency key.
                batch = await wait_or_stop(self._receive_batch(), stopping)
            except AzureError as exc:
                failures += 1
                delay = min(60.0, 0.5 * 2 ** min(failures, 7)) * self._rng.uniform(0.5, 1.0)
                self._logger.warning(
                    "Cannot receive from queue '%s' (attempt %d): %s; retrying in %.1fs",
                    config.queue_name,
                    failures,
                    _first_line(exc),
                    delay,
                )
                await wait_or_stop(asyncio.sleep(delay), stopping)
                continue
            if batch is None:
                return
            if failures:
                self._logger.info("Receiving from queue '%s' again", config.queue_name)
                failures = 0
            if not batch:
                await wait_or_stop(
                    asyncio.sleep(idle_pause * self._rng.uniform(0.8, 1.0)), stopping
                )
                idle_pause = min(config.max_poll_interval_seconds, idle_pause * 2)
                continue
            idle_pause = config.min_poll_interval_seconds
            for queue_message in batch:
                held = Held(queue_message, queue_message.pop_receipt)
                self._held.add(held)
                if stopping.is_set():
                    await self._release(held, "router stopping")
                else:
                    await self._hand_over(held, submit)

    async def _receive_batch(self) -> list[QueueMessage]:
        config = self.config
        return [
            message
            async for message in self._queue.receive_messages(  # type: ignore[union-attr]
                messages_per_page=config.batch_size,
                max_messages=config.batch_size,
                visibility_timeout=config.visibility_timeout_seconds,
            )
        ]

    async def _hand_over(self, held: Held, submit: Submit) -> None:
        config = self.config
        queue_message = held.queue_message
        if queue_message.dequeue_count and queue_message.dequeue_count > config.max_dequeue_count:
            reason = (
                f"delivered {queue_message.dequeue_count} times, more than max_dequeue_count "
                f"{config.max_dequeue_count}"
            )
            self._logger.error(
                "Rejected message %s from source '%s': %s", held.id, self.name, reason
            )
            await self._dead_letter(held, reason)
            return
        try:
            body = decode_content(queue_message.content or "", config.message_encoding)
        except ValueError as exc:
            self._logger.error("Rejected message %s from source '%s': %s", held.id, self.name, exc)
            await self._dead_letter(held, str(exc))
            return
        await submit(
            Message(
                source=self.name,
                body=body,
                native_id=held.id,
                on_ack=lambda _: self._delete(held),
                on_retry_later=lambda reason: self._release(held, reason),
                on_reject=lambda reason: self._dead_letter(held, reason),
            )
        )

    async def _delete(self, held: Held) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            async with held.lock:
                await self._settle_call(
                    "delete",
                    held,
                    lambda: self._queue.delete_message(held.id, held.pop_receipt),  # type: ignore[union-attr]
                )
        except ResourceNotFoundError:
            self._logger.warning(
                "Message %s was already gone (another consumer took it after its visibility "
                "lapsed); its flow run is not duplicated",
                held.id,
            )
        finally:
            self._held.remove(held)

    async def _dead_letter(self, held: Held, reason: str) -> None:
        from azure.core.exceptions import ResourceExistsError

        poison = self._poison
        assert poison is not None
        try:
            if not self._poison_ready:
                with suppress(ResourceExistsError):
                    await poison.create_queue()
                self._poison_ready = True
            content = held.queue_message.content or ""
            await self._settle_call("dead-letter", held, lambda: poison.send_message(content))
        except Exception as exc:
            # Not deleted: it comes back after its visibility lapses and is tried again.
            self._logger.error("Could not dead-letter message %s: %s", held.id, _first_line(exc))
            self._held.remove(held)
            return
        self._logger.info(
            "Moved message %s to '%s' (reason: %s)", held.id, self.config.poison_queue, reason
        )
        await self._delete(held)

    async def _release(self, held: Held, reason: str) -> None:
        try:
            async with held.lock:
                await self._queue.update_message(  # type: ignore[union-attr]
                    held.id, held.pop_receipt, visibility_timeout=0
                )
        except Exception as exc:  # its visibility lapses by itself anyway
            self._logger.debug("Could not release message %s: %s", held.id, exc)
        finally:
            self._held.remove(held)

    async def _settle_call(self, what: str, held: Held, call: Any) -> None:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        for attempt in range(1, SETTLE_ATTEMPTS + 1):
            try:
                await call()
                return
            except ResourceNotFoundError:
                raise
            except AzureError as exc:
                if attempt == SETTLE_ATTEMPTS:
                    raise
                delay = 0.2 * 2**attempt
                self._logger.warning(
                    "Could not %s message %s (attempt %d): %s; retrying in %.1fs",
                    what,
                    held.id,
                    attempt,
                    _first_line(exc),
                    delay,
                )
                await asyncio.sleep(delay)

    async def _keep_invisible(self) -> None:
        """Extend the visibility of held messages, so no other consumer takes them meanwhile."""
        timeout = self.config.visibility_timeout_seconds
        interval = max(1.0, timeout / 3)
        while True:
            await asyncio.sleep(interval)
            for held in self._held.items():
                await self._extend(held, timeout)

    async def _extend(self, held: Held, timeout: int) -> None:
        async with held.lock:
            if not self._held.has(held):
                return
            try:
                receipt = await self._queue.update_message(  # type: ignore[union-attr]
                    held.id, held.pop_receipt, visibility_timeout=timeout
                )
            except Exception as exc:
                self._logger.warning(
                    "Could not extend the visibility of message %s: %s", held.id, _first_line(exc)
                )
                return
            held.pop_receipt = receipt.pop_receipt


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
