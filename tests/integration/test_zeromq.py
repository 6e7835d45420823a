"""The ZeroMQ source: real sockets, the router as a user runs it, a real Prefect server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from tests.integration.conftest import runs_tagged, start_router, stop_router, wait_for

SAMPLE = '{"message_type": "SampleMsg"}'
PARAMS = '{"message_type": "ParamsMsg", "payload": {"name": "Gordon Bennett"}}'
MALFORMED = '{"message_type": "SampleMsg", oops'


def params(name: str) -> bytes:
    """A ParamsMsg whose `id` is its name, so the name tells which message made a run."""
    message = {"message_type": "ParamsMsg", "payload": {"name": name}, "id": name}
    return json.dumps(message).encode()


def zeromq_config(path: Path, source_name: str, **source_fields: object) -> Path:
    """A router config with one ZeroMQ source routing the two example messages."""
    source = {
        "publisher_type": "ZeroMQ",
        "name": source_name,
        "message_flow_actions": {
            "SampleMsg": "Test Flow/integration-test",
            "ParamsMsg": "Test Flow with params/integration-test",
        },
        **source_fields,
    }
    path.write_text(json.dumps({"threads": [source], "cancel_check_seconds": 0.5}))
    return path


@pytest.fixture
def context() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def bound(context: zmq.Context, kind: int) -> tuple[zmq.Socket, str]:
    """A socket of `kind` on a free loopback port, and its endpoint. A send waits at most a
    minute (a PUSH waits for the router to connect), so a dead router fails the test."""
    socket = context.socket(kind)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.SNDTIMEO, 60_000)
    socket.bind("tcp://127.0.0.1:*")
    return socket, socket.getsockopt_string(zmq.LAST_ENDPOINT)


def test_pull_original_messages_make_two_runs_and_a_malformed_one_is_rejected(
    prefect_server, client, source_name, tmp_path, context
):
    push, endpoint = bound(context, zmq.PUSH)
    config = zeromq_config(
        tmp_path / "zmq.json", source_name, socket_type="PULL", connect=[endpoint]
    )
    router = start_router(prefect_server, config)
    try:
        # One connection keeps the order: once PARAMS has its run, MALFORMED was handled.
        for message in (SAMPLE, MALFORMED, PARAMS):
            push.send_string(message)
        wait_for(lambda: len(runs_tagged(client, f"source:{source_name}")) >= 2, what="2 runs")
    finally:
        output = stop_router(router)
    runs = runs_tagged(client, f"source:{source_name}")
    assert len(runs) == 2
    by_flow = {client.read_flow(run.flow_id).name: run for run in runs}
    assert set(by_flow) == {"Test Flow", "Test Flow with params"}
    assert by_flow["Test Flow"].parameters == {}
    assert by_flow["Test Flow with params"].parameters == {"name": "Gordon Bennett"}
    assert output.count("Rejected") == 1
    assert f"Rejected a message from source '{source_name}': not JSON" in output
    assert MALFORMED in output
    assert "Traceback" not in output


def test_sub_with_the_original_fields_makes_one_run_per_id(
    prefect_server, client, source_name, tmp_path, context
):
    pub, endpoint = bound(context, zmq.PUB)
    config = zeromq_config(tmp_path / "zmq.json", source_name, tcp_uri=endpoint, topic="orders")
    router = start_router(prefect_server, config)
    probes: list[str] = []

    def probe() -> list:
        # A SUB gets only what is published after its subscription has reached the PUB.
        probes.append(f"probe-{len(probes):03d}")
        pub.send_multipart([b"orders", params(probes[-1])])
        return runs_tagged(client, f"source:{source_name}")

    expected = [f"m-{i:02d}" for i in range(20)]
    try:
        wait_for(probe, timeout=90, what="the router's subscription")
        pub.send_multipart([b"billing", params("other-topic")])
        for name in expected:
            pub.send_multipart([b"orders", params(name)])
            pub.send_multipart([b"orders", params(name)])  # the same id: no second run
        wait_for(
            lambda: set(expected) <= names(runs_tagged(client, f"source:{source_name}")),
            what="a run for every message",
        )
    finally:
        output = stop_router(router)
    made = [run.parameters["name"] for run in runs_tagged(client, f"source:{source_name}")]
    assert len(made) == len(set(made)), "one run per id"
    # the subscription was live from the first probe that made a run: every later one made one
    live_from = min(probes.index(name) for name in made if name.startswith("probe-"))
    assert set(made) == {*probes[live_from:], *expected}
    assert "other-topic" not in output
    assert "Rejected" not in output and "Traceback" not in output


def names(runs: list) -> set[str]:
    return {run.parameters.get("name") for run in runs}
