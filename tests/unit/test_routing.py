import pytest

from router.errors import MessageRejected
from router.routing import ParsedMessage, idempotency_key, parse_message, route
from router.sources.base import RouteTarget

ROUTES = {
    "SampleMsg": RouteTarget(deployment="Test Flow/integration-test"),
    "ParamsMsg": RouteTarget(deployment="Test Flow with params/integration-test", tags=["vip"]),
}


def test_parse_original_messages():
    assert parse_message(b'{"message_type": "SampleMsg"}') == ParsedMessage("SampleMsg", {}, None)
    assert parse_message(
        '{"message_type": "ParamsMsg", "payload": {"name": "Gordon Bennett"}, "id": 7}'
    ) == ParsedMessage("ParamsMsg", {"name": "Gordon Bennett"}, "7")
    assert parse_message('{"message_type": "A", "payload": null}').payload == {}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[1, 2]", "not a JSON object but a array"),
        (b'{"payload": {}}', "no message_type"),
        (b'{"message_type": 3}', "message_type must be a non-empty string"),
        (b'{"message_type": "A", "payload": [1]}', "payload must be a JSON object, got a array"),
        (b'{"message_type": "A", "id": {"x": 1}}', "id must be a string, got a object"),
        (b'{"message_type": "A", "id": true}', "id must be a string, got a boolean"),
    ],
)
def test_bad_messages_are_rejected_with_a_reason(body, reason):
    with pytest.raises(MessageRejected) as info:
        parse_message(body)
    assert reason in info.value.reason


def test_message_type_from_outside_the_body_is_a_fallback():
    assert parse_message(b'{"payload": {"a": 1}}', "FromHeader").message_type == "FromHeader"
    assert parse_message(b'{"message_type": "InBody"}', "FromHeader").message_type == "InBody"


def test_route_builds_one_trigger_with_key_tags_and_parameters():
    parsed = parse_message(b'{"message_type": "ParamsMsg", "payload": {"name": "G"}}')
    (request,) = route(parsed, "stdin", "session:3", ROUTES)
    assert request.deployment == "Test Flow with params/integration-test"
    assert request.parameters == {"name": "G"}
    assert request.tags == ("event-router", "source:stdin", "message-type:ParamsMsg", "vip")
    assert request.idempotency_key == idempotency_key(
        "stdin", "session:3", "Test Flow with params/integration-test"
    )


def test_message_id_wins_over_the_source_identity():
    first = route(parse_message(b'{"message_type": "SampleMsg", "id": "a"}'), "q", "1", ROUTES)
    again = route(parse_message(b'{"message_type": "SampleMsg", "id": "a"}'), "q", "2", ROUTES)
    assert first[0].idempotency_key == again[0].idempotency_key
    other_source = route(
        parse_message(b'{"message_type": "SampleMsg", "id": "a"}'), "r", "1", ROUTES
    )
    assert other_source[0].idempotency_key != first[0].idempotency_key


def test_key_differs_per_deployment_and_identity():
    keys = {
        idempotency_key("s", "1", "F/a"),
        idempotency_key("s", "1", "F/b"),
        idempotency_key("s", "2", "F/a"),
        idempotency_key("t", "1", "F/a"),
    }
    assert len(keys) == 4


def test_unknown_type_is_rejected_naming_the_known_routes():
    with pytest.raises(MessageRejected) as info:
        route(parse_message(b'{"message_type": "Nope"}'), "stdin", "1", ROUTES)
    assert info.value.message_type == "Nope"
    assert info.value.reason == "no route for message_type 'Nope' (routes: ParamsMsg, SampleMsg)"
