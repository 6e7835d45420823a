"""Kafka benchmark: messages on a topic -> flow runs per second, and send-to-run latency.

Starts a Prefect server (a fresh PostgreSQL database) and the Tansu broker, runs the router on a
two-partition topic, produces a backlog for the throughput figure, then sends at a steady pace
for the latency figures. Prints; asserts nothing. `python bench/kafka.py` (or `make bench`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

if not __package__:  # run as a script: the project root, not bench/, comes first
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from aiokafka import AIOKafkaProducer  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402

from bench.common import body, stop_on_signals  # noqa: E402
from bench.sources import Driver, run_single, source_arguments  # noqa: E402
from devtools.tansu import Tansu  # noqa: E402

TOPIC = "bench"


class KafkaDriver(Driver):
    """Produces to a two-partition topic of a Tansu broker it starts."""

    key = "kafka"

    def __init__(self) -> None:
        super().__init__()
        self.broker = Tansu()
        self._loop = asyncio.new_event_loop()
        self._producer: AIOKafkaProducer | None = None

    def start(self) -> KafkaDriver:
        """Start the broker, create the topic and a producer."""
        self.broker.start()
        self._loop.run_until_complete(self._start())
        return self

    async def _start(self) -> None:
        """Create the topic and start the producer."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.broker.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(TOPIC, 2, 1)])
        finally:
            await admin.close()
        self._producer = AIOKafkaProducer(bootstrap_servers=self.broker.bootstrap)
        await self._producer.start()

    def close(self) -> None:
        """Stop the producer and the broker."""
        if self._producer is not None:
            self._loop.run_until_complete(self._producer.stop())
            self._producer = None
        self._loop.close()
        self.broker.close()

    def _source_fields(self) -> dict[str, Any]:
        """The topic and a consumer group that notices a dead member quickly."""
        return {
            "publisher_type": "Kafka",
            "bootstrap_servers": self.broker.bootstrap,
            "topics": [TOPIC],
            "group_id": "bench",
            "session_timeout_ms": 2000,
            "heartbeat_interval_ms": 500,
        }

    def _send(self, name: str) -> None:
        """One record, waiting for the broker's acknowledgement."""
        assert self._producer is not None
        self._loop.run_until_complete(
            self._producer.send_and_wait(TOPIC, body(name), key=name.encode())
        )

    def _send_all(self, names: list[str]) -> None:
        """Every record, batched by the producer."""
        self._loop.run_until_complete(self._produce(names))

    async def _produce(self, names: list[str]) -> None:
        """Queue every record in the producer, then wait for all acknowledgements."""
        assert self._producer is not None
        sending = [await self._producer.send(TOPIC, body(n), key=n.encode()) for n in names]
        await asyncio.gather(*sending)


def main() -> None:
    """Run the Kafka benchmark on its own and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source_arguments(parser)
    stop_on_signals()
    run_single(KafkaDriver(), parser.parse_args())


if __name__ == "__main__":
    main()
