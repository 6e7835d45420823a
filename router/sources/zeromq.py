"""ZeroMQ: a PULL or SUB socket; the last frame of each message is its JSON body."""

from __future__ import annotations

import asyncio
import re
import uuid
from types import ModuleType
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator, model_validator

from router.errors import SourceError
from router.message import Message
from router.sources.base import Logger, Source, SourceConfig, Submit, wait_or_stop

if TYPE_CHECKING:
    import zmq.asyncio

TRANSPORTS = ("tcp", "ipc", "pgm", "epgm", "tipc", "vmci", "ws", "wss")
_ENDPOINT = re.compile(r"^([a-z]+)://\S+$")


class ZeroMQConfig(SourceConfig):
    """Receive messages on a ZeroMQ SUB or PULL socket (at-most-once: ZeroMQ has no ack)."""

    publisher_type: Literal["ZeroMQ"]
    socket_type: Literal["PULL", "SUB"] = Field(
        default="SUB",
        description=(
            "'SUB' subscribes to PUB sockets (messages as [topic, body] frames; the original "
            "tool's only kind); 'PULL' takes its share of what PUSH sockets send."
        ),
    )
    connect: list[str] = Field(
        default_factory=list,
        description="Endpoints to connect to, e.g. 'tcp://publisher:5556' (the publisher binds).",
    )
    bind: list[str] = Field(
        default_factory=list,
        description="Endpoints to bind, e.g. 'tcp://*:5556' (when publishers connect to the "
        "router).",
    )
    topics: list[str] = Field(
        default_factory=lambda: [""],
        min_length=1,
        description="SUB only: topic prefixes to subscribe to; '' (the default) means every "
        "message.",
    )
    high_water_mark: int = Field(
        default=1000,
        ge=0,
        description=(
            "Messages queued in the socket while the router is busy (0: no limit); beyond it "
            "a PUB drops messages for the router and a PUSH blocks."
        ),
    )
    tcp_uri: str | None = Field(
        default=None,
        description="The original tool's field: one endpoint to connect to (added to `connect`).",
    )
    topic: str | None = Field(
        default=None,
        description="The original tool's field: one SUB topic prefix (added to `topics`).",
    )

    @field_validator("connect", "bind")
    @classmethod
    def _endpoints(cls, value: list[str]) -> list[str]:
        for endpoint in value:
            _check_endpoint(endpoint)
        return list(dict.fromkeys(value))

    @field_validator("tcp_uri")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is not None:
            _check_endpoint(value)
        return value

    @model_validator(mode="after")
    def _merge_original_fields(self) -> ZeroMQConfig:
        explicit_topics = "topics" in self.model_fields_set
        if self.tcp_uri is not None:
            self.connect = list(dict.fromkeys([self.tcp_uri, *self.connect]))
        if self.topic is not None:
            self.topics = [*self.topics, self.topic] if explicit_topics else [self.topic]
        self.topics = list(dict.fromkeys(self.topics))
        if not (self.connect or self.bind):
            raise ValueError(
                "set at least one endpoint in `connect` or `bind` (or the original `tcp_uri`)"
            )
        if self.socket_type == "PULL" and (self.topic is not None or self.topics != [""]):
            raise ValueError("`topic` and `topics` apply only to socket_type 'SUB'")
        return self

    def default_name(self) -> str:
        """`zeromq`."""
        return "zeromq"

    def build(self) -> ZeroMQSource:
        """A source with this socket."""
        return ZeroMQSource(self)


def _check_endpoint(endpoint: str) -> None:
    match = _ENDPOINT.match(endpoint)
    if match is None:
        raise ValueError(f"expected an endpoint 'transport://address', got {endpoint!r}")
    transport = match.group(1)
    if transport == "inproc":
        raise ValueError(f"{endpoint!r}: inproc reaches only sockets inside the router itself")
    if transport not in TRANSPORTS:
        raise ValueError(
            f"{endpoint!r}: unknown transport '{transport}', expected one of "
            + ", ".join(TRANSPORTS)
        )


def import_zmq() -> tuple[ModuleType, ModuleType]:
    """pyzmq and its asyncio API, or a SourceError saying how to install it."""
    try:
        import zmq
        import zmq.asyncio
    except ImportError as exc:
        raise SourceError(
            f"the ZeroMQ source needs pyzmq ({exc}): pip install prefect-event-router[zeromq]"
        ) from None
    return zmq, zmq.asyncio


class ZeroMQSource(Source):
    """Receives on one socket until stopped. ZeroMQ has no acknowledgement and no dead letter:
    settling does nothing at the sender, the runtime logs rejects, delivery is at most once."""

    kind = "ZeroMQ"

    def __init__(self, config: ZeroMQConfig) -> None:
        super().__init__(config.source_name)
        self.config = config
        # The endpoints bound by the latest run, as resolved (tcp://127.0.0.1:* -> its port).
        self.bound: list[str] = []

    async def run(self, submit: Submit, stopping: asyncio.Event, logger: Logger) -> None:
        """Submit the body of each message received until `stopping` is set."""
        zmq, zmq_asyncio = import_zmq()
        # Identity of each message: this run plus a counter. ZeroMQ messages have no id of
        # their own; a message's `id` field still wins in routing.
        session = uuid.uuid4().hex[:12]
        context = zmq_asyncio.Context()
        try:
            socket = self._open(context, logger)
            try:
                count = 0
                while not stopping.is_set():
                    try:
                        frames = await wait_or_stop(socket.recv_multipart(), stopping)
                    except zmq.ZMQError as exc:
                        raise SourceError(
                            f"ZeroMQ source '{self.name}' cannot receive: {exc}"
                        ) from exc
                    if frames is None:
                        return
                    count += 1
                    # The last frame is the body; on SUB a leading frame is the topic.
                    await submit(
                        Message(source=self.name, body=frames[-1], native_id=f"{session}:{count}")
                    )
            finally:
                socket.close(linger=0)
        finally:
            context.term()

    def _open(self, context: zmq.asyncio.Context, logger: Logger) -> zmq.asyncio.Socket:
        import zmq

        config = self.config
        try:
            socket = context.socket(zmq.SUB if config.socket_type == "SUB" else zmq.PULL)
        except zmq.ZMQError as exc:
            raise SourceError(f"ZeroMQ source '{self.name}' cannot open a socket: {exc}") from exc
        action = "set up its socket"
        try:
            socket.setsockopt(zmq.LINGER, 0)
            socket.setsockopt(zmq.RCVHWM, config.high_water_mark)
            if config.socket_type == "SUB":
                for topic in config.topics:
                    socket.setsockopt(zmq.SUBSCRIBE, topic.encode("utf-8"))
            self.bound = []
            for endpoint in config.bind:
                action = f"bind {endpoint}"
                socket.bind(endpoint)
                self.bound.append(socket.getsockopt_string(zmq.LAST_ENDPOINT))
            for endpoint in config.connect:
                action = f"connect to {endpoint}"
                socket.connect(endpoint)
        except zmq.ZMQError as exc:
            socket.close(linger=0)
            raise SourceError(f"ZeroMQ source '{self.name}' cannot {action}: {exc}") from exc
        where = [f"bound to {endpoint}" for endpoint in self.bound]
        where += [f"connected to {endpoint}" for endpoint in config.connect]
        if config.socket_type == "SUB":
            where.append("topics " + ", ".join(repr(topic) for topic in config.topics))
        logger.info(
            "ZeroMQ %s socket of source '%s': %s (delivery is at most once)",
            config.socket_type,
            self.name,
            "; ".join(where),
        )
        return socket
