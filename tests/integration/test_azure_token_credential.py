"""DefaultAzureCredential against Azurite over HTTPS with `--oauth basic`, fully offline.

A fake App Service managed-identity endpoint hands out unsigned JWTs that Azurite's basic OAuth
check accepts (it checks issuer, audience and lifetime, not the signature).
"""

from __future__ import annotations

import json
import signal
import socket
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError
from azure.storage.queue import QueueClient as SyncQueueClient

from devtools.azure_identity import (
    INTERFERING_ENV_VARS,
    STORAGE_AUDIENCE,
    CertificatePair,
    FakeManagedIdentityEndpoint,
    credential_env,
    make_self_signed_cert,
    storage_token_claims,
    subprocess_env,
    unsigned_jwt,
)
from devtools.azurite import Azurite
from devtools.prefect_server import PROJECT_ROOT
from tests.integration.conftest import ROUTER_SCRIPT, runs_tagged, wait_for


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> CertificatePair:
    """A self-signed certificate for 127.0.0.1 / localhost."""
    return make_self_signed_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def azurite_oauth(tls: CertificatePair) -> Iterator[Azurite]:
    """Azurite's queue service over HTTPS, accepting bearer tokens (`--oauth basic`)."""
    azurite = Azurite(cert=tls.cert, key=tls.key, oauth=True).start()
    try:
        yield azurite
    finally:
        azurite.close()


@pytest.fixture
def identity_endpoint() -> Iterator[FakeManagedIdentityEndpoint]:
    """A fake managed-identity token endpoint of this test's own."""
    with FakeManagedIdentityEndpoint() as endpoint:
        yield endpoint


@pytest.fixture
def credential_environment(
    monkeypatch: pytest.MonkeyPatch, identity_endpoint: FakeManagedIdentityEndpoint, tls
) -> dict[str, str]:
    """This process's environment pointed at the fake endpoint, other credentials cleared."""
    for name in INTERFERING_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    env = credential_env(identity_endpoint, tls.cert)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def queue_name() -> str:
    """A fresh, valid queue name."""
    return f"tok-{uuid.uuid4().hex[:12]}"


def shared_key_queue(azurite: Azurite, name: str, tls: CertificatePair) -> SyncQueueClient:
    """A synchronous client on `name` signed with the account key (the test's own side door)."""
    return SyncQueueClient.from_connection_string(
        azurite.connection_string, name, connection_verify=str(tls.cert)
    )


def test_fresh_default_ssl_context_trusts_azurite(credential_environment, azurite_oauth, tls):
    # SSL_CERT_FILE is read whenever a default context is made, so one made now trusts Azurite.
    context = ssl.create_default_context()
    with (
        socket.create_connection(("127.0.0.1", azurite_oauth.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls_socket,
    ):
        assert tls_socket.version() is not None


async def test_sdk_default_credential_round_trip(
    credential_environment, identity_endpoint, azurite_oauth, tls
):
    from azure.identity.aio import DefaultAzureCredential
    from azure.storage.queue.aio import QueueClient

    name = queue_name()
    # aiohttp builds its default SSL context once, when first imported (possibly before this
    # test set SSL_CERT_FILE), so the in-process client names the CA file explicitly; the
    # router test below relies on SSL_CERT_FILE alone, in a fresh process.
    async with (
        DefaultAzureCredential() as credential,
        QueueClient(
            azurite_oauth.account_url,
            name,
            credential=credential,
            connection_verify=str(tls.cert),
        ) as queue,
    ):
        await queue.create_queue()
        await queue.send_message('{"message_type": "SampleMsg", "id": "sdk-1"}')
        received = [message async for message in queue.receive_messages(max_messages=5)]
        assert [json.loads(message.content)["id"] for message in received] == ["sdk-1"]
        await queue.delete_message(received[0])
        assert (await queue.get_queue_properties()).approximate_message_count == 0
        await queue.delete_queue()

    assert identity_endpoint.tokens_issued > 0
    assert {request.resource for request in identity_endpoint.requests} == {STORAGE_AUDIENCE}
    assert all(request.header_ok for request in identity_endpoint.requests)


class StaticTokenCredential:
    """An async credential that always returns one given token."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        """The fixed token."""
        return AccessToken(self._token, 2**31 - 1)

    async def close(self) -> None:
        """Nothing to close."""


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param({"aud": "https://vault.azure.net"}, id="wrong-audience"),
        pytest.param({"iss": "https://evil.example.com/tenant/"}, id="wrong-issuer"),
        pytest.param({"exp": 1_000_000_000}, id="expired"),
    ],
)
async def test_azurite_rejects_bad_tokens(azurite_oauth, tls, claims):
    # Proof that Azurite really checks the bearer token, so the round trip above means something.
    from azure.storage.queue.aio import QueueClient

    name = queue_name()
    token = unsigned_jwt({**storage_token_claims(), **claims})
    async with QueueClient(
        azurite_oauth.account_url,
        name,
        credential=StaticTokenCredential(token),
        connection_verify=str(tls.cert),
    ) as queue:
        with pytest.raises(HttpResponseError) as caught:
            await queue.create_queue()
    assert caught.value.status_code in (401, 403)


def test_router_reads_queue_with_default_credential(
    prefect_server, client, source_name, azurite_oauth, identity_endpoint, tls, tmp_path
):
    name = queue_name()
    side_door = shared_key_queue(azurite_oauth, name, tls)
    side_door.create_queue()
    config = {
        "threads": [
            {
                "publisher_type": "AzureStorageQueue",
                "name": source_name,
                "storage_account": "devstoreaccount1",
                "queue_name": name,
                "account_url": azurite_oauth.account_url,
                "message_flow_actions": {"SampleMsg": "Test Flow/integration-test"},
                "min_poll_interval_seconds": 0.1,
                "max_poll_interval_seconds": 1,
            }
        ],
        "cancel_check_seconds": 0.5,
    }
    config_path = tmp_path / "router.json"
    config_path.write_text(json.dumps(config))
    log_path = tmp_path / "router.log"
    env = subprocess_env(prefect_server.client_env(), identity_endpoint, tls.cert)

    with log_path.open("w") as log:
        router = subprocess.Popen(
            [sys.executable, ROUTER_SCRIPT, str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=PROJECT_ROOT,
        )
    try:
        side_door.send_message(json.dumps({"message_type": "SampleMsg", "id": "tok-1"}))

        def routed() -> bool:
            assert router.poll() is None, f"router exited early:\n{output(log_path)}"
            runs = runs_tagged(client, f"source:{source_name}")
            count = side_door.get_queue_properties().approximate_message_count
            return len(runs) == 1 and count == 0

        wait_for(routed, timeout=120, what="one flow run and an empty queue")
    finally:
        if router.poll() is None:
            router.send_signal(signal.SIGTERM)
        try:
            returncode = router.wait(timeout=60)
        except subprocess.TimeoutExpired:
            router.kill()
            router.wait()
            raise
        side_door.close()

    assert returncode == 0, output(log_path)
    (run,) = runs_tagged(client, f"source:{source_name}")
    assert client.read_flow(run.flow_id).name == "Test Flow"
    assert identity_endpoint.tokens_issued > 0, output(log_path)
    assert {request.resource for request in identity_endpoint.requests} == {STORAGE_AUDIENCE}


def output(log_path: Path) -> str:
    """The router's combined output so far, for failure messages."""
    return log_path.read_text()[-5000:]
