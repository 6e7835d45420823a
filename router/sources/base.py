"""What every source shares: its config base and the `Source` interface."""

from __future__ import annotations

import abc
import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from router.errors import SourceError
from router.message import Message

Submit = Callable[[Message], Awaitable[None]]
Logger = logging.Logger | logging.LoggerAdapter
T = TypeVar("T")


class RouteTarget(BaseModel):
    """Where a message type goes: a deployment and what to add to its runs."""

    model_config = ConfigDict(extra="forbid")

    deployment: str = Field(
        description="The target deployment as 'Flow Name/deployment-name' (an exact match)."
    )
    tags: list[str] = Field(
        default_factory=list, description="Extra tags for the flow runs this route creates."
    )
    job_variables: dict[str, Any] = Field(
        default_factory=dict,
        description="Job variables (infrastructure overrides) for the flow runs of this route.",
    )

    @field_validator("deployment")
    @classmethod
    def _flow_slash_deployment(cls, value: str) -> str:
        flow_name, sep, deployment_name = value.partition("/")
        if (
            not sep
            or not flow_name.strip()
            or not deployment_name.strip()
            or "/" in deployment_name
        ):
            raise ValueError(f"expected 'Flow Name/deployment-name', got {value!r}")
        return value


class SourceConfig(BaseModel):
    """Fields every source has; each source subclasses it with a `publisher_type` literal."""

    model_config = ConfigDict(extra="forbid")

    publisher_type: str
    name: str | None = Field(
        default=None,
        description=(
            "This source's name in logs, run tags and idempotency keys. Keep it stable: "
            "redelivered messages are recognised by it. Defaults to a name derived from the source."
        ),
    )
    message_flow_actions: dict[str, RouteTarget] = Field(
        min_length=1,
        description=(
            "Routes: message_type -> 'Flow Name/deployment-name', or an object "
            "{deployment, tags, job_variables}."
        ),
    )

    @field_validator(
        "message_flow_actions", mode="before", json_schema_input_type=dict[str, str | RouteTarget]
    )
    @classmethod
    def _string_routes(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: {"deployment": v} if isinstance(v, str) else v for k, v in value.items()}
        return value

    def default_name(self) -> str:
        """The name used when `name` is not set."""
        return self.publisher_type.lower()

    @property
    def source_name(self) -> str:
        """The effective name of this source."""
        return self.name or self.default_name()

    def build(self) -> Source:
        """Create the source this config describes."""
        raise NotImplementedError


class Source(abc.ABC):
    """A source connects, receives and settles messages; it knows nothing of Prefect."""

    kind: ClassVar[str]

    def __init__(self, name: str) -> None:
        self.name = name

    @abc.abstractmethod
    async def run(self, submit: Submit, stopping: asyncio.Event, logger: Logger) -> None:
        """Receive messages and pass each to `submit` until the source ends or `stopping` is set.

        `submit` returns once the runtime has taken the message (it applies back-pressure);
        the message's settlement callbacks are called later, exactly once. A source with
        connections keeps them open until every message it handed over is settled.
        """


class Outstanding(Generic[T]):
    """What a source has received and not yet settled, with a wait for none to be left."""

    def __init__(self) -> None:
        self._items: dict[int, T] = {}
        self._empty = asyncio.Event()
        self._empty.set()

    def add(self, item: T) -> None:
        """Track `item` until `remove`."""
        self._items[id(item)] = item
        self._empty.clear()

    def remove(self, item: T) -> None:
        """Stop tracking `item` (no matter if it was not tracked)."""
        self._items.pop(id(item), None)
        if not self._items:
            self._empty.set()

    def has(self, item: T) -> bool:
        """Whether `item` is still tracked."""
        return id(item) in self._items

    def items(self) -> list[T]:
        """A snapshot of the tracked items."""
        return list(self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    async def wait_empty(self) -> None:
        """Return once nothing is tracked."""
        await self._empty.wait()


async def wait_or_stop(awaitable: Awaitable[T], stopping: asyncio.Event) -> T | None:
    """Await `awaitable` unless `stopping` is set first; then cancel it and return None."""
    if stopping.is_set():
        if asyncio.iscoroutine(awaitable):
            awaitable.close()
        return None
    work = asyncio.ensure_future(awaitable)
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        work.cancel()
        raise
    finally:
        stop.cancel()
    if work.done():
        return work.result()
    work.cancel()
    return None


async def read_secret(
    source: str, field: str, env_name: str | None, block: str | None
) -> str | None:
    """A secret named in a config: the value of environment variable `env_name`, or of the
    Prefect Secret block `block`; None when neither is given. `field` names the env field."""
    if env_name:
        value = os.environ.get(env_name)
        if value is None:
            raise SourceError(
                f"environment variable {env_name} ({field} of source '{source}') is not set"
            )
        return value
    if block:
        from prefect.blocks.system import Secret

        return str((await Secret.aload(block)).get())
    return None
