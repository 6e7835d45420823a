"""Brokers going away and coming back: the router reconnects by itself, other sources flow."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from azure.storage.queue import QueueClient
from prefect.client.orchestration import SyncPrefectClient

from devtools.azurite import Azurite
from devtools.prefect_server import PROJECT_ROOT, PrefectServer
from devtools.tansu import Tansu
from tests.reliability.chaos import ROUTES, count_runs, runs_per_name, wait_until

ROUTER_SCRIPT = str(PROJECT_ROOT / "flows" / "router.py")


def params(name: str, **extra: str) -> str:
    return json.dumps({"message_type": "ParamsMsg", "payload": {"name": name}, **extra})


async def create_topic(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic("restarts", 1, 1)])
    finally:
        await admin.close()


async def produce(bootstrap: str, names: list[str]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for name in names:
            # With an `id`: the restarted Tansu lost its topic, so offsets start again at 0 and
            # a key made of topic/partition/offset alone would name the first broker's runs.
            await producer.send_and_wait("restarts", params(name, id=name).encode())
    finally:
        await producer.stop()


def test_azurite_and_kafka_restarts(tmp_path: Path):
    server = PrefectServer(home=tmp_path / "prefect").start()
    azurite = Azurite(location=tmp_path / "azurite").start()
    tansu = Tansu().start()
    router = None
    sent: list[str] = []
    try:
        server.deploy_examples()
        queue = QueueClient.from_connection_string(azurite.connection_string, "restarts")
        queue.create_queue()
        asyncio.run(create_topic(tansu.bootstrap))
        tag = uuid.uuid4().hex[:6]
        sources = [
            {"publisher_type": "StdInput", "name": f"stdin-{tag}"},
            {
                "publisher_type": "AzureStorageQueue",
                "name": f"azure-{tag}",
                "queue_name": "restarts",
                "connection_string_env": "RESTART_AZURE",
                "max_poll_interval_seconds": 1,
            },
            {
                "publisher_type": "Kafka",
                "name": f"kafka-{tag}",
                "bootstrap_servers": tansu.bootstrap,
                "topics": ["restarts"],
                "group_id": "restarts",
                "session_timeout_ms": 2000,
                "heartbeat_interval_ms": 500,
            },
        ]
        config = tmp_path / "router.json"
        config.write_text(
            json.dumps({"threads": [{**s, "message_flow_actions": ROUTES} for s in sources]})
        )
        log = open(tmp_path / "router.log", "w")  # noqa: SIM115
        router = subprocess.Popen(
            [sys.executable, ROUTER_SCRIPT, str(config)],
            env={**server.client_env(), "RESTART_AZURE": azurite.connection_string},
            cwd=PROJECT_ROOT,
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        log.close()

        def via_stdin(*names: str) -> None:
            router.stdin.write("".join(params(name) + "\n" for name in names))
            router.stdin.flush()
            sent.extend(names)

        def via_azure(*names: str) -> None:
            for name in names:
                queue.send_message(params(name))
            sent.extend(names)

        def via_kafka(*names: str) -> None:
            asyncio.run(produce(tansu.bootstrap, list(names)))
            sent.extend(names)

        with SyncPrefectClient(server.url) as client:

            def all_triggered() -> bool:
                return sum(count_runs(client, s["name"]) for s in sources) >= len(sent)

            via_stdin("s1", "s2")
            via_azure("a1", "a2")
            via_kafka("k1", "k2")
            wait_until(all_triggered, 120, "the first runs from every source")

            azurite.stop()  # the queue goes away; the other sources keep flowing
            via_stdin("s3", "s4")
            via_kafka("k3", "k4")
            wait_until(all_triggered, 120, "stdin and Kafka runs while Azurite is down")
            azurite.start()  # same port, same --location: the queue is back
            via_azure("a3", "a4")
            wait_until(all_triggered, 120, "Azure runs after Azurite came back")

            tansu.close()  # the broker goes away (Tansu keeps topics in memory only)
            via_stdin("s5")
            via_azure("a5")
            wait_until(all_triggered, 120, "stdin and Azure runs while Kafka is down")
            tansu = Tansu(port=tansu.port).start()
            asyncio.run(create_topic(tansu.bootstrap))
            via_kafka("k5", "k6")
            wait_until(all_triggered, 180, "Kafka runs after the broker came back")

            assert router.poll() is None, "the router rode out both restarts"
            router.send_signal(signal.SIGTERM)
            assert router.wait(60) == 0
            counts = sum((runs_per_name(client, s["name"]) for s in sources), start=Counter())
        assert sorted(counts) == sorted(sent)
        assert set(counts.values()) == {1}
    finally:
        if router is not None and router.poll() is None:
            router.kill()
        tansu.close()
        azurite.close()
        server.close()
