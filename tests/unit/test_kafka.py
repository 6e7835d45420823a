import pytest

from router.config import parse_config
from router.errors import ConfigError
from router.sources.kafka import PartitionProgress

ROUTES = {"SampleMsg": "Test Flow/integration-test"}


def kafka(**fields) -> dict:
    source = {"publisher_type": "Kafka", "bootstrap_servers": "b:9092", "group_id": "g"}
    return {"threads": [{**source, "message_flow_actions": ROUTES, **fields}]}


def test_commit_point_moves_only_past_settled_offsets():
    progress = PartitionProgress()
    for offset in (10, 11, 12, 13):
        progress.received(offset)
    assert progress.next_offset == 10  # nothing settled: commit nothing past 10
    progress.settled(12)
    progress.settled(11)
    assert progress.next_offset == 10  # 10 is still in flight: the partition holds
    progress.settled(10)
    assert progress.next_offset == 13
    assert not progress.idle
    progress.settled(13)
    assert progress.next_offset == 14 and progress.idle
    progress.settled(99)  # an offset it never saw (revoked and re-read) changes nothing
    assert progress.next_offset == 14


def test_released_offset_keeps_holding_the_partition():
    progress = PartitionProgress()
    for offset in (0, 1, 2):
        progress.received(offset)
    progress.settled(0)
    progress.settled(2)  # 1 was released (not settled) at shutdown
    assert progress.next_offset == 1


def test_kafka_config_defaults_and_name():
    (source,) = parse_config(kafka(topics=["orders"])).threads
    assert source.source_name == "kafka:g"
    assert (source.start_offset, source.security_protocol) == ("earliest", "PLAINTEXT")
    assert parse_config(kafka(topic_pattern="orders\\..*")).threads[0].topic_pattern


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({}, "set either topics or topic_pattern"),
        ({"topics": ["a"], "topic_pattern": "b.*"}, "set either topics or topic_pattern"),
        ({"topics": ["a"], "security_protocol": "SASL_SSL"}, "needs sasl_mechanism"),
        (
            {"topics": ["a"], "sasl_password_env": "P", "sasl_password_secret": "s"},
            "not both",
        ),
        ({"topics": ["a"], "heartbeat_interval_ms": 20000}, "below session_timeout_ms"),
        ({"topics": ["a"], "sasl_password": "inline"}, "unknown field"),
    ],
)
def test_invalid_kafka_configs_name_the_problem(fields, problem):
    with pytest.raises(ConfigError) as info:
        parse_config(kafka(**fields))
    assert problem in "\n".join(info.value.problems)


def test_repeated_client_log_lines_are_let_through_once_per_interval():
    import logging

    from router.sources.kafka import RepeatFilter

    flood = RepeatFilter(interval=60)

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("aiokafka", logging.ERROR, __file__, 1, message, None, None)

    assert flood.filter(record("Unable connect to node with id 111"))
    assert not flood.filter(record("Unable connect to node with id 111"))
    assert flood.filter(record("Unable to update metadata from [111]"))
    assert RepeatFilter(interval=0).filter(record("x"))
