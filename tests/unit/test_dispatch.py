import asyncio

import httpx
import pytest
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

from router.dispatch import classify
from router.errors import PermanentDispatchError, TransientDispatchError


def http_error(status: int, detail: str = "boom") -> PrefectHTTPStatusError:
    request = httpx.Request("POST", "http://prefect/api/deployments/x/create_flow_run")
    response = httpx.Response(status, json={"detail": detail}, request=request)
    return PrefectHTTPStatusError(f"HTTP {status}", request=request, response=response)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 429])
def test_server_trouble_and_throttling_are_transient(status):
    error = classify(http_error(status), "F/d")
    assert isinstance(error, TransientDispatchError)
    assert f"HTTP {status}" in str(error)


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_are_held_not_dead_lettered(status):
    error = classify(http_error(status), "F/d")
    assert isinstance(error, TransientDispatchError)
    assert "PREFECT_API_KEY" in str(error)


def test_rejected_parameters_are_permanent_with_the_servers_reason():
    error = classify(http_error(409, "Validation failed: 'name' is a required property"), "F/d")
    assert isinstance(error, PermanentDispatchError)
    assert str(error) == (
        "deployment 'F/d' rejected the parameters: Validation failed: 'name' is a required property"
    )


@pytest.mark.parametrize("status", [400, 422])
def test_other_client_errors_are_permanent(status):
    assert isinstance(classify(http_error(status), "F/d"), PermanentDispatchError)


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("closed"),
        ConnectionRefusedError(111, "refused"),
        asyncio.TimeoutError(),
        RuntimeError("something unexpected"),
    ],
)
def test_network_failures_and_unknown_errors_are_transient(exc):
    assert isinstance(classify(exc, "F/d"), TransientDispatchError)


def test_wrapped_not_found_keeps_its_status():
    wrapped = ObjectNotFound(http_exc=http_error(404))
    assert isinstance(classify(wrapped, "F/d"), PermanentDispatchError)
