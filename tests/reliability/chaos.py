"""Shared pieces of the fault-injection tests: a message mix, counting runs, a chaos script."""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from collections.abc import Callable

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

from devtools.prefect_server import PrefectServer

ROUTES = {
    "SampleMsg": "Test Flow/integration-test",
    "ParamsMsg": "Test Flow with params/integration-test",
}
BAD_KINDS = (
    "not json {",
    '{"message_type": "UnknownMsg"}',
    '{"message_type": "ParamsMsg", "payload": [1, 2]}',
    '{"message_type": "ParamsMsg", "payload": {"nom": "no name"}}',  # rejected by the server
)


def message_mix(total: int, bad_every: int = 10) -> tuple[list[str], list[str], list[str]]:
    """`total` messages, every `bad_every`-th malformed: (all in order, good names, bad bodies)."""
    messages, good, bad = [], [], []
    for index in range(total):
        if index % bad_every == bad_every - 1:
            body = BAD_KINDS[index // bad_every % len(BAD_KINDS)]
            bad.append(body)
        else:
            name = f"g{index:05d}"
            good.append(name)
            body = json.dumps({"message_type": "ParamsMsg", "payload": {"name": name}})
        messages.append(body)
    return messages, good, bad


def count_runs(client: SyncPrefectClient, source: str) -> int:
    """Flow runs the router made for `source` (0 while the server is away)."""
    try:
        return client.count_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"source:{source}"]))
        )
    except Exception:
        return 0


def runs_per_name(client: SyncPrefectClient, source: str) -> Counter[str]:
    """How many runs each `name` parameter got, over every run of `source`."""
    counts: Counter[str] = Counter()
    offset = 0
    while True:
        page = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"source:{source}"])),
            limit=200,
            offset=offset,
        )
        counts.update(run.parameters.get("name", "-") for run in page)
        offset += len(page)
        if len(page) < 200:
            return counts


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def run_chaos(
    server: PrefectServer,
    client: SyncPrefectClient,
    source: str,
    good: int,
    start_router: Callable[[], subprocess.Popen[str]],
) -> tuple[list[subprocess.Popen[str]], list[str]]:
    """Two routers; the Prefect server killed and restarted 20 s later; then one router
    SIGKILLed and restarted. Returns the routers still running and the events, for messages."""
    routers = [start_router(), start_router()]
    events = []
    wait_until(lambda: count_runs(client, source) >= good // 6, 300, "the first runs")
    events.append(f"Prefect server killed at {count_runs(client, source)} runs")
    server.kill()
    time.sleep(20)
    server.start()
    events.append("Prefect server restarted")
    wait_until(lambda: count_runs(client, source) >= good // 2, 300, "half the runs")
    events.append(f"router SIGKILLed at {count_runs(client, source)} runs")
    routers[0].kill()
    routers[0].wait()
    routers[0] = start_router()
    return routers, events
