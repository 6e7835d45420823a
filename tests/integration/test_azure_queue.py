"""The Azure Storage Queue source against a real Azurite and a real Prefect server."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import StateType

from devtools.prefect_server import PrefectServer, stop_process
from router.routing import idempotency_key
from tests.integration.conftest import (
    azure_config,
    cancel_and_wait,
    runs_tagged,
    start_router,
    stop_router,
    wait_for,
)


def params(name: str, **extra) -> str:
    return json.dumps({"message_type": "ParamsMsg", "payload": {"name": name}, **extra})


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def names(runs) -> list[str]:
    return sorted(run.parameters.get("name", "-") for run in runs)


def router_env(queue, **extra: str) -> dict[str, str]:
    return {"TEST_AZURE_CONNECTION_STRING": queue.connection_string, **extra}


def test_plain_base64_and_broken_messages(prefect_server, client, source_name, queue, tmp_path):
    broken = ["{not json", b64("[1, 2, 3]"), params("x", payload=None) + "}", "%%%"]
    queue.send(params("plain"), b64(params("encoded")), *broken, b64('{"message_type": "Nope"}'))
    config = azure_config(tmp_path / "azure.json", source_name, queue)
    router = start_router(prefect_server, config, **router_env(queue))
    try:
        wait_for(lambda: queue.count() == 0, what="the queue to be emptied")
        wait_for(lambda: len(queue.poisoned()) == 5, what="5 messages in the poison queue")
    finally:
        output = stop_router(router)
    runs = runs_tagged(client, f"source:{source_name}")
    assert names(runs) == ["encoded", "plain"]
    # dead-lettered with their original content, each with its reason in the log
    assert sorted(queue.poisoned()) == sorted([*broken, b64('{"message_type": "Nope"}')])
    assert output.count("Rejected") == 5
    assert "not JSON" in output and "no route for message_type 'Nope'" in output
    assert "Traceback" not in output


def test_parameters_rejected_by_the_deployment_are_poisoned(
    prefect_server, client, source_name, queue, tmp_path
):
    bad = json.dumps({"message_type": "ParamsMsg", "payload": {"nom": "no name"}})
    queue.send(bad, params("ok"))
    router = start_router(
        prefect_server, azure_config(tmp_path / "a.json", source_name, queue), **router_env(queue)
    )
    try:
        wait_for(lambda: queue.poisoned() == [bad], what="the rejected message in poison")
        wait_for(lambda: queue.count() == 0, what="the queue to be emptied")
    finally:
        output = stop_router(router)
    assert names(runs_tagged(client, f"source:{source_name}")) == ["ok"]
    assert "rejected the parameters" in output


def test_message_over_max_dequeue_count_goes_to_poison(
    prefect_server, client, source_name, queue, tmp_path
):
    (message_id,) = queue.send(params("unlucky"))
    for _ in range(2):  # two failed deliveries: received, never deleted
        assert [m.id for m in queue.client.receive_messages(visibility_timeout=1)] == [message_id]
        time.sleep(1.5)
    config = azure_config(tmp_path / "a.json", source_name, queue, max_dequeue_count=2)
    router = start_router(prefect_server, config, **router_env(queue))
    try:
        wait_for(lambda: queue.poisoned() == [params("unlucky")], what="the poisoned message")
        wait_for(lambda: queue.count() == 0, what="the queue to be emptied")
    finally:
        output = stop_router(router)
    assert "delivered 3 times, more than max_dequeue_count 2" in output
    assert runs_tagged(client, f"source:{source_name}") == []


def test_redelivered_message_returns_its_existing_run(
    prefect_server, client, source_name, queue, tmp_path
):
    # A router created this message's run, then died before deleting it: the message comes
    # back with the same id. Simulate the first half with the key the router would use.
    (message_id,) = queue.send(params("once"))
    deployment = client.read_deployment_by_name("Test Flow with params/integration-test")
    first = client.create_flow_run_from_deployment(
        deployment.id,
        parameters={"name": "once"},
        idempotency_key=idempotency_key(
            source_name, message_id, "Test Flow with params/integration-test"
        ),
    )
    router = start_router(
        prefect_server, azure_config(tmp_path / "a.json", source_name, queue), **router_env(queue)
    )
    try:
        wait_for(lambda: queue.count() == 0, what="the redelivered message to be deleted")
    finally:
        output = stop_router(router)
    assert f"Triggered flow run '{first.name}' ({first.id})" in output
    assert runs_tagged(client, f"source:{source_name}") == []  # no new run was made
    assert client.read_flow_run(first.id).parameters == {"name": "once"}


def test_two_routers_share_a_queue_and_make_one_run_per_message(
    prefect_server, client, source_name, queue, tmp_path
):
    expected = [f"m{i:02d}" for i in range(40)]
    queue.send(*(params(name) for name in expected))
    config = azure_config(tmp_path / "a.json", source_name, queue, batch_size=4)
    routers = [start_router(prefect_server, config, **router_env(queue)) for _ in range(2)]
    try:
        wait_for(
            lambda: len(runs_tagged(client, f"source:{source_name}")) >= 40 and queue.count() == 0,
            timeout=120,
            what="40 runs",
        )
        time.sleep(2)  # room for any duplicate to show up
    finally:
        outputs = [stop_router(router) for router in routers]
    assert names(runs_tagged(client, f"source:{source_name}")) == expected
    assert all("Triggered flow run" in output for output in outputs), "both routers took work"
    assert queue.poisoned() == []


def test_unreachable_queue_is_retried_and_other_sources_go_on(
    prefect_server, client, source_name, queue, tmp_path
):
    config = tmp_path / "two.json"
    config.write_text(
        json.dumps(
            {
                "threads": [
                    {
                        "publisher_type": "AzureStorageQueue",
                        "name": f"{source_name}-azure",
                        "account_url": "http://127.0.0.1:9/devstoreaccount1",  # nothing listens
                        "queue_name": "nowhere",
                        "connection_string_env": "TEST_AZURE_CONNECTION_STRING",
                        "message_flow_actions": {"SampleMsg": "Test Flow/integration-test"},
                    },
                    {
                        "publisher_type": "StdInput",
                        "name": source_name,
                        "message_flow_actions": {"SampleMsg": "Test Flow/integration-test"},
                    },
                ]
            }
        )
    )
    unreachable = queue.connection_string.replace(
        queue.client.url.split("/devstoreaccount1")[0], "http://127.0.0.1:9"
    )
    router = start_router(prefect_server, config, TEST_AZURE_CONNECTION_STRING=unreachable)
    try:
        router.stdin.write('{"message_type": "SampleMsg"}\n')
        router.stdin.flush()
        wait_for(lambda: runs_tagged(client, f"source:{source_name}"), what="the stdin run")
        time.sleep(15)  # the SDK's own retry first (a few seconds), then the source's
        assert router.poll() is None
    finally:
        output = stop_router(router)
    assert "Cannot receive from queue 'nowhere'" in output
    assert "retrying in" in output


def test_prefect_outage_holds_messages_without_poisoning_them(tmp_path, source_name, azurite):
    from tests.integration.conftest import TestQueue

    queue = TestQueue(azurite, "outage" + source_name.split("-")[1])
    server = PrefectServer(home=tmp_path / "home").start()
    router = None
    try:
        server.deploy_examples()
        # A short visibility timeout and max_dequeue_count 2: were the held messages left to
        # reappear, they would be redelivered and poisoned within the outage.
        config = azure_config(
            tmp_path / "a.json",
            source_name,
            queue,
            router={"retry_max_seconds": 2.0},
            visibility_timeout_seconds=3,
            max_dequeue_count=2,
        )
        router = start_router(server, config, PREFECT_CLIENT_MAX_RETRIES="0", **router_env(queue))
        queue.send(params("before"))
        with SyncPrefectClient(server.url) as client:
            wait_for(lambda: runs_tagged(client, f"source:{source_name}"), what="the first run")
        server.stop()
        queue.send(*(params(f"during-{i}") for i in range(5)))
        time.sleep(15)  # five visibility timeouts
        assert router.poll() is None
        server.start()
        with SyncPrefectClient(server.url) as client:
            wait_for(
                lambda: (
                    len(runs_tagged(client, f"source:{source_name}")) >= 6 and queue.count() == 0
                ),
                timeout=90,
                what="the held messages to be triggered",
            )
            time.sleep(2)
            runs = runs_tagged(client, f"source:{source_name}")
            output = stop_router(router)
            router_state = [
                r.state.type for r in client.read_flow_runs() if r.name and r.name != "event-router"
            ]
        assert names(runs) == ["before", *(f"during-{i}" for i in range(5))]
        assert queue.poisoned() == []
        assert "retrying in" in output
        assert StateType.CANCELLED in router_state
    finally:
        if router is not None and router.poll() is None:
            router.kill()
        server.close()


def test_router_deployment_on_a_worker_reads_the_queue(
    prefect_server, client, source_name, queue, tmp_path
):
    config = json.loads(azure_config(tmp_path / "a.json", source_name, queue).read_text())
    # A work queue of its own: the pool's default queue holds the example runs of other tests.
    worker = prefect_server.start_worker(
        prefect_server.home / f"{source_name}-worker.log", source_name, **router_env(queue)
    )
    try:
        deployment = client.read_deployment_by_name("event-router/event-router")
        router_run = client.create_flow_run_from_deployment(
            deployment.id, parameters={"config": config}, work_queue_name=source_name
        )
        queue.send(params("via-worker", id="w-1"))
        wait_for(
            lambda: runs_tagged(client, f"source:{source_name}") and queue.count() == 0,
            timeout=120,
            what="the deployed router to trigger the queued message",
        )
        final = cancel_and_wait(client, router_run.id)
    finally:
        stop_process(worker)
    assert final.state.type == StateType.CANCELLED
    assert names(runs_tagged(client, f"source:{source_name}")) == ["via-worker"]


def test_connection_string_from_a_prefect_secret_block(
    prefect_server, client, source_name, queue, tmp_path
):
    block = f"azurite-{source_name}"
    subprocess.run(
        [sys.executable, "-c", "import sys; from prefect.blocks.system import Secret; "
         "Secret(value=sys.argv[2]).save(sys.argv[1])", block, queue.connection_string],
        env=prefect_server.client_env(), check=True, capture_output=True,
    )  # fmt: skip
    config = azure_config(
        tmp_path / "a.json",
        source_name,
        queue,
        connection_string_env=None,
        connection_string_secret=block,
    )
    queue.send(params("from-secret"))
    router = start_router(prefect_server, config)  # no connection string in its environment
    try:
        wait_for(lambda: queue.count() == 0, what="the queue to be emptied")
    finally:
        stop_router(router)
    assert names(runs_tagged(client, f"source:{source_name}")) == ["from-secret"]
