"""`make demo`: the whole loop on a fresh machine.

A throwaway Prefect server, a process work pool and worker, the example deployments, then the
router fed the original README's two messages; waits for both triggered runs to finish.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

from devtools.prefect_server import PROJECT_ROOT, PrefectServer, stop_process

MESSAGES = [
    '{"message_type": "SampleMsg"}',
    '{"message_type": "ParamsMsg", "payload": {"name": "Gordon Bennett"}}',
]


def say(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def main() -> int:
    """Run the demo; 0 when both triggered runs completed."""
    server = PrefectServer(ui=True, services=True)
    worker = None
    try:
        say(f"Starting a Prefect server at {server.ui_url} (SQLite in {server.home})")
        server.start()
        say("Creating the process work pool and deploying prefect.yaml")
        server.deploy_examples()
        say("Starting a process worker")
        worker = server.start_worker()
        say("Running: python flows/router.py test.json  (two messages on standard input)")
        for message in MESSAGES:
            print(f"    {message}")
        router = subprocess.run(
            [sys.executable, "flows/router.py", "test.json"],
            input="".join(f"{m}\n" for m in MESSAGES),
            env=server.client_env(),
            cwd=PROJECT_ROOT,
            text=True,
            timeout=300,
        )
        if router.returncode != 0:
            print(f"The router exited with {router.returncode}", file=sys.stderr)
            return 1
        say("Waiting for the worker to run the triggered flow runs")
        with SyncPrefectClient(server.url) as client:
            runs = wait_for_runs(client, expected=len(MESSAGES), timeout=240)
            say("Triggered flow runs")
            for run in runs:
                flow_name = client.read_flow(run.flow_id).name
                print(f"    {flow_name:<24} {run.name:<24} {run.state.name:<10} {run.parameters}")
        print(f"\nPrefect UI (while the server runs): {server.ui_url}")
        if os.environ.get("DEMO_KEEP_SERVER"):
            say("DEMO_KEEP_SERVER is set: the server and worker stay up; Ctrl-C to stop them")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        ok = len(runs) == len(MESSAGES) and all(run.state.is_completed() for run in runs)
        say("Demo succeeded: both runs Completed" if ok else "Demo FAILED: a run did not complete")
        return 0 if ok else 1
    finally:
        if worker is not None:
            stop_process(worker)
        server.close()


def wait_for_runs(client: SyncPrefectClient, expected: int, timeout: float) -> list:
    """The router's triggered runs once all of them are final (or when time is up)."""
    deadline = time.monotonic() + timeout
    runs: list = []
    while time.monotonic() < deadline:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=["event-router"]))
        )
        if len(runs) >= expected and all(run.state.is_final() for run in runs):
            break
        time.sleep(1)
    return runs


if __name__ == "__main__":
    sys.exit(main())
