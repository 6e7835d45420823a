"""Kafka benchmark: messages on a topic -> flow runs per second, and send-to-run latency.

Starts a Prefect server (local PostgreSQL) and the Tansu broker, pre-loads a topic for the
throughput figure, then sends at a steady pace for the latency figures. Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka import AIOKafkaProducer  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402

from bench.azure_queue import percentile, wait_for_runs  # noqa: E402
from bench.dispatch import postgres_url  # noqa: E402
from devtools.prefect_server import PROJECT_ROOT, PrefectServer, stop_process  # noqa: E402
from devtools.tansu import Tansu  # noqa: E402

SOURCE = "bench-kafka"


def message(name: str) -> bytes:
    return json.dumps({"message_type": "ParamsMsg", "payload": {"name": name}}).encode()


async def produce(bootstrap: str, names: list[str], pace: float = 0.0) -> dict[str, datetime]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    sent: dict[str, datetime] = {}
    try:
        for name in names:
            sent[name] = datetime.now(timezone.utc)
            await producer.send_and_wait("bench", message(name), key=name.encode())
            if pace:
                await asyncio.sleep(pace)
    finally:
        await producer.stop()
    return sent


async def create_topic(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic("bench", 2, 1)])
    finally:
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=500, help="messages for throughput")
    parser.add_argument("--database", choices=["postgres", "sqlite"], default="postgres")
    args = parser.parse_args()

    database_url = postgres_url("event_router_bench") if args.database == "postgres" else None
    server = PrefectServer(database_url=database_url).start()
    broker = Tansu().start()
    router = None
    try:
        server.deploy_examples()
        asyncio.run(create_topic(broker.bootstrap))
        asyncio.run(produce(broker.bootstrap, [f"t{i}" for i in range(args.messages)]))
        config = server.home / "kafka.json"
        source = {
            "publisher_type": "Kafka",
            "name": SOURCE,
            "bootstrap_servers": broker.bootstrap,
            "topics": ["bench"],
            "group_id": "bench",
            "session_timeout_ms": 2000,
            "heartbeat_interval_ms": 500,
            "message_flow_actions": {"ParamsMsg": "Test Flow with params/integration-test"},
        }
        config.write_text(json.dumps({"threads": [source]}))
        router = subprocess.Popen(
            [sys.executable, "flows/router.py", str(config)],
            env=server.client_env(),
            cwd=PROJECT_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        created = wait_for_runs(server, args.messages, SOURCE)
        times = sorted(created.values())
        throughput = (len(times) - 1) / (times[-1] - times[0]).total_seconds()
        print(f"throughput: {throughput:.1f} runs/s over {args.messages} messages", flush=True)
        paced = [f"p{i}" for i in range(100)]
        sent = asyncio.run(produce(broker.bootstrap, paced, pace=0.1))
        created = wait_for_runs(server, args.messages + len(paced), SOURCE)
        latencies = [(created[name] - sent[name]).total_seconds() * 1000 for name in paced]
    finally:
        if router is not None:
            stop_process(router)
        broker.close()
        server.close()

    print(f"\nKafka source (Tansu), Prefect server on {args.database}")
    print(f"  throughput     {throughput:8.1f} runs/s   ({args.messages} messages)")
    print(
        f"  send-to-run    p50 {statistics.median(latencies):5.0f} ms  "
        f"p95 {percentile(latencies, 95):5.0f} ms  p99 {percentile(latencies, 99):5.0f} ms  "
        f"({len(latencies)} messages at 10/s)"
    )


if __name__ == "__main__":
    main()
