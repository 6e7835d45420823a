"""The router run as a user runs it, `python flows/router.py CONFIG`, against a real server."""

from __future__ import annotations

import json
import signal

import pytest
from prefect.client.schemas.objects import StateType
from prefect.states import Cancelling

from tests.integration.conftest import (
    router_run_id,
    run_router,
    runs_tagged,
    start_router,
    wait_for,
    write_config,
)

SAMPLE = '{"message_type": "SampleMsg"}'
PARAMS = '{"message_type": "ParamsMsg", "payload": {"name": "Gordon Bennett"}}'


def test_original_messages_make_exactly_two_runs(prefect_server, client, source_name, tmp_path):
    config = write_config(tmp_path / "router.json", source_name)
    result = run_router(prefect_server, config, [SAMPLE, PARAMS])
    assert result.returncode == 0, result.stdout + result.stderr

    runs = runs_tagged(client, f"source:{source_name}")
    assert len(runs) == 2
    by_flow = {client.read_flow(run.flow_id).name: run for run in runs}
    assert set(by_flow) == {"Test Flow", "Test Flow with params"}
    assert by_flow["Test Flow with params"].parameters == {"name": "Gordon Bennett"}
    assert by_flow["Test Flow"].parameters == {}
    assert set(by_flow["Test Flow"].tags) >= {
        "event-router",
        f"source:{source_name}",
        "message-type:SampleMsg",
    }
    # the router's own run ended Completed, and logged each trigger with the run's name and id
    router_run = client.read_flow_run(router_run_id(result.stderr + result.stdout))
    assert router_run.state.type == StateType.COMPLETED
    for run in runs:
        assert f"Triggered flow run '{run.name}' ({run.id})" in result.stderr
    # triggered runs are not subflows: cancelling the router must not cancel them
    assert all(run.parent_task_run_id is None for run in runs)


def test_route_names_deployments_exactly(prefect_server, client, source_name, tmp_path):
    # "Test Flow" is a prefix of "Test Flow with params": only the exact name may match.
    config = write_config(
        tmp_path / "router.json", source_name, {"SampleMsg": "Test Flow/integration-test"}
    )
    result = run_router(prefect_server, config, [SAMPLE])
    assert result.returncode == 0, result.stderr
    (run,) = runs_tagged(client, f"source:{source_name}")
    assert client.read_flow(run.flow_id).name == "Test Flow"


def test_missing_deployment_refuses_to_start(prefect_server, client, source_name, tmp_path):
    config = write_config(
        tmp_path / "router.json",
        source_name,
        {"SampleMsg": "Test Flow/integration", "Other": "No Such Flow/integration-test"},
    )
    result = run_router(prefect_server, config, [SAMPLE])
    assert result.returncode != 0
    assert "Deployment 'Test Flow/integration' not found: run `prefect deploy` first" in (
        result.stderr
    )
    assert "Deployment 'No Such Flow/integration-test' not found" in result.stderr
    assert runs_tagged(client, f"source:{source_name}") == []
    assert client.read_flow_run(router_run_id(result.stderr)).state.type == StateType.FAILED


def test_missing_deployment_can_be_only_a_warning(prefect_server, client, source_name, tmp_path):
    routes = {"SampleMsg": "Test Flow/integration-test", "Ghost": "No Such Flow/nowhere"}
    config = write_config(tmp_path / "r.json", source_name, routes, missing_deployments="warn")
    result = run_router(prefect_server, config, ['{"message_type": "Ghost"}', SAMPLE])
    assert result.returncode == 0, result.stderr
    assert "Rejected Ghost" in result.stderr and "No Such Flow/nowhere' not found" in result.stderr
    assert len(runs_tagged(client, f"source:{source_name}")) == 1


def test_same_id_twice_makes_one_run(prefect_server, client, source_name, tmp_path):
    config = write_config(tmp_path / "router.json", source_name)
    message = json.dumps({"message_type": "ParamsMsg", "payload": {"name": "A"}, "id": "order-1"})
    result = run_router(prefect_server, config, [message, message])
    assert result.returncode == 0, result.stderr
    assert len(runs_tagged(client, f"source:{source_name}")) == 1
    # a later router reading the same message again (a redelivery) reuses that run too
    assert run_router(prefect_server, config, [message]).returncode == 0
    assert len(runs_tagged(client, f"source:{source_name}")) == 1


def test_bad_messages_are_logged_and_skipped(prefect_server, client, source_name, tmp_path):
    config = write_config(tmp_path / "router.json", source_name)
    bad = [
        "this is not json",
        '{"payload": {"name": "x"}}',
        '{"message_type": "UnknownMsg"}',
        '{"message_type": "ParamsMsg", "payload": ["not", "an", "object"]}',
        '{"message_type": "ParamsMsg", "payload": {"nom": "missing name"}}',
    ]
    result = run_router(prefect_server, config, [*bad, SAMPLE])
    assert result.returncode == 0, result.stderr
    errors = [line for line in result.stderr.splitlines() if "| ERROR" in line]
    rejected = [line for line in errors if "Rejected" in line]
    assert len(rejected) == 5, "\n".join(errors)
    assert "not JSON" in rejected[0]
    assert "no message_type" in rejected[1]
    assert "Rejected UnknownMsg" in rejected[2] and "no route" in rejected[2]
    assert "Rejected ParamsMsg" in rejected[3] and "payload must be a JSON object" in rejected[3]
    assert "Rejected ParamsMsg" in rejected[4]
    assert (
        "rejected the parameters" in rejected[4]
        and "'name' is a required property" in (rejected[4])
    )
    assert "Traceback" not in result.stderr
    (run,) = runs_tagged(client, f"source:{source_name}")  # the good message after them
    assert run.parameters == {}


def test_invalid_config_is_one_line_per_problem(prefect_server, tmp_path):
    config = tmp_path / "bad.json"
    config.write_text('{"threads": [{"publisher_type": "Foo"}, {"publisher_type": "StdInput"}]}')
    result = run_router(prefect_server, config, [])
    assert result.returncode == 2
    first, second = result.stderr.splitlines()
    assert first.startswith("error: threads[0].publisher_type: unknown 'Foo', expected one of ")
    assert "'StdInput', 'AzureStorageQueue'" in first
    assert second == "error: threads[1].message_flow_actions: field required"


def test_old_prefect_api_uri_spelling_works(prefect_server, client, source_name, tmp_path):
    env = prefect_server.client_env()
    env["PREFECT_API_URI"] = env.pop("PREFECT_API_URL")
    config = write_config(tmp_path / "router.json", source_name)
    result = run_router(prefect_server, config, [SAMPLE], env=env)
    assert result.returncode == 0, result.stderr
    assert len(runs_tagged(client, f"source:{source_name}")) == 1


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_drains_and_ends_the_run(prefect_server, client, source_name, tmp_path, signum):
    config = write_config(tmp_path / "router.json", source_name)
    router = start_router(prefect_server, config)
    try:
        router.stdin.write(f"{SAMPLE}\n{PARAMS}\n")
        router.stdin.flush()
        wait_for(lambda: len(runs_tagged(client, f"source:{source_name}")) == 2, what="2 runs")
        router.send_signal(signum)
        output, _ = router.communicate(timeout=60)
    finally:
        router.kill()
    assert router.returncode == 0, output
    assert f"Stopping: received {signal.Signals(signum).name}" in output
    state = client.read_flow_run(router_run_id(output)).state
    assert state.type == StateType.CANCELLED
    assert "'triggered': 2" in state.message


def test_cancelling_the_run_stops_a_local_router(prefect_server, client, source_name, tmp_path):
    config = write_config(tmp_path / "router.json", source_name)
    router = start_router(prefect_server, config)
    output = ""
    try:
        router.stdin.write(f"{SAMPLE}\n")
        router.stdin.flush()
        wait_for(lambda: runs_tagged(client, f"source:{source_name}"), what="the first run")
        router_id = wait_for(
            lambda: [
                run.id
                for run in client.read_flow_runs()
                if run.state.type == StateType.RUNNING
                and run.parameters.get("config", {}).get("threads", [{}])[0].get("name")
                == source_name
            ],
            what="the router's run",
        )[0]
        client.set_flow_run_state(router_id, Cancelling())
        router.wait(timeout=60)  # standard input stays open: only the cancellation can end it
        output = router.stdout.read()
    finally:
        router.kill()
    assert router.returncode == 0, output
    assert "Stopping: its flow run was cancelled" in output
    assert client.read_flow_run(router_id).state.type == StateType.CANCELLED
    assert len(runs_tagged(client, f"source:{source_name}")) == 1
