"""The console script, and the router deployed with prefect.yaml and run by a process worker."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.client.schemas.objects import StateType

from devtools.prefect_server import PROJECT_ROOT, stop_process
from tests.integration.conftest import cancel_and_wait, wait_for, write_config

CLI = str(Path(sys.executable).parent / "prefect-event-router")


def cli(server, *args: str) -> subprocess.CompletedProcess[str]:
    assert shutil.which(CLI), "the console script is not installed: pip install -e ."
    return subprocess.run(
        [CLI, *args],
        env=server.client_env(),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROJECT_ROOT,
        stdin=subprocess.DEVNULL,
    )


def test_validate_prints_each_route(prefect_server):
    result = cli(prefect_server, "validate", "test.json")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "source 'stdin' (StdInput)",
        "  SampleMsg -> Test Flow/integration-test  [ok]",
        "  ParamsMsg -> Test Flow with params/integration-test  [ok]",
    ]


def test_validate_fails_on_a_missing_deployment(prefect_server, tmp_path):
    config = write_config(tmp_path / "r.json", "s", {"SampleMsg": "Test Flow/integration"})
    result = cli(prefect_server, "validate", str(config))
    assert result.returncode == 1
    assert "SampleMsg -> Test Flow/integration  [NOT FOUND]" in result.stdout
    assert "deployment 'Test Flow/integration' not found: run `prefect deploy` first" in (
        result.stderr
    )


def test_validate_and_run_report_config_errors_with_exit_2(prefect_server, tmp_path):
    config = tmp_path / "r.yaml"
    config.write_text("threads: []\n")
    for command in ("validate", "run"):
        result = cli(prefect_server, command, str(config))
        assert result.returncode == 2
        assert (
            result.stderr == "error: threads: List should have at least 1 item after "
            "validation, not 0\n"
        )


def test_run_subcommand_routes_stdin(prefect_server, client):
    result = subprocess.run(
        [CLI, "run", "test.json"],
        input='{"message_type": "SampleMsg", "id": "cli-run-1"}\n',
        env=prefect_server.client_env(),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PROJECT_ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "Triggered flow run" in result.stderr


def test_router_deployment_runs_on_a_worker_and_stops_when_cancelled(prefect_server, client):
    # The worker loads the entrypoint flows/router.py:event_router: the module-name trap.
    # A work queue of its own: the pool's default queue holds the example runs of other tests.
    worker = prefect_server.start_worker(prefect_server.home / "router-worker.log", "router-tests")
    try:
        deployment = client.read_deployment_by_name("event-router/event-router")
        run = client.create_flow_run_from_deployment(deployment.id, work_queue_name="router-tests")
        wait_for(
            lambda: any(
                "Listening to source 'stdin'" in log.message for log in run_logs(client, run.id)
            ),
            timeout=120,
            what="the deployed router to listen",
        )
        assert client.read_flow_run(run.id).state.type == StateType.RUNNING
        final = cancel_and_wait(client, run.id)
    finally:
        stop_process(worker)
    worker_log = (prefect_server.home / "router-worker.log").read_text()
    assert final.state.type == StateType.CANCELLED, worker_log[-3000:]
    messages = "\n".join(log.message for log in run_logs(client, run.id))
    assert "Stopping:" in messages, worker_log[-3000:]
    assert "Router finished" in messages


def run_logs(client, flow_run_id):
    return client.read_logs(
        log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
    )


def test_no_api_configured_is_a_clear_error(prefect_server, tmp_path):
    env = prefect_server.client_env()
    del env["PREFECT_API_URL"]
    env["PREFECT_HOME"] = str(tmp_path)  # no profile pointing anywhere either
    result = subprocess.run(
        [sys.executable, "flows/router.py", "test.json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROJECT_ROOT,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    assert "set PREFECT_API_URL (or the original PREFECT_API_URI)" in result.stderr
