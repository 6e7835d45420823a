"""A real Prefect server for the whole session, with the example flows deployed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from prefect.client.schemas.objects import FlowRun

from devtools.prefect_server import PROJECT_ROOT, PrefectServer

ROUTER_SCRIPT = str(PROJECT_ROOT / "flows" / "router.py")
RUN_URL = re.compile(r"/runs/flow-run/([0-9a-f-]{36})")


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[PrefectServer]:
    server = PrefectServer().start()
    try:
        server.deploy_examples()
        yield server
    finally:
        server.close()


@pytest.fixture
def client(prefect_server: PrefectServer) -> Iterator[SyncPrefectClient]:
    with SyncPrefectClient(prefect_server.url) as client:
        yield client


@pytest.fixture
def source_name() -> str:
    """A source name of this test's own, so its runs are told apart by tag."""
    return f"src-{uuid.uuid4().hex[:8]}"


def write_config(path: Path, source_name: str, routes: dict | None = None, **settings) -> Path:
    routes = routes or {
        "SampleMsg": "Test Flow/integration-test",
        "ParamsMsg": "Test Flow with params/integration-test",
    }
    config = {
        "threads": [
            {"publisher_type": "StdInput", "name": source_name, "message_flow_actions": routes}
        ],
        "cancel_check_seconds": 0.5,
        **settings,
    }
    path.write_text(json.dumps(config))
    return path


def run_router(
    server: PrefectServer,
    config: Path,
    lines: list[str],
    *,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """`python flows/router.py CONFIG` with `lines` on its standard input."""
    return subprocess.run(
        [sys.executable, ROUTER_SCRIPT, str(config)],
        input="".join(f"{line}\n" for line in lines),
        env=env or server.client_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=PROJECT_ROOT,
    )


def start_router(server: PrefectServer, config: Path, **env: str) -> subprocess.Popen[str]:
    """The router as a background process whose standard input the test writes to."""
    return subprocess.Popen(
        [sys.executable, ROUTER_SCRIPT, str(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**server.client_env(), **env},
        text=True,
        cwd=PROJECT_ROOT,
    )


def router_run_id(output: str) -> str:
    match = RUN_URL.search(output)
    assert match, f"no flow run URL in the router's output:\n{output}"
    return match.group(1)


def runs_tagged(client: SyncPrefectClient, *tags: str) -> list[FlowRun]:
    return client.read_flow_runs(
        flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=list(tags)))
    )


def wait_for(predicate, timeout: float = 60, interval: float = 0.3, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
