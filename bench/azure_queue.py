"""Azure queue benchmark: throughput, pickup latency busy and idle, and idle request rate.

Starts a Prefect server (local PostgreSQL) and Azurite, runs the router on one queue, and
prints figures; it asserts nothing. `python bench/azure_queue.py` (Azurite via `make tools`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from azure.storage.queue import QueueClient  # noqa: E402
from prefect.client.orchestration import PrefectClient  # noqa: E402

from bench.dispatch import postgres_url, runs_tagged  # noqa: E402
from devtools.azurite import Azurite  # noqa: E402
from devtools.prefect_server import PROJECT_ROOT, PrefectServer, stop_process  # noqa: E402

SOURCE = "bench-azure"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def created_by_id(
    server: PrefectServer, expected: int, source: str = SOURCE
) -> dict[str, datetime]:
    """Creation time of each run of `source`, by its `name` parameter."""

    async def read() -> dict[str, datetime]:
        async with PrefectClient(server.url) as client:
            runs = await runs_tagged(client, f"source:{source}", expected)
        return {run.parameters["name"]: run.created for run in runs}

    return asyncio.run(read())


def wait_for_runs(
    server: PrefectServer, expected: int, source: str = SOURCE, timeout: float = 600
) -> dict:
    """Wait until `source` has made `expected` runs; their creation times by name."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        created = created_by_id(server, expected, source)
        if len(created) >= expected:
            return created
        time.sleep(0.5)
    raise RuntimeError(f"only {len(created)} of {expected} runs appeared")


def send(queue: QueueClient, name: str) -> datetime:
    sent = datetime.now(timezone.utc)
    queue.send_message(json.dumps({"message_type": "ParamsMsg", "payload": {"name": name}}))
    return sent


def latency_ms(sent: dict[str, datetime], created: dict[str, datetime]) -> list[float]:
    return [(created[name] - at).total_seconds() * 1000 for name, at in sent.items()]


def receive_requests(azurite: Azurite, queue_name: str) -> int:
    marker = f"GET /devstoreaccount1/{queue_name}/messages?"
    return sum(marker in line for line in azurite.log_path.read_text().splitlines())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=500, help="messages for throughput")
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--database", choices=["postgres", "sqlite"], default="postgres")
    args = parser.parse_args()

    database_url = postgres_url("event_router_bench") if args.database == "postgres" else None
    server = PrefectServer(database_url=database_url).start()
    azurite = Azurite().start()
    router = None
    try:
        server.deploy_examples()
        queue = QueueClient.from_connection_string(azurite.connection_string, "bench")
        queue.create_queue()
        config = server.home / "azure.json"
        config.write_text(
            json.dumps(
                {
                    "threads": [
                        {
                            "publisher_type": "AzureStorageQueue",
                            "name": SOURCE,
                            "queue_name": "bench",
                            "connection_string_env": "BENCH_AZURE",
                            "message_flow_actions": {
                                "ParamsMsg": "Test Flow with params/integration-test"
                            },
                        }
                    ]
                }
            )
        )
        for index in range(args.messages):
            queue.send_message(
                json.dumps({"message_type": "ParamsMsg", "payload": {"name": f"t{index}"}})
            )
        router = subprocess.Popen(
            [sys.executable, "flows/router.py", str(config)],
            env={**server.client_env(), "BENCH_AZURE": azurite.connection_string},
            cwd=PROJECT_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        created = wait_for_runs(server, args.messages)
        times = sorted(created.values())
        throughput = (len(times) - 1) / (times[-1] - times[0]).total_seconds()
        print(f"throughput: {throughput:.1f} runs/s over {args.messages} queued messages")

        busy: dict[str, datetime] = {}
        for index in range(50):
            busy[f"b{index}"] = send(queue, f"b{index}")
            time.sleep(0.2)
        created = wait_for_runs(server, args.messages + 50)
        busy_ms = latency_ms(busy, created)

        time.sleep(20)  # let polling back off to its maximum
        before = receive_requests(azurite, "bench")
        time.sleep(args.idle_seconds)
        idle_per_minute = (receive_requests(azurite, "bench") - before) * 60 / args.idle_seconds

        idle: dict[str, datetime] = {}
        for index in range(5):
            idle[f"i{index}"] = send(queue, f"i{index}")
            wait_for_runs(server, args.messages + 50 + index + 1)
            time.sleep(15)
        created = created_by_id(server, args.messages + 55)
        idle_ms = latency_ms(idle, created)
    finally:
        if router is not None:
            stop_process(router)
        azurite.close()
        server.close()

    print(f"\nAzure queue source, Prefect server on {args.database}")
    print(f"  throughput            {throughput:8.1f} runs/s   ({args.messages} messages)")
    for label, values in (("pickup latency, busy", busy_ms), ("pickup latency, idle", idle_ms)):
        print(
            f"  {label:<21} p50 {statistics.median(values):6.0f} ms  "
            f"p95 {percentile(values, 95):6.0f} ms  ({len(values)} messages)"
        )
    print(f"  idle receive requests {idle_per_minute:8.1f} per minute ({args.idle_seconds:.0f} s)")


if __name__ == "__main__":
    main()
