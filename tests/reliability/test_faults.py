"""Fault injection: thousands of messages through real brokers while things break.

Each test counts, at the end, the flow runs per message and the dead-lettered messages, and
asserts the exact figures. The Prefect server runs on PostgreSQL (SQLite would answer 503s
under this load).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from azure.storage.queue import QueueClient
from prefect.client.orchestration import SyncPrefectClient

from devtools.azurite import Azurite
from devtools.postgres import drop_database, fresh_database
from devtools.prefect_server import PROJECT_ROOT, PrefectServer
from devtools.tansu import Tansu
from tests.reliability.chaos import (
    ROUTES,
    count_runs,
    message_mix,
    run_chaos,
    runs_per_name,
    wait_until,
)

TOTAL = 2000
ROUTER_SCRIPT = str(PROJECT_ROOT / "flows" / "router.py")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrefectServer]:
    name = f"er_reliability_{uuid.uuid4().hex[:8]}"
    prefect = PrefectServer(home=tmp_path / "prefect", database_url=fresh_database(name))
    try:
        prefect.start().deploy_examples()
        yield prefect
    finally:
        prefect.close()
        drop_database(name)


def router_starter(server: PrefectServer, config: dict, folder: Path, **env: str):
    """A function starting one more router on `config`, its output in a log file of its own."""
    path = folder / "router.json"
    path.write_text(json.dumps(config))
    started: list[subprocess.Popen[str]] = []

    def start() -> subprocess.Popen[str]:
        log = open(folder / f"router-{len(started)}.log", "w")  # noqa: SIM115
        router = subprocess.Popen(
            [sys.executable, ROUTER_SCRIPT, str(path)],
            env={**server.client_env(), **env},
            cwd=PROJECT_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        log.close()
        started.append(router)
        return router

    return start


def stop_all(routers: list[subprocess.Popen[str]]) -> None:
    for router in routers:
        if router.poll() is None:
            router.send_signal(signal.SIGTERM)
    for router in routers:
        try:
            router.wait(60)
        except subprocess.TimeoutExpired:
            router.kill()


def assert_exact(client: SyncPrefectClient, source: str, good: list[str], events: list[str]):
    counts = runs_per_name(client, source)
    doubled = {name: n for name, n in counts.items() if n > 1}
    missing = sorted(set(good) - set(counts))
    assert not doubled, f"doubled runs {dict(list(doubled.items())[:10])} ({events})"
    assert not missing, f"{len(missing)} good messages without a run, e.g. {missing[:10]}"
    assert set(counts) == set(good), f"unexpected runs {set(counts) - set(good)}"


def test_azure_queue_survives_a_server_crash_and_a_router_kill(server, tmp_path):
    azurite = Azurite().start()
    routers: list[subprocess.Popen[str]] = []
    try:
        queue = QueueClient.from_connection_string(azurite.connection_string, "chaos")
        queue.create_queue()
        messages, good, bad = message_mix(TOTAL)
        for body in messages:
            queue.send_message(body)
        source = f"azure-chaos-{uuid.uuid4().hex[:6]}"
        config = {
            "threads": [
                {
                    "publisher_type": "AzureStorageQueue",
                    "name": source,
                    "queue_name": "chaos",
                    "connection_string_env": "CHAOS_AZURE",
                    "batch_size": 32,
                    "visibility_timeout_seconds": 10,
                    "max_poll_interval_seconds": 1,
                    "message_flow_actions": ROUTES,
                }
            ],
            "max_concurrency": 16,
        }
        start = router_starter(server, config, tmp_path, CHAOS_AZURE=azurite.connection_string)
        with SyncPrefectClient(server.url) as client:
            routers, events = run_chaos(server, client, source, len(good), start)
            properties = queue.get_queue_properties
            wait_until(
                lambda: (
                    count_runs(client, source) >= len(good)
                    and properties().approximate_message_count == 0
                ),
                600,
                "every good message to be triggered and the queue emptied",
            )
            stop_all(routers)
            assert_exact(client, source, good, events)
        poison = QueueClient.from_connection_string(azurite.connection_string, "chaos-poison")
        poisoned = []
        while batch := list(poison.receive_messages(max_messages=32, visibility_timeout=300)):
            poisoned.extend(message.content for message in batch)
        assert Counter(poisoned) == Counter(bad), "exactly the bad messages are dead-lettered"
    finally:
        stop_all(routers)
        azurite.close()


def test_kafka_survives_a_server_crash_and_a_router_kill(server, tmp_path):
    broker = Tansu().start()
    routers: list[subprocess.Popen[str]] = []
    try:
        messages, good, bad = message_mix(TOTAL)
        asyncio.run(_kafka_setup(broker.bootstrap, messages))
        source = f"kafka-chaos-{uuid.uuid4().hex[:6]}"
        config = {
            "threads": [
                {
                    "publisher_type": "Kafka",
                    "name": source,
                    "bootstrap_servers": broker.bootstrap,
                    "topics": ["chaos"],
                    "group_id": "chaos",
                    "dead_letter_topic": "chaos-dlq",
                    "session_timeout_ms": 2000,
                    "heartbeat_interval_ms": 500,
                    "message_flow_actions": ROUTES,
                }
            ],
            "max_concurrency": 16,
        }
        start = router_starter(server, config, tmp_path)
        with SyncPrefectClient(server.url) as client:
            routers, events = run_chaos(server, client, source, len(good), start)
            wait_until(
                lambda: count_runs(client, source) >= len(good),
                600,
                "every good message to be triggered",
            )
            wait_until(
                lambda: asyncio.run(_committed(broker.bootstrap)) == TOTAL,
                120,
                "every offset to be committed",
            )
            stop_all(routers)
            assert_exact(client, source, good, events)
        letters = asyncio.run(_dead_letters(broker.bootstrap, expected=len(bad)))
        reasons = [headers.get("x-router-reason", b"") for _, headers in letters]
        assert all(reasons), "every dead letter says why"
        # A message re-read after the kill is dead-lettered again: count distinct offsets.
        by_offset = {
            (headers["x-router-partition"], headers["x-router-offset"]): value
            for value, headers in letters
        }
        assert Counter(v.decode() for v in by_offset.values()) == Counter(bad)
    finally:
        stop_all(routers)
        broker.close()


async def _kafka_setup(bootstrap: str, messages: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic("chaos", 4, 1), NewTopic("chaos-dlq", 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        sends = [
            await producer.send("chaos", body.encode(), key=str(index).encode())
            for index, body in enumerate(messages)
        ]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


async def _committed(bootstrap: str) -> int:
    from aiokafka.structs import TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id="chaos")
    await consumer.start()
    try:
        offsets = [await consumer.committed(TopicPartition("chaos", p)) for p in range(4)]
    finally:
        await consumer.stop()
    return sum(offset or 0 for offset in offsets)


async def _dead_letters(bootstrap: str, expected: int) -> list[tuple[bytes, dict]]:
    consumer = AIOKafkaConsumer(
        "chaos-dlq", bootstrap_servers=bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    letters: list[tuple[bytes, dict]] = []
    try:
        for _ in range(20):
            batch = await consumer.getmany(timeout_ms=1000)
            letters += [(r.value, dict(r.headers)) for rs in batch.values() for r in rs]
            if len(letters) >= expected and not batch:
                break
    finally:
        await consumer.stop()
    return letters
