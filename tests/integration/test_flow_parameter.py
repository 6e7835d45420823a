"""The config is the router flow's parameter: the server validates it against the model."""

from __future__ import annotations

import json

import pytest
from prefect.exceptions import PrefectHTTPStatusError

from devtools.prefect_server import PROJECT_ROOT


def create_router_run(client, config):
    deployment = client.read_deployment_by_name("event-router/event-router")
    run = client.create_flow_run_from_deployment(deployment.id, parameters={"config": config})
    client.delete_flow_run(run.id)  # never leave a router run for a later test's worker
    return run


def test_deployment_accepts_the_config_object_and_a_path(client):
    original = json.loads((PROJECT_ROOT / "test.json").read_text())
    assert create_router_run(client, original).parameters == {"config": original}
    routed = {
        "threads": [
            {
                "publisher_type": "StdInput",
                "message_flow_actions": {
                    "ParamsMsg": {
                        "deployment": "Test Flow with params/integration-test",
                        "tags": ["x"],
                    }
                },
            }
        ],
        "max_concurrency": 4,
    }
    assert create_router_run(client, routed).parameters["config"] == routed
    assert create_router_run(client, "examples/other.yaml").parameters == {
        "config": "examples/other.yaml"
    }


def test_server_rejects_an_invalid_config_object(client):
    bad = {"threads": [{"publisher_type": "StdInput"}]}
    with pytest.raises(PrefectHTTPStatusError) as info:
        create_router_run(client, bad)
    assert info.value.response.status_code == 409
