"""Azure queue benchmark: throughput, pickup latency busy and idle, and idle request rate.

Starts a Prefect server (a fresh PostgreSQL database) and Azurite, runs the router on one queue,
and prints figures; it asserts nothing. `python bench/azure_queue.py` (Azurite via `make tools`).
Idle receive requests are counted in Azurite's access log.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if not __package__:  # run as a script: the project root, not bench/, comes first
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from azure.storage.queue import QueueClient  # noqa: E402

from bench.common import (  # noqa: E402
    RouterProcess,
    body,
    now,
    stop_on_signals,
    wait_for_runs,
)
from bench.sources import Driver, latency, run_single, source_arguments  # noqa: E402
from devtools.azurite import Azurite  # noqa: E402
from devtools.prefect_server import PrefectServer  # noqa: E402

QUEUE = "bench"
ENV = "BENCH_AZURE"
SETTLE_SECONDS = 20.0  # polling backs off from 0.1 s to its 10 s maximum in about 13 s
IDLE_GAP_SECONDS = 15.0


class AzureDriver(Driver):
    """Sends to a queue of an Azurite it starts."""

    key = "azure"

    def __init__(self) -> None:
        super().__init__()
        self.azurite = Azurite()
        self._queue: QueueClient | None = None

    def start(self) -> AzureDriver:
        """Start Azurite and create the queue."""
        self.azurite.start()
        self._queue = QueueClient.from_connection_string(self.azurite.connection_string, QUEUE)
        self._queue.create_queue()
        return self

    def close(self) -> None:
        """Stop Azurite."""
        if self._queue is not None:
            self._queue.close()
        self.azurite.close()

    def env(self) -> dict[str, str]:
        """The connection string, for `connection_string_env`."""
        return {ENV: self.azurite.connection_string}

    def _source_fields(self) -> dict[str, Any]:
        """The queue, read with the connection string from the environment."""
        return {
            "publisher_type": "AzureStorageQueue",
            "queue_name": QUEUE,
            "connection_string_env": ENV,
        }

    def _send(self, name: str) -> None:
        """One queue message, as text."""
        assert self._queue is not None
        self._queue.send_message(body(name).decode())

    def receive_requests(self) -> int:
        """Receive requests on the queue so far, from Azurite's access log."""
        marker = f"GET /devstoreaccount1/{QUEUE}/messages?"
        with open(self.azurite.log_path, errors="replace") as log:
            return sum(marker in line for line in log)


def queue_figures(
    server: PrefectServer,
    router: RouterProcess,
    driver: AzureDriver,
    *,
    busy_messages: int,
    busy_per_second: float,
    idle_seconds: float,
    idle_messages: int,
) -> dict[str, Any]:
    """Pickup latency while busy, receive requests per minute once idle, pickup after idling."""
    busy = latency(server, router, driver, busy_messages, busy_per_second, prefix="b")
    time.sleep(SETTLE_SECONDS)
    before = driver.receive_requests()
    time.sleep(idle_seconds)
    requests = driver.receive_requests() - before
    idle_ms: list[float] = []
    for index in range(idle_messages):
        if index:
            time.sleep(IDLE_GAP_SECONDS)
        name = f"i{index}"
        sent = now()
        driver.send(name)
        created = wait_for_runs(server, driver.source, driver.sent, router)
        idle_ms.append((created[name] - sent).total_seconds() * 1000)
    figures: dict[str, Any] = {
        "busy_pickup_p50_ms": busy["p50_ms"],
        "busy_pickup_p95_ms": busy["p95_ms"],
        "busy_messages": busy_messages,
        "busy_per_second": busy_per_second,
        "idle_requests_per_minute": round(requests * 60 / idle_seconds, 2),
        "idle_seconds": idle_seconds,
    }
    if idle_ms:
        figures.update(
            idle_pickup_p50_ms=round(statistics.median(idle_ms), 1),
            idle_pickup_max_ms=round(max(idle_ms), 1),
            idle_messages=idle_messages,
        )
    return figures


def queue_report(figures: dict[str, Any]) -> str:
    """The Azure queue figures as text lines."""
    lines = [
        f"  pickup latency, busy   p50 {figures['busy_pickup_p50_ms']:6.0f} ms  "
        f"p95 {figures['busy_pickup_p95_ms']:6.0f} ms  "
        f"({figures['busy_messages']} messages at {figures['busy_per_second']:g}/s)"
    ]
    if "idle_pickup_p50_ms" in figures:
        lines.append(
            f"  pickup latency, idle   p50 {figures['idle_pickup_p50_ms']:6.0f} ms  "
            f"max {figures['idle_pickup_max_ms']:6.0f} ms  "
            f"({figures['idle_messages']} messages, {IDLE_GAP_SECONDS:.0f} s apart)"
        )
    lines.append(
        f"  idle receive requests  {figures['idle_requests_per_minute']:.1f} per minute "
        f"(over {figures['idle_seconds']:.0f} s, after {SETTLE_SECONDS:.0f} s of backoff)"
    )
    return "\n".join(lines)


def queue_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the Azure queue figures."""
    parser.add_argument("--busy-messages", type=int, default=50, help="paced while busy")
    parser.add_argument("--busy-per-second", type=float, default=5.0)
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="idle request window")
    parser.add_argument("--idle-messages", type=int, default=3, help="pickups after idling")


def main() -> None:
    """Run the Azure queue benchmark on its own and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source_arguments(parser)
    queue_arguments(parser)
    args = parser.parse_args()
    stop_on_signals()
    driver = AzureDriver()
    _, figures = run_single(
        driver,
        args,
        lambda server, router: queue_figures(
            server,
            router,
            driver,
            busy_messages=args.busy_messages,
            busy_per_second=args.busy_per_second,
            idle_seconds=args.idle_seconds,
            idle_messages=args.idle_messages,
        ),
    )
    print(queue_report(figures))


if __name__ == "__main__":
    main()
