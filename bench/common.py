"""What the benchmarks share: a fresh database, counting runs, timing, and the router process."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack, suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import psutil
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import FlowRunSort

from devtools.postgres import drop_database, fresh_database
from devtools.prefect_server import PROJECT_ROOT, PrefectServer, stop_process

PARAMS_DEPLOYMENT = "Test Flow with params/integration-test"
PAGE = 200


def _tagged(tag: str) -> FlowRunFilter:
    """Flow runs carrying `tag`."""
    return FlowRunFilter(tags=FlowRunFilterTags(all_=[tag]))


def runs_tagged(url: str, tag: str) -> list[FlowRun]:
    """Every flow run carrying `tag`, read page by page."""
    runs: list[FlowRun] = []
    with SyncPrefectClient(url) as client:
        while True:
            batch = client.read_flow_runs(
                flow_run_filter=_tagged(tag), sort=FlowRunSort.ID_DESC, limit=PAGE, offset=len(runs)
            )
            runs.extend(batch)
            if len(batch) < PAGE:
                return runs


def count_tagged(url: str, tag: str) -> int:
    """How many flow runs carry `tag` (one cheap query, fit for polling)."""
    with SyncPrefectClient(url) as client:
        return client.count_flow_runs(flow_run_filter=_tagged(tag))


def rate(created: Iterable[datetime]) -> float:
    """Runs per second between the first and the last creation, on the server's clock."""
    times = sorted(created)
    span = (times[-1] - times[0]).total_seconds() if len(times) > 1 else 0.0
    return (len(times) - 1) / span if span > 0 else float("nan")


def percentile(values: list[float], q: float) -> float:
    """The `q`th percentile of `values`, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def latency_figures(sent: dict[str, datetime], created: dict[str, datetime]) -> dict[str, float]:
    """p50/p95/p99 in milliseconds from each message's send time to its run's creation."""
    values = [(created[name] - at).total_seconds() * 1000 for name, at in sent.items()]
    return {
        "p50_ms": round(statistics.median(values), 1),
        "p95_ms": round(percentile(values, 95), 1),
        "p99_ms": round(percentile(values, 99), 1),
    }


def now() -> datetime:
    """The current time, timezone-aware UTC, comparable with a run's `created`."""
    return datetime.now(timezone.utc)


def body(name: str) -> bytes:
    """A ParamsMsg whose run is recognised by its `name` parameter."""
    return json.dumps({"message_type": "ParamsMsg", "payload": {"name": name}}).encode()


def paced(names: list[str], per_second: float, send: Callable[[str], None]) -> dict[str, datetime]:
    """Send `names` at a steady `per_second` (on a fixed schedule); the send time of each."""
    sent: dict[str, datetime] = {}
    start = time.monotonic()
    for index, name in enumerate(names):
        delay = start + index / per_second - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sent[name] = now()
        send(name)
    return sent


class RouterProcess:
    """`python flows/router.py CONFIG` in its own process group, watched with psutil."""

    def __init__(
        self,
        server: PrefectServer,
        config: dict[str, Any],
        *,
        name: str = "router",
        env: dict[str, str] | None = None,
        stdin: bool = False,
    ) -> None:
        config_path = server.home / f"{name}.json"
        config_path.write_text(json.dumps(config, indent=2))
        self.log_path = server.home / f"{name}.log"
        with open(self.log_path, "ab") as log:
            self.process: subprocess.Popen[bytes] = subprocess.Popen(
                [sys.executable, "flows/router.py", str(config_path)],
                env={**server.client_env(), **(env or {})},
                cwd=PROJECT_ROOT,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._ps = psutil.Process(self.process.pid)
        self._max_rss = 0

    @property
    def stdin(self) -> IO[bytes]:
        """The router's standard input (only when started with `stdin=True`)."""
        assert self.process.stdin is not None, "router started without a stdin pipe"
        return self.process.stdin

    def check_alive(self) -> None:
        """Raise with the end of the router's log if it has exited."""
        if self.process.poll() is not None:
            raise RuntimeError(
                f"the router exited with {self.process.returncode}:\n"
                + self.log_path.read_text(errors="replace")[-3000:]
            )

    def cpu_seconds(self) -> float:
        """User plus system CPU time the router has used so far."""
        self.check_alive()
        times = self._ps.cpu_times()
        self._max_rss = max(self._max_rss, self._ps.memory_info().rss)
        return times.user + times.system

    def peak_rss_mb(self) -> float:
        """The router's peak resident set size so far (the kernel's VmHWM where it has one)."""
        self.check_alive()
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return max(self._max_rss, self._ps.memory_info().rss) / 2**20

    def close(self) -> None:
        """Close its stdin (if piped) and stop it: SIGTERM, then SIGKILL if it lingers."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            with suppress(BrokenPipeError):
                self.process.stdin.close()
        stop_process(self.process)


def wait_for_runs(
    server: PrefectServer,
    source: str,
    expected: int,
    router: RouterProcess | None = None,
    timeout: float = 600.0,
) -> dict[str, datetime]:
    """Wait until `source` has made `expected` runs in all; their creation times by name."""
    tag = f"source:{source}"
    deadline = time.monotonic() + timeout
    count = count_tagged(server.url, tag)
    while count < expected:
        if router is not None:
            router.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"source '{source}': only {count} of {expected} runs appeared")
        time.sleep(0.25)
        count = count_tagged(server.url, tag)
    return {run.parameters["name"]: run.created for run in runs_tagged(server.url, tag)}


def start_server(stack: ExitStack, database: str = "postgres") -> PrefectServer:
    """A server with the example deployments on a fresh database; `stack` stops and drops it."""
    database_url = None
    if database == "postgres":
        name = f"event_router_bench_{os.getpid()}"
        database_url = fresh_database(name)
        stack.callback(drop_database, name)
    server = PrefectServer(database_url=database_url)
    stack.callback(server.close)
    server.start()
    server.deploy_examples()
    return server


def stop_on_signals() -> None:
    """Make SIGINT and SIGTERM raise KeyboardInterrupt, so everything started is stopped."""
    # Also SIGINT: a background job of a script inherits it ignored.

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
