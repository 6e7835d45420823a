"""Transient failures: the Prefect server goes away mid-stream and comes back."""

from __future__ import annotations

import json
import time

from prefect.client.orchestration import SyncPrefectClient

from devtools.prefect_server import PrefectServer
from tests.integration.conftest import runs_tagged, start_router, wait_for, write_config


def test_messages_wait_out_an_api_outage_and_trigger_once(tmp_path, source_name):
    server = PrefectServer(home=tmp_path / "home").start()
    router = None
    try:
        server.deploy_examples()
        config = write_config(
            tmp_path / "router.json", source_name, retry_max_seconds=2.0, cancel_check_seconds=30
        )
        # Without the Prefect client's own retries, the runtime's backoff is what holds them.
        router = start_router(server, config, PREFECT_CLIENT_MAX_RETRIES="0")
        router.stdin.write('{"message_type": "SampleMsg", "id": "before"}\n')
        router.stdin.flush()
        with SyncPrefectClient(server.url) as client:
            wait_for(lambda: runs_tagged(client, f"source:{source_name}"), what="the first run")

        server.stop()
        for index in range(3):
            message = {"message_type": "ParamsMsg", "payload": {"name": f"n{index}"}, "id": index}
            router.stdin.write(json.dumps(message) + "\n")
        router.stdin.flush()
        time.sleep(8)  # long enough for several failed attempts
        assert router.poll() is None, "the router must ride out the outage"
        server.start()

        with SyncPrefectClient(server.url) as client:
            runs = wait_for(
                lambda: (r := runs_tagged(client, f"source:{source_name}")) and len(r) >= 4 and r,
                timeout=90,
                what="the held messages to be triggered",
            )
            router.stdin.close()
            router.wait(timeout=60)
            runs = runs_tagged(client, f"source:{source_name}")
        output = router.stdout.read()
        assert router.returncode == 0, output
        assert sorted(run.parameters.get("name", "-") for run in runs) == ["-", "n0", "n1", "n2"]
        assert "retrying in" in output
        assert "Rejected" not in output
    finally:
        if router is not None and router.poll() is None:
            router.kill()
        server.close()
