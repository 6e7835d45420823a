"""Per-source figures: messages -> flow runs per second from a backlog, and send-to-run latency
at a steady pace. A driver feeds one source; the same measurements serve every source."""

from __future__ import annotations

import abc
import argparse
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any, ClassVar

from bench.common import (
    PARAMS_DEPLOYMENT,
    RouterProcess,
    body,
    latency_figures,
    paced,
    rate,
    start_server,
    wait_for_runs,
)
from devtools.prefect_server import PrefectServer


class Driver(abc.ABC):
    """Feeds one router source with ParamsMsg messages named after their runs."""

    key: ClassVar[str]

    def __init__(self) -> None:
        self.source = f"bench-{self.key}"
        self.sent = 0

    def start(self) -> Driver:
        """Start what the source needs (a broker, a socket); returns self."""
        return self

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Stop what `start` started."""

    def source_config(self) -> dict[str, Any]:
        """The router config entry of this source."""
        return {
            **self._source_fields(),
            "name": self.source,
            "message_flow_actions": {"ParamsMsg": PARAMS_DEPLOYMENT},
        }

    def env(self) -> dict[str, str]:
        """Environment the router needs for this source."""
        return {}

    def attach(self, router: RouterProcess) -> None:  # noqa: B027 (optional hook)
        """Called once the router is started."""

    def send(self, name: str) -> None:
        """Send one message at once."""
        self.sent += 1
        self._send(name)

    def send_all(self, names: list[str]) -> None:
        """Send `names` as fast as the source takes them."""
        self.sent += len(names)
        self._send_all(names)

    @abc.abstractmethod
    def _source_fields(self) -> dict[str, Any]:
        """The source's own config fields (its publisher_type and connection)."""

    @abc.abstractmethod
    def _send(self, name: str) -> None:
        """Send the message named `name`."""

    def _send_all(self, names: list[str]) -> None:
        """Send every message in `names`, by default one after the other."""
        for name in names:
            self._send(name)


class StdinDriver(Driver):
    """Writes lines to the router's standard input."""

    key = "stdin"

    def _source_fields(self) -> dict[str, Any]:
        """StdInput has no fields of its own."""
        return {"publisher_type": "StdInput"}

    def attach(self, router: RouterProcess) -> None:
        """Write to this router's stdin."""
        self._stdin = router.stdin

    def _send(self, name: str) -> None:
        """One line, flushed at once."""
        self._stdin.write(body(name) + b"\n")
        self._stdin.flush()

    def _send_all(self, names: list[str]) -> None:
        """Every line in one write (it blocks while the pipe is full)."""
        self._stdin.write(b"".join(body(name) + b"\n" for name in names))
        self._stdin.flush()


def start_router(
    server: PrefectServer, drivers: list[Driver], name: str = "router"
) -> RouterProcess:
    """One router process with a source per driver (stdin piped if one of them is stdin)."""
    env: dict[str, str] = {}
    for driver in drivers:
        env.update(driver.env())
    router = RouterProcess(
        server,
        {"threads": [driver.source_config() for driver in drivers]},
        name=name,
        env=env,
        stdin=any(isinstance(driver, StdinDriver) for driver in drivers),
    )
    for driver in drivers:
        driver.attach(router)
    return router


def warm_up(server: PrefectServer, router: RouterProcess, drivers: list[Driver]) -> None:
    """One message through each source: the router is up and every connection is open."""
    for driver in drivers:
        driver.send("warm-up")
    for driver in drivers:
        wait_for_runs(server, driver.source, driver.sent, router)


def throughput(
    server: PrefectServer, router: RouterProcess, driver: Driver, messages: int
) -> dict[str, float]:
    """Runs per second from a backlog of `messages`, and the router's CPU seconds meanwhile."""
    names = [f"t{index}" for index in range(messages)]
    cpu = router.cpu_seconds()
    driver.send_all(names)
    created = wait_for_runs(server, driver.source, driver.sent, router)
    cpu = router.cpu_seconds() - cpu
    return {"rps": round(rate(created[name] for name in names), 2), "cpu_s": cpu}


def latency(
    server: PrefectServer,
    router: RouterProcess,
    driver: Driver,
    messages: int,
    per_second: float,
    prefix: str = "p",
) -> dict[str, float]:
    """Send-to-run latency percentiles of `messages` sent at a steady `per_second`."""
    # One message first wakes the source up: a polling source may have backed off meanwhile.
    driver.send(f"{prefix}-wake")
    wait_for_runs(server, driver.source, driver.sent, router)
    sent = paced([f"{prefix}{index}" for index in range(messages)], per_second, driver.send)
    created = wait_for_runs(server, driver.source, driver.sent, router)
    return latency_figures(sent, created)


def measure_source(
    server: PrefectServer,
    router: RouterProcess,
    driver: Driver,
    messages: int,
    latency_messages: int,
    per_second: float,
) -> dict[str, Any]:
    """Throughput, latency and CPU per 1,000 messages of one source, as a results entry."""
    speed = throughput(server, router, driver, messages)
    delays = latency(server, router, driver, latency_messages, per_second)
    return {
        "rps": speed["rps"],
        **delays,
        "messages": messages,
        "latency_messages": latency_messages,
        "latency_per_second": per_second,
        "cpu_s_per_1000": round(speed["cpu_s"] / messages * 1000, 3),
        "cpu_s": round(speed["cpu_s"], 3),
    }


def source_table(figures: dict[str, dict[str, Any]]) -> str:
    """The per-source figures as a text table."""
    lines = [
        f"{'source':<7} {'runs/s':>7} {'backlog':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} "
        f"{'paced':>5} {'at/s':>5} {'CPU s/1000':>10}"
    ]
    for key, f in figures.items():
        lines.append(
            f"{key:<7} {f['rps']:>7.1f} {f['messages']:>7} {f['p50_ms']:>7.0f} "
            f"{f['p95_ms']:>7.0f} {f['p99_ms']:>7.0f} {f['latency_messages']:>5} "
            f"{f['latency_per_second']:>5g} {f['cpu_s_per_1000']:>10.2f}"
        )
    return "\n".join(lines)


def source_arguments(parser: argparse.ArgumentParser, messages: int = 300) -> None:
    """Options shared by the per-source benchmarks."""
    parser.add_argument("--messages", type=int, default=messages, help="backlog for throughput")
    parser.add_argument("--latency-messages", type=int, default=100, help="paced messages")
    parser.add_argument("--per-second", type=float, default=10.0, help="pace for latency")
    parser.add_argument("--database", choices=["postgres", "sqlite"], default="postgres")


def run_single(
    driver: Driver,
    args: argparse.Namespace,
    more: Callable[[PrefectServer, RouterProcess], dict[str, Any]] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Measure one source on a router of its own; its figures, and what `more` measures next."""
    extra: dict[str, Any] = {}
    with ExitStack() as stack:
        server = start_server(stack, args.database)
        stack.callback(driver.close)
        driver.start()
        router = start_router(server, [driver])
        stack.callback(router.close)
        warm_up(server, router, [driver])
        figures = measure_source(
            server, router, driver, args.messages, args.latency_messages, args.per_second
        )
        if more is not None:
            extra = more(server, router)
    print(f"\n{driver.key} source, Prefect server on {args.database}")
    print(source_table({driver.key: figures}))
    return figures, extra
