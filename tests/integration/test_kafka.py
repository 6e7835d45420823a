"""The Kafka source against a real Kafka-compatible broker (Tansu) and a real Prefect server."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition
from prefect.client.orchestration import SyncPrefectClient

from devtools.prefect_server import PrefectServer
from devtools.tansu import Tansu
from tests.integration.conftest import runs_tagged, start_router, stop_router, wait_for


@pytest.fixture(scope="module")
def tansu() -> Iterator[Tansu]:
    broker = Tansu().start()
    try:
        yield broker
    finally:
        broker.close()


class Topic:
    """A fresh two-partition topic and its dead-letter topic."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.name = f"t{uuid.uuid4().hex[:10]}"
        self.dead_letter = f"{self.name}-dlq"
        self.group = f"g-{self.name}"
        asyncio.run(self._create())

    async def _create(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(self.name, 2, 1), NewTopic(self.dead_letter, 1, 1)])
        finally:
            await admin.close()

    def produce(self, *values: str, headers: list | None = None) -> None:
        """Send each value, keyed by its index so both partitions get some."""

        async def send() -> None:
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap)
            await producer.start()
            try:
                for index, value in enumerate(values):
                    await producer.send_and_wait(
                        self.name, value.encode(), key=str(index).encode(), headers=headers
                    )
            finally:
                await producer.stop()

        asyncio.run(send())

    def committed(self) -> int:
        """How many messages the group has committed, over both partitions."""

        async def read() -> int:
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=self.group)
            await consumer.start()
            try:
                offsets = [await consumer.committed(TopicPartition(self.name, p)) for p in (0, 1)]
            finally:
                await consumer.stop()
            return sum(offset or 0 for offset in offsets)

        return asyncio.run(read())

    def dead_letters(self) -> list[tuple[bytes, dict[str, bytes]]]:
        async def read() -> list:
            consumer = AIOKafkaConsumer(
                self.dead_letter, bootstrap_servers=self.bootstrap, auto_offset_reset="earliest"
            )
            await consumer.start()
            try:
                batch = await consumer.getmany(timeout_ms=3000)
            finally:
                await consumer.stop()
            return [(r.value, dict(r.headers)) for records in batch.values() for r in records]

        return asyncio.run(read())

    def config(self, path: Path, source_name: str, **fields) -> Path:
        source = {
            "publisher_type": "Kafka",
            "name": source_name,
            "bootstrap_servers": self.bootstrap,
            "topics": [self.name],
            "group_id": self.group,
            "dead_letter_topic": self.dead_letter,
            "session_timeout_ms": 2000,
            "heartbeat_interval_ms": 500,
            "message_flow_actions": {
                "SampleMsg": "Test Flow/integration-test",
                "ParamsMsg": "Test Flow with params/integration-test",
            },
            **fields,
        }
        router = {k: source.pop(k) for k in ("max_concurrency",) if k in source}
        path.write_text(json.dumps({"threads": [source], "cancel_check_seconds": 0.5, **router}))
        return path


@pytest.fixture
def topic(tansu: Tansu) -> Topic:
    return Topic(tansu.bootstrap)


def params(name: str) -> str:
    return json.dumps({"message_type": "ParamsMsg", "payload": {"name": name}})


def names(runs) -> list[str]:
    return sorted(run.parameters.get("name", "-") for run in runs)


def test_triggers_and_commits_after_the_runs_exist(
    prefect_server, client, source_name, topic, tmp_path
):
    expected = [f"k{i}" for i in range(10)]
    topic.produce(*(params(name) for name in expected))
    router = start_router(prefect_server, topic.config(tmp_path / "k.json", source_name))
    try:
        wait_for(lambda: len(runs_tagged(client, f"source:{source_name}")) == 10, what="10 runs")
        wait_for(lambda: topic.committed() == 10, what="the offsets to be committed")
    finally:
        output = stop_router(router)
    assert names(runs_tagged(client, f"source:{source_name}")) == expected
    assert "Assigned partitions" in output


def test_bad_messages_go_to_the_dead_letter_topic(
    prefect_server, client, source_name, topic, tmp_path
):
    topic.produce("not json", '{"message_type": "Nope"}', params("good"))
    router = start_router(prefect_server, topic.config(tmp_path / "k.json", source_name))
    try:
        wait_for(lambda: topic.committed() == 3, what="all three to be settled and committed")
    finally:
        stop_router(router)
    assert names(runs_tagged(client, f"source:{source_name}")) == ["good"]
    letters = sorted(topic.dead_letters())
    assert [value for value, _ in letters] == [b"not json", b'{"message_type": "Nope"}']
    for _, headers in letters:
        assert headers["x-router-topic"] == topic.name.encode()
        assert headers["x-router-source"] == source_name.encode()
        assert {"x-router-partition", "x-router-offset"} <= set(headers)
    reasons = {value: headers["x-router-reason"].decode() for value, headers in letters}
    assert reasons[b"not json"].startswith("not JSON")
    assert reasons[b'{"message_type": "Nope"}'].startswith("no route for message_type 'Nope'")


def test_message_type_from_a_header(prefect_server, client, source_name, topic, tmp_path):
    topic.produce('{"payload": {"name": "typed by header"}}', headers=[("type", b"ParamsMsg")])
    config = topic.config(tmp_path / "k.json", source_name, message_type_header="type")
    router = start_router(prefect_server, config)
    try:
        wait_for(lambda: runs_tagged(client, f"source:{source_name}"), what="the run")
    finally:
        stop_router(router)
    assert names(runs_tagged(client, f"source:{source_name}")) == ["typed by header"]


def test_killed_router_restarts_without_skipping_or_doubling(
    prefect_server, client, source_name, topic, tmp_path
):
    expected = [f"r{i:02d}" for i in range(30)]
    topic.produce(*(params(name) for name in expected))
    config = topic.config(tmp_path / "k.json", source_name, max_concurrency=1)
    router = start_router(prefect_server, config)
    try:
        wait_for(lambda: len(runs_tagged(client, f"source:{source_name}")) >= 8, what="8 runs")
        router.send_signal(signal.SIGKILL)  # no drain, no commit of what is in flight
        router.wait(30)
    finally:
        router.kill()
    assert len(runs_tagged(client, f"source:{source_name}")) < 30, "killed mid-stream"
    router = start_router(prefect_server, config)
    try:
        wait_for(
            lambda: len(runs_tagged(client, f"source:{source_name}")) >= 30,
            timeout=120,
            what="all 30 runs",
        )
        wait_for(lambda: topic.committed() == 30, what="all 30 committed")
    finally:
        stop_router(router)
    assert names(runs_tagged(client, f"source:{source_name}")) == expected


def test_two_routers_in_one_group_make_one_run_per_message(
    prefect_server, client, source_name, topic, tmp_path
):
    config = topic.config(tmp_path / "k.json", source_name)
    first = start_router(prefect_server, config)
    routers = [first]
    try:
        topic.produce(*(params(f"a{i:02d}") for i in range(20)))
        wait_for(lambda: len(runs_tagged(client, f"source:{source_name}")) >= 5, what="5 runs")
        routers.append(start_router(prefect_server, config))  # a rebalance mid-stream
        topic.produce(*(params(f"b{i:02d}") for i in range(20)))
        wait_for(
            lambda: len(runs_tagged(client, f"source:{source_name}")) >= 40,
            timeout=120,
            what="40 runs",
        )
        wait_for(lambda: topic.committed() == 40, timeout=60, what="all 40 committed")
        time.sleep(2)  # room for any duplicate to show up
    finally:
        outputs = [stop_router(router) for router in routers]
    counts = Counter(names(runs_tagged(client, f"source:{source_name}")))
    assert sorted(counts) == sorted(
        [f"a{i:02d}" for i in range(20)] + [f"b{i:02d}" for i in range(20)]
    )
    assert set(counts.values()) == {1}
    assert all("Assigned partitions" in output for output in outputs)


def test_prefect_outage_holds_the_partition_and_loses_nothing(tmp_path, source_name, tansu):
    topic = Topic(tansu.bootstrap)
    server = PrefectServer(home=tmp_path / "home").start()
    router = None
    try:
        server.deploy_examples()
        config = topic.config(tmp_path / "k.json", source_name)
        router = start_router(server, config, PREFECT_CLIENT_MAX_RETRIES="0")
        topic.produce(params("before"))
        with SyncPrefectClient(server.url) as client:
            wait_for(lambda: runs_tagged(client, f"source:{source_name}"), what="the first run")
        wait_for(lambda: topic.committed() == 1, what="the first commit")
        server.stop()
        topic.produce(*(params(f"during-{i}") for i in range(5)))
        time.sleep(8)
        assert router.poll() is None
        assert topic.committed() == 1, "nothing is committed past a message without its run"
        server.start()
        with SyncPrefectClient(server.url) as client:
            wait_for(
                lambda: len(runs_tagged(client, f"source:{source_name}")) >= 6,
                timeout=90,
                what="the held messages to be triggered",
            )
            wait_for(lambda: topic.committed() == 6, what="everything committed")
            output = stop_router(router)
            runs = runs_tagged(client, f"source:{source_name}")
        assert names(runs) == ["before", *(f"during-{i}" for i in range(5))]
        assert topic.dead_letters() == []
        assert "retrying in" in output
    finally:
        if router is not None and router.poll() is None:
            router.kill()
        server.close()


def test_topics_by_pattern(prefect_server, client, source_name, topic, tmp_path):
    topic.produce(params("by-pattern"))
    config = topic.config(
        tmp_path / "k.json", source_name, topics=[], topic_pattern=f"^{topic.name}$"
    )
    router = start_router(prefect_server, config)
    try:
        wait_for(lambda: runs_tagged(client, f"source:{source_name}"), what="the run")
    finally:
        stop_router(router)
    assert names(runs_tagged(client, f"source:{source_name}")) == ["by-pattern"]
