import base64

import pytest

from router.config import parse_config
from router.errors import ConfigError
from router.sources.azure_queue import decode_content

ROUTES = {"SampleMsg": "Test Flow/integration-test"}


def azure(**fields) -> dict:
    return {
        "threads": [
            {"publisher_type": "AzureStorageQueue", "message_flow_actions": ROUTES, **fields}
        ]
    }


def test_original_fields_sign_in_to_the_public_endpoint():
    (source,) = parse_config(azure(storage_account="acme", queue_name="orders")).threads
    assert source.queue_url == "https://acme.queue.core.windows.net"
    assert source.poison_queue == "orders-poison"
    assert source.source_name == "azure:acme/orders"
    assert (source.batch_size, source.max_dequeue_count, source.message_encoding) == (16, 5, "auto")


def test_account_url_overrides_the_account():
    config = azure(storage_account="devstoreaccount1", queue_name="orders",
                   account_url="http://127.0.0.1:10001/devstoreaccount1/")  # fmt: skip
    assert parse_config(config).threads[0].queue_url == "http://127.0.0.1:10001/devstoreaccount1"


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"queue_name": "orders"}, "set storage_account (or account_url), connection_string_env"),
        (
            {"queue_name": "orders", "connection_string_env": "A", "connection_string_secret": "b"},
            "not both",
        ),
        ({"storage_account": "acme"}, "threads[0].queue_name: field required"),
        ({"storage_account": "acme", "queue_name": "q", "batch_size": 33}, "batch_size"),
        ({"storage_account": "acme", "queue_name": "q", "message_encoding": "hex"}, "encoding"),
        ({"storage_account": "acme", "queue_name": "q", "connection_string": "x"}, "unknown field"),
    ],
)
def test_invalid_azure_configs_name_the_problem(fields, problem):
    with pytest.raises(ConfigError) as info:
        parse_config(azure(**fields))
    assert problem in "\n".join(info.value.problems)


def test_decode_plain_json_and_base64():
    body = b'{"message_type": "SampleMsg"}'
    encoded = base64.b64encode(body).decode()
    assert decode_content(body.decode(), "auto") == body
    assert decode_content(encoded, "auto") == body
    assert decode_content(encoded, "base64") == body
    assert decode_content(body.decode(), "text") == body
    assert decode_content(encoded, "text") == encoded.encode()


def test_decode_failures():
    with pytest.raises(ValueError, match="not valid base64"):
        decode_content("%%% not base64", "base64")
    # auto: neither JSON-looking nor base64: handed over as text, for routing to reject
    assert decode_content("%%%", "auto") == b"%%%"
