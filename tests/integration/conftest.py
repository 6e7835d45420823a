"""A real Prefect server for the whole session, with the example flows deployed."""

from __future__ import annotations

import json
import re
import signal
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

from devtools.azurite import Azurite
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


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    server = Azurite().start()
    try:
        yield server
    finally:
        server.close()


class TestQueue:
    """A fresh queue on Azurite and its poison queue, seen through the synchronous SDK."""

    def __init__(self, azurite: Azurite, name: str) -> None:
        from azure.storage.queue import QueueClient

        self.name = name
        self.poison_name = f"{name}-poison"
        self.connection_string = azurite.connection_string
        self.client = QueueClient.from_connection_string(azurite.connection_string, name)
        self.poison = QueueClient.from_connection_string(
            azurite.connection_string, self.poison_name
        )
        self.client.create_queue()

    def send(self, *contents: str) -> list[str]:
        """Send each content as it is; return the message ids."""
        return [self.client.send_message(content).id for content in contents]

    def count(self) -> int:
        return self.client.get_queue_properties().approximate_message_count

    def poisoned(self) -> list[str]:
        """Contents in the poison queue (peeked, left in place)."""
        try:
            return [m.content for m in self.poison.peek_messages(max_messages=32)]
        except Exception as exc:  # the poison queue is created on the first rejection
            if "QueueNotFound" in str(exc):
                return []
            raise


@pytest.fixture
def queue(azurite: Azurite) -> TestQueue:
    return TestQueue(azurite, f"q{uuid.uuid4().hex[:12]}")


def azure_config(
    path: Path,
    source_name: str,
    queue: TestQueue,
    routes: dict | None = None,
    router: dict | None = None,
    **source_fields,
) -> Path:
    """A router config with one Azure queue source reading the connection string from env."""
    source = {
        "publisher_type": "AzureStorageQueue",
        "name": source_name,
        "storage_account": "devstoreaccount1",
        "queue_name": queue.name,
        "connection_string_env": "TEST_AZURE_CONNECTION_STRING",
        "min_poll_interval_seconds": 0.05,
        "max_poll_interval_seconds": 0.5,
        "message_flow_actions": routes
        or {
            "SampleMsg": "Test Flow/integration-test",
            "ParamsMsg": "Test Flow with params/integration-test",
        },
        **source_fields,
    }
    config = {"threads": [source], "cancel_check_seconds": 0.5, **(router or {})}
    path.write_text(json.dumps(config))
    return path


def stop_router(router: subprocess.Popen[str], timeout: float = 60) -> str:
    """SIGTERM a router started with start_router; its exit code must be 0. Returns its output."""
    router.send_signal(signal.SIGTERM)
    try:
        output, _ = router.communicate(timeout=timeout)
    finally:
        router.kill()
    assert router.returncode == 0, output
    return output


def cancel_and_wait(client: SyncPrefectClient, flow_run_id, timeout: float = 90) -> FlowRun:
    """Cancel a flow run through the API, as the UI does; return it once its state is final."""
    from prefect.states import Cancelling

    client.set_flow_run_state(flow_run_id, Cancelling())
    return wait_for(
        lambda: (r := client.read_flow_run(flow_run_id)).state.is_final() and r,
        timeout=timeout,
        what="the cancelled run to end",
    )
