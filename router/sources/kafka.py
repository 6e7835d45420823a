"""Kafka: a consumer group, offsets committed only past settled messages, a dead-letter topic."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from router.errors import SourceError
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
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
    from aiokafka.structs import TopicPartition

REVOKE_WAIT_SECONDS = 5.0
DEAD_LETTER_ATTEMPTS = 5
CLIENT_LOG_REPEAT_SECONDS = 30.0


class RepeatFilter(logging.Filter):
    """Lets the same log message through once per `interval` seconds.

    While a broker is away, aiokafka logs the same connection error several times a second.
    """

    def __init__(self, interval: float = CLIENT_LOG_REPEAT_SECONDS) -> None:
        super().__init__()
        self._interval = interval
        self._last: dict[tuple[str, int, str], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether to emit `record`."""
        key = (record.name, record.levelno, record.getMessage()[:300])
        now = time.monotonic()
        if now - self._last.get(key, float("-inf")) < self._interval:
            return False
        if len(self._last) > 1000:
            self._last.clear()
        self._last[key] = now
        return True


def _quiet_client_logs() -> None:
    """Add a RepeatFilter to every aiokafka logger (a logger's filters see only its records)."""
    names = [name for name in logging.root.manager.loggerDict if name.startswith("aiokafka")]
    for name in names:
        client_logger = logging.getLogger(name)
        if not any(isinstance(f, RepeatFilter) for f in client_logger.filters):
            client_logger.addFilter(RepeatFilter())


class KafkaConfig(SourceConfig):
    """Read messages from Kafka topics as a member of a consumer group."""

    publisher_type: Literal["Kafka"]
    bootstrap_servers: list[str] = Field(
        min_length=1, description="Brokers: 'host:port', a comma-separated string or a list."
    )
    topics: list[str] = Field(default_factory=list, description="Topics to read.")
    topic_pattern: str | None = Field(
        default=None, description="A regular expression of topics to read, instead of `topics`."
    )
    group_id: str = Field(description="The consumer group; routers in one group share partitions.")
    start_offset: Literal["earliest", "latest"] = Field(
        default="earliest", description="Where a new group starts reading a partition."
    )
    dead_letter_topic: str | None = Field(
        default=None,
        description="Topic for rejected messages (original key and value, reason in headers); "
        "without it they are logged at ERROR and skipped.",
    )
    message_type_header: str | None = Field(
        default=None,
        description="Header holding the message type, for messages whose body has none.",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="How to talk to the brokers."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="SASL mechanism, with SASL_PLAINTEXT or SASL_SSL."
    )
    sasl_username: str | None = Field(default=None, description="SASL user name.")
    sasl_password_env: str | None = Field(
        default=None, description="Name of an environment variable holding the SASL password."
    )
    sasl_password_secret: str | None = Field(
        default=None, description="Name of a Prefect Secret block holding the SASL password."
    )
    ssl_cafile: str | None = Field(default=None, description="CA bundle to verify the brokers.")
    ssl_certfile: str | None = Field(default=None, description="Client certificate (mutual TLS).")
    ssl_keyfile: str | None = Field(default=None, description="Client key (mutual TLS).")
    session_timeout_ms: int = Field(
        default=10000, ge=1000, description="Consumer session timeout; a dead router's "
        "partitions move to the others after it."
    )  # fmt: skip
    heartbeat_interval_ms: int = Field(
        default=3000, ge=100, description="Heartbeat interval, well under the session timeout."
    )
    max_poll_records: int = Field(default=100, ge=1, description="Records fetched at most at once.")
    fetch_max_wait_ms: int = Field(
        default=100,
        ge=0,
        description="How long the broker may hold a fetch open waiting for data: the floor of "
        "pickup latency on a quiet topic (the client's own default is 500).",
    )
    commit_interval_seconds: float = Field(
        default=1.0, gt=0, description="How often settled offsets are committed."
    )

    @field_validator("bootstrap_servers", mode="before", json_schema_input_type=str | list[str])
    @classmethod
    def _split_servers(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [server.strip() for server in value.split(",") if server.strip()]
        return value

    @model_validator(mode="after")
    def _what_to_read(self) -> KafkaConfig:
        if bool(self.topics) == bool(self.topic_pattern):
            raise ValueError("set either topics or topic_pattern")
        if self.sasl_password_env and self.sasl_password_secret:
            raise ValueError("set sasl_password_env or sasl_password_secret, not both")
        if self.security_protocol.startswith("SASL") and not self.sasl_mechanism:
            raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism")
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be below session_timeout_ms")
        return self

    def default_name(self) -> str:
        """`kafka:<group_id>`."""
        return f"kafka:{self.group_id}"

    def build(self) -> KafkaSource:
        """A source consuming these topics."""
        return KafkaSource(self)


@dataclass
class PartitionProgress:
    """Offsets handed over from one partition, in order, and the commit point they allow."""

    unsettled: dict[int, bool] = field(default_factory=dict)  # offset -> settled, in order
    next_offset: int | None = None  # what may be committed: every offset below it is settled
    committed: int | None = None

    def received(self, offset: int) -> None:
        """An offset was handed over."""
        self.unsettled[offset] = False
        if self.next_offset is None:
            self.next_offset = offset

    def settled(self, offset: int) -> None:
        """An offset was triggered or dead-lettered: advance the commit point past it if it
        and everything before it are settled."""
        if offset not in self.unsettled:
            return
        self.unsettled[offset] = True
        for pending, done in list(self.unsettled.items()):
            if not done:
                self.next_offset = pending
                break
            del self.unsettled[pending]
            self.next_offset = pending + 1

    @property
    def idle(self) -> bool:
        """No offset is waiting to be settled."""
        return not self.unsettled


class KafkaSource(Source):
    """One consumer in a group; a partition's offset is committed only past settled messages."""

    kind = "Kafka"

    def __init__(self, config: KafkaConfig) -> None:
        super().__init__(config.source_name)
        self.config = config
        self._logger: Logger = logging.getLogger(__name__)
        self._progress: dict[TopicPartition, PartitionProgress] = {}
        self._outstanding: Outstanding[Message] = Outstanding()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None

    async def run(self, submit: Submit, stopping: asyncio.Event, logger: Logger) -> None:
        """Consume until stopped, then commit what was settled and leave the group."""
        try:
            from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
            from aiokafka.errors import KafkaError
        except ImportError:
            raise SourceError(
                "the Kafka source needs aiokafka: pip install prefect-event-router[kafka]"
            ) from None
        self._logger = logger
        _quiet_client_logs()
        config = self.config
        connection = await self._connection_options()
        consumer = AIOKafkaConsumer(
            **connection,
            group_id=config.group_id,
            enable_auto_commit=False,
            auto_offset_reset=config.start_offset,
            session_timeout_ms=config.session_timeout_ms,
            heartbeat_interval_ms=config.heartbeat_interval_ms,
            max_poll_records=config.max_poll_records,
            fetch_max_wait_ms=config.fetch_max_wait_ms,
        )
        consumer.subscribe(
            topics=config.topics or (),
            pattern=config.topic_pattern,
            listener=_rebalance_listener(self),
        )
        producer = AIOKafkaProducer(**connection) if config.dead_letter_topic else None
        self._consumer, self._producer = consumer, producer
        try:
            await consumer.start()
            if producer is not None:
                await producer.start()
        except KafkaError as exc:
            await self._close()
            raise SourceError(
                f"cannot connect to Kafka at {config.bootstrap_servers}: {exc}"
            ) from exc
        committer = asyncio.create_task(self._commit_periodically())
        try:
            await self._consume(submit, stopping)
        finally:
            # The runtime settles or releases everything it took (bounded by its grace).
            await self._outstanding.wait_empty()
            committer.cancel()
            await self._commit()
            await self._close()

    async def _connection_options(self) -> dict[str, Any]:
        config = self.config
        options: dict[str, Any] = {
            "bootstrap_servers": config.bootstrap_servers,
            "security_protocol": config.security_protocol,
        }
        if config.sasl_mechanism:
            options.update(
                sasl_mechanism=config.sasl_mechanism,
                sasl_plain_username=config.sasl_username,
                sasl_plain_password=await read_secret(
                    self.name,
                    "sasl_password_env",
                    config.sasl_password_env,
                    config.sasl_password_secret,
                ),
            )
        if config.security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            options["ssl_context"] = create_ssl_context(
                cafile=config.ssl_cafile, certfile=config.ssl_certfile, keyfile=config.ssl_keyfile
            )
        return options

    async def _consume(self, submit: Submit, stopping: asyncio.Event) -> None:
        consumer = self._consumer
        assert consumer is not None
        while not stopping.is_set():
            batch = await wait_or_stop(consumer.getmany(timeout_ms=1000), stopping)
            if batch is None:
                return
            for partition, records in batch.items():
                for record in records:
                    if stopping.is_set() or partition not in self._progress:
                        break  # not handed over, so never committed: read again later
                    await self._hand_over(partition, record, submit)

    async def _hand_over(
        self, partition: TopicPartition, record: ConsumerRecord, submit: Submit
    ) -> None:
        progress = self._progress[partition]
        progress.received(record.offset)
        message_type = None
        if self.config.message_type_header:
            for key, value in record.headers or ():
                if key == self.config.message_type_header:
                    message_type = value.decode("utf-8", errors="replace")

        def settled(_: str) -> Any:
            return self._settled(message, partition, record.offset)

        message = Message(
            source=self.name,
            body=record.value or b"",
            native_id=f"{record.topic}/{record.partition}/{record.offset}",
            message_type=message_type,
            on_ack=settled,
            on_retry_later=lambda _: self._released(message),
            on_reject=lambda reason: self._dead_letter(message, partition, record, reason),
        )
        self._outstanding.add(message)
        await submit(message)

    async def _settled(self, message: Message, partition: TopicPartition, offset: int) -> None:
        progress = self._progress.get(partition)
        if progress is not None:  # else revoked meanwhile: its new owner reads it again
            progress.settled(offset)
        self._outstanding.remove(message)

    async def _released(self, message: Message) -> None:
        # Left unsettled: the commit point stays before it, so it is read again.
        self._outstanding.remove(message)

    async def _dead_letter(
        self, message: Message, partition: TopicPartition, record: ConsumerRecord, reason: str
    ) -> None:
        topic = self.config.dead_letter_topic
        if topic is None or self._producer is None:
            await self._settled(message, partition, record.offset)  # logged by the runtime
            return
        headers = [
            *(record.headers or ()),
            ("x-router-reason", reason.encode("utf-8")),
            ("x-router-source", self.name.encode("utf-8")),
            ("x-router-topic", record.topic.encode("utf-8")),
            ("x-router-partition", str(record.partition).encode()),
            ("x-router-offset", str(record.offset).encode()),
        ]
        for attempt in range(1, DEAD_LETTER_ATTEMPTS + 1):
            try:
                await self._producer.send_and_wait(
                    topic, value=record.value, key=record.key, headers=headers
                )
                break
            except Exception as exc:
                if attempt == DEAD_LETTER_ATTEMPTS:
                    # Not settled: the partition holds before it, and it is read again later.
                    self._logger.error(
                        "Could not dead-letter %s to '%s': %s", message.native_id, topic, exc
                    )
                    await self._released(message)
                    return
                await asyncio.sleep(0.2 * 2**attempt)
        self._logger.info(
            "Sent %s to dead-letter topic '%s' (reason: %s)", message.native_id, topic, reason
        )
        await self._settled(message, partition, record.offset)

    async def _commit_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.config.commit_interval_seconds)
            await self._commit()

    async def _commit(self, partitions: list[TopicPartition] | None = None) -> None:
        """Commit each owned partition's settled progress, if it moved."""
        from aiokafka.structs import OffsetAndMetadata

        consumer = self._consumer
        if consumer is None:
            return
        offsets = {}
        for partition in partitions if partitions is not None else list(self._progress):
            progress = self._progress.get(partition)
            if progress and progress.next_offset not in (None, progress.committed):
                offsets[partition] = OffsetAndMetadata(progress.next_offset, "")
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except Exception as exc:  # a rebalance under way: its listener commits what it can
            self._logger.warning("Could not commit offsets: %s", exc)
            return
        for partition, offset in offsets.items():
            if partition in self._progress:
                self._progress[partition].committed = offset.offset

    async def partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Before giving partitions up: let their in-flight messages settle briefly, commit."""
        owned = [partition for partition in revoked if partition in self._progress]
        deadline = asyncio.get_running_loop().time() + REVOKE_WAIT_SECONDS
        while any(not self._progress[p].idle for p in owned):
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.05)
        await self._commit(owned)
        for partition in owned:
            del self._progress[partition]
        if owned:
            self._logger.info("Gave up partitions %s", _names(owned))

    def partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """Start tracking newly assigned partitions."""
        for partition in assigned:
            self._progress.setdefault(partition, PartitionProgress())
        if assigned:
            self._logger.info("Assigned partitions %s", _names(assigned))

    async def _close(self) -> None:
        for client in (self._consumer, self._producer):
            if client is not None:
                try:
                    await client.stop()
                except Exception as exc:
                    self._logger.debug("Error while closing a Kafka client: %s", exc)
        self._consumer = self._producer = None


def _rebalance_listener(source: KafkaSource) -> Any:
    """aiokafka's rebalance listener (a subclass it checks for), forwarding to the source."""
    from aiokafka import ConsumerRebalanceListener

    class Rebalance(ConsumerRebalanceListener):
        async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
            await source.partitions_revoked(revoked)

        async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
            source.partitions_assigned(assigned)

    return Rebalance()


def _names(partitions: Any) -> str:
    return ", ".join(sorted(f"{p.topic}/{p.partition}" for p in partitions))
