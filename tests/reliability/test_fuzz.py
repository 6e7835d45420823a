"""Property-based fuzzing (hypothesis) of config loading and of message handling.

Config: any text, file bytes or parsed data gives a RouterConfig or a ConfigError whose
problems are one line each and start with a field path (or the origin) and ": "; never
another exception.

Messages: any body submitted to a real Runtime (with the in-memory FakeDispatcher, transient
and permanent dispatch failures injected) is settled exactly once: acked only when it is a
routable message, rejected otherwise, never released while the router is not stopping; no
exception escapes and the stats add up.

The `test_regression_*` tests pin inputs the fuzzing found, one reproducer per test id.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from router.config import (
    PUBLISHER_TYPES,
    SOURCE_CONFIGS,
    RouterConfig,
    load_config,
    parse_config,
    parse_config_text,
)
from router.errors import ConfigError
from router.routing import idempotency_key
from router.runtime import Runtime
from router.sources.base import RouteTarget
from tests.unit.fakes import (
    FakeDispatcher,
    PermanentDispatchError,
    Settlements,
    TransientDispatchError,
)


def fuzz(examples: int, *, shrink: bool = True) -> settings:
    """Settings for a property: no example database (it would write a .hypothesis/ folder
    into the repository), no deadline, one bug shrunk per test."""
    phases = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target]
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        report_multiple_bugs=False,
        # Shrinking inputs thousands of characters long (parser limits) takes minutes; the
        # explain phase traces every line, which makes a parser at its recursion limit slow.
        phases=[*phases, Phase.shrink] if shrink else phases,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# --------------------------------------------------------------------------------------------
# Config: shared knowledge
# --------------------------------------------------------------------------------------------

ORIGIN = "config"
SUFFIXES = (".json", ".yaml", ".yml")
MODEL_BY_TYPE = dict(zip(PUBLISHER_TYPES, SOURCE_CONFIGS, strict=True))
FIELD_NAMES = sorted(
    {*RouterConfig.model_fields, *RouteTarget.model_fields}.union(
        *(model.model_fields for model in SOURCE_CONFIGS)
    )
)

VALID_CONFIGS: list[dict[str, Any]] = [
    {
        "threads": [
            {
                "publisher_type": "StdInput",
                "message_flow_actions": {
                    "SampleMsg": "Test Flow/integration-test",
                    "ParamsMsg": "Test Flow with params/integration-test",
                },
            }
        ]
    },
    {
        "threads": [
            {
                "publisher_type": "AzureStorageQueue",
                "storage_account": "acct",
                "queue_name": "orders",
                "batch_size": 8,
                "message_flow_actions": {
                    "Order": {
                        "deployment": "Orders/prod",
                        "tags": ["orders"],
                        "job_variables": {"image": "x:1", "env": {"A": "1"}},
                    }
                },
            }
        ],
        "max_concurrency": 4,
        "missing_deployments": "warn",
    },
    {
        "threads": [
            {
                "publisher_type": "ZeroMQ",
                "socket_type": "PULL",
                "bind": ["tcp://*:5556"],
                "message_flow_actions": {"Tick": "Ticks/default"},
            },
            {
                "publisher_type": "ZeroMQ",
                "name": "legacy",
                "tcp_uri": "tcp://publisher:5557",
                "topic": "prices",
                "message_flow_actions": {"Price": "Prices/default"},
            },
        ],
        "shutdown_grace_seconds": 1.5,
        "retry_initial_seconds": 0.1,
        "retry_max_seconds": 2,
    },
    {
        "threads": [
            {
                "publisher_type": "Kafka",
                "bootstrap_servers": ["broker-1:9092", "broker-2:9092"],
                "topics": ["orders"],
                "group_id": "router",
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "PLAIN",
                "sasl_username": "user",
                "sasl_password_env": "KAFKA_PASSWORD",
                "message_flow_actions": {"Order": "Orders/prod"},
            },
            {"publisher_type": "StdInput", "message_flow_actions": {"Order": "Orders/dev"}},
        ],
        "cancel_check_seconds": 5,
    },
]

# Pieces of JSON, JSON-with-comments and YAML syntax, field names and values the models know.
SYNTAX_FRAGMENTS = [
    "{", "}", "[", "]", ":", ": ", ",", '"', "'", "\\", "\\u", "\n", "\r\n", "\t", " ", "  ",
    "- ", "? ", "!!", "!!int ", "!!float ", "!!bool ", "!!timestamp ", "!!binary ", "!!str ",
    "!!python/tuple ", "!!set ", "!!omap ", "&a ", "*a", "<<: ", "<<: *a", "|", ">", "#", "---",
    "...", "%YAML 1.1\n", "null", "true", "~", "1e999", "-0", "NaN", ".nan", ".inf", "0x1F",
    "0o17", "0b101", "1_000", "2001-12-14", "2001-13-45", "2001-12-14t21:59:43.10-05:00",
    "12:30:45", "\ufeff", "\x00", '"\\ud800"', "//", "/*", "*/", "// c\n", "/* c */",
]  # fmt: skip
VALUE_FRAGMENTS = [
    *PUBLISHER_TYPES, "SampleMsg", "Test Flow/integration-test", "tcp://host:5556", "inproc://x",
    "broker:9092", "orders", "PULL", "SUB", "SASL_SSL", "PLAIN", "fail", "warn", "earliest",
    "0", "1", "-1", "1001", "0.001", "1e-9",
]  # fmt: skip
FRAGMENTS = [
    *SYNTAX_FRAGMENTS,
    *VALUE_FRAGMENTS,
    *(f'"{name}"' for name in FIELD_NAMES),
    *FIELD_NAMES,
]
COMMENTS = ["// note\n", "/* note */", "/* unclosed", "# note\n", "//", "/**/", '"//"', "*/"]

# The message a ConfigError from parsing the text has.
TEXT_PROBLEM = re.compile(
    r"^config: not (valid (JSON at line \d+ column \d+|YAML)|acceptable (JSON|YAML)): \S"
)
# A problem line when every key in the data is a plain word: a path of field names, indexes
# and `[key]` (a dict key of the wrong type), or "config".
PLAIN_PROBLEM = re.compile(r"^(config|[\w-]+(\[\d+\]|\.[\w-]+|\.\[key\])*): \S")


def problems_of(call: Any, *args: Any) -> list[str] | None:
    """None if `call` succeeds, the problems if it raises ConfigError; anything else fails."""
    try:
        call(*args)
    except ConfigError as exc:
        assert exc.problems, "ConfigError without a problem"
        assert str(exc) == "\n".join(exc.problems)
        return exc.problems
    except Exception as exc:
        pytest.fail(
            f"BUG: {call.__name__}{_short(args)} raised {type(exc).__name__}: "
            f"{str(exc)[:300]} (expected a RouterConfig or a ConfigError)"
        )
    return None


def load_text(text: str, suffix: str) -> RouterConfig:
    return parse_config(parse_config_text(text, suffix, ORIGIN))


def _short(args: tuple[Any, ...]) -> str:
    shown = repr(args)
    return shown if len(shown) <= 300 else shown[:300] + f"... ({len(shown)} chars)"


def _path(parts: tuple[Any, ...]) -> str:
    """The documented path format: `threads[1].queue_name`, `...message_flow_actions.Order`."""
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _node_paths(data: Any, prefix: tuple[Any, ...] = (), seen: frozenset[int] = frozenset()):
    """Every location in `data` (YAML anchors may make it cyclic; errors are never deep)."""
    yield prefix
    if len(prefix) > 10 or id(data) in seen:
        return
    if isinstance(data, dict):
        for key, value in data.items():
            yield (*prefix, key, "[key]")
            yield from _node_paths(value, (*prefix, key), seen | {id(data)})
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _node_paths(value, (*prefix, index), seen | {id(data)})


def _keys(data: Any, seen: frozenset[int] = frozenset()) -> list[Any]:
    """Every dict key in `data` (which YAML anchors may make cyclic)."""
    if id(data) in seen or len(seen) > 10:
        return []
    seen = seen | {id(data)}
    if isinstance(data, dict):
        return [*data, *(k for v in data.values() for k in _keys(v, seen))]
    if isinstance(data, list):
        return [k for v in data for k in _keys(v, seen)]
    return []


def _escaped(text: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def check_problems_for_data(data: Any, problems: list[str]) -> None:
    """Each problem starts with 'config' or with the path of a location in `data` (or of a
    field the models expect there), then ': ' and a message. Keys with control characters
    may be shown as is or escaped."""
    nodes = set()
    for parts in _node_paths(data):
        if parts:
            nodes.update({_path(parts), _escaped(_path(parts))})
    keys = _keys(data)
    plain = all(isinstance(key, str) and re.fullmatch(r"[\w-]+", key) for key in keys)
    for line in problems:
        assert line.strip(), f"empty problem line in {problems!r}"
        assert (
            (line.startswith("config: ") and line[8:].strip())
            or _message_follows(line, top=True)
            or any(
                _message_follows(line[len(node) :], top=False)
                for node in nodes
                if line.startswith(node)
            )
        ), f"problem does not start with a field path of the input and a message: {line!r}"
        if plain:
            assert PLAIN_PROBLEM.match(line), f"problem path is not a field path: {line!r}"


def _message_follows(rest: str, top: bool) -> bool:
    """`rest`, what follows a location's path in a line, is ': message' or, naming a field
    the models expect there, '.field: message' ('field: message' at the top level)."""
    if rest.startswith(": ") and not top:
        return bool(rest[2:].strip())
    if not top:
        if not rest.startswith("."):
            return False
        rest = rest[1:]
    field, sep, message = rest.partition(": ")
    return bool(sep and message.strip()) and field in FIELD_NAMES


def check_config_text(text: str, suffix: str) -> None:
    try:
        data = parse_config_text(text, suffix, ORIGIN)
    except ConfigError as exc:
        assert len(exc.problems) == 1, exc.problems
        assert TEXT_PROBLEM.match(exc.problems[0]), exc.problems
        return
    except Exception as exc:
        pytest.fail(
            f"BUG: parse_config_text({text[:200]!r}{'...' if len(text) > 200 else ''}, "
            f"{suffix!r}) raised {type(exc).__name__}: {str(exc)[:300]} "
            "(expected parsed data or a ConfigError)"
        )
    problems = problems_of(parse_config, data)
    if problems is not None:
        check_problems_for_data(data, problems)


# --------------------------------------------------------------------------------------------
# Config: strategies
# --------------------------------------------------------------------------------------------

fragment_text = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=3)), max_size=40
).map("".join)

# Sizes the parsers are known to choke on: nesting past the recursion limit, integers past
# Python's 4300-digit conversion limit.
pathological_text = st.one_of(
    st.integers(150, 1200).map(lambda n: "[" * n + "]" * n),
    st.integers(150, 1200).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.integers(150, 1200).map(lambda n: "- " * n + "x"),
    st.integers(4000, 6000).map(lambda n: '{"threads": ' + "9" * n + "}"),
)


def _dump(config: dict[str, Any], style: str) -> str:
    if style == "yaml":
        return yaml.safe_dump(config, sort_keys=False)
    if style == "json-commented":
        return "// router config\n" + json.dumps(config, indent=2).replace("[\n", "[ /* list */\n")
    return json.dumps(config, indent=2 if style == "json-indented" else None)


@st.composite
def corrupted_config_text(draw: st.DrawFn) -> str:
    """A valid config, serialised, with a few characters deleted, inserted or commented."""
    config = draw(st.sampled_from(VALID_CONFIGS))
    text = _dump(config, draw(st.sampled_from(["yaml", "json", "json-indented", "json-commented"])))
    for _ in range(draw(st.integers(0, 4))):
        position = draw(st.integers(0, len(text)))
        operation = draw(st.sampled_from(["delete", "insert", "comment", "duplicate"]))
        if operation == "delete":
            end = draw(st.integers(position, min(len(text), position + 6)))
            text = text[:position] + text[end:]
        elif operation == "insert":
            piece = draw(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=3)))
            text = text[:position] + piece + text[position:]
        elif operation == "comment":
            text = text[:position] + draw(st.sampled_from(COMMENTS)) + text[position:]
        else:
            end = draw(st.integers(position, min(len(text), position + 20)))
            text = text[:end] + text[position:end] + text[end:]
    return text


config_texts = st.one_of(st.text(), fragment_text, corrupted_config_text(), pathological_text)

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12))
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`good` nine times in ten, else `bad`."""
    return st.sampled_from([good] * 9 + [bad]).flatmap(lambda chosen: chosen)


def odds(tenths: int) -> st.SearchStrategy[bool]:
    """True `tenths` times in ten (not st.integers, whose draws favour the bounds)."""
    return st.sampled_from([True] * tenths + [False] * (10 - tenths))


ENDPOINTS = ["tcp://host:5556", "tcp://*:0", "ipc:///tmp/s", "inproc://x", "bogus://x", "host"]
PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "name": st.sampled_from(["a", "b", "stdin", "zeromq", ""]),
    "storage_account": st.sampled_from(["acct", ""]),
    "account_url": st.sampled_from(["http://127.0.0.1:10001/devstoreaccount1", ""]),
    "queue_name": st.sampled_from(["orders", "ab", "x" * 64]),
    "connection_string_env": st.sampled_from(["CONN", ""]),
    "connection_string_secret": st.sampled_from(["conn", ""]),
    "batch_size": st.integers(-1, 40),
    "visibility_timeout_seconds": st.integers(0, 10**6),
    "message_encoding": st.sampled_from(["auto", "base64", "text", "utf-16"]),
    "min_poll_interval_seconds": mostly(st.floats(0.01, 20), st.floats()),
    "max_poll_interval_seconds": mostly(st.floats(0.01, 20), st.floats()),
    "socket_type": st.sampled_from(["PULL", "SUB", "PUB"]),
    "connect": st.lists(st.sampled_from(ENDPOINTS), max_size=3),
    "bind": st.lists(st.sampled_from(ENDPOINTS), max_size=3),
    "tcp_uri": st.sampled_from(ENDPOINTS),
    "topics": st.lists(st.sampled_from(["", "orders", "prices"]), max_size=3),
    "topic": st.sampled_from(["", "orders"]),
    "topic_pattern": st.sampled_from(["orders.*", "("]),
    "bootstrap_servers": st.one_of(
        st.sampled_from(["localhost:9092", ""]), st.lists(st.sampled_from(["a:1", "b:2"]))
    ),
    "group_id": st.sampled_from(["router", ""]),
    "start_offset": st.sampled_from(["earliest", "latest", "middle"]),
    "security_protocol": st.sampled_from(["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]),
    "sasl_mechanism": st.sampled_from(["PLAIN", "SCRAM-SHA-256", "GSSAPI"]),
    "sasl_password_env": st.sampled_from(["PW", ""]),
    "sasl_password_secret": st.sampled_from(["pw", ""]),
    "session_timeout_ms": mostly(st.integers(1000, 30000), st.integers()),
    "heartbeat_interval_ms": mostly(st.integers(100, 3000), st.integers()),
    "max_concurrency": mostly(st.integers(1, 1000), st.integers()),
    "missing_deployments": st.sampled_from(["fail", "warn", "ignore"]),
    "shutdown_grace_seconds": mostly(st.floats(0, 60), st.floats()),
    "retry_initial_seconds": mostly(st.floats(0.001, 60), st.floats()),
    "retry_max_seconds": mostly(st.floats(0.001, 60), st.floats()),
    "cancel_check_seconds": mostly(st.floats(0.001, 60), st.floats()),
}
deployments = mostly(
    st.sampled_from(["Test Flow/integration-test", "Flow/dep"]),
    st.sampled_from(["a/b/c", "/x", "x/", "nodash", " / ", ""]),
)
route_keys = st.one_of(
    st.sampled_from(["SampleMsg", "ParamsMsg", "", *PUBLISHER_TYPES]),
    st.from_regex(r"[A-Za-z][\w-]{0,10}", fullmatch=True),
)
route_targets = mostly(
    st.one_of(
        deployments,
        st.fixed_dictionaries(
            {"deployment": deployments},
            optional={
                "tags": st.lists(st.sampled_from(["t", "", "x y"]), max_size=3),
                "job_variables": st.dictionaries(st.text(max_size=5), json_values, max_size=3),
            },
        ),
    ),
    st.one_of(
        st.fixed_dictionaries(
            {},
            optional={
                "deployment": st.one_of(deployments, json_values),
                "tags": json_values,
                "job_variables": json_values,
                "extra": json_values,
            },
        ),
        json_values,
    ),
)
routes = mostly(st.dictionaries(route_keys, route_targets, min_size=1, max_size=3), json_values)


for _model in (RouterConfig, *SOURCE_CONFIGS):
    for _name, _info in _model.model_fields.items():
        if _name in PLAUSIBLE or _info.is_required():
            continue
        _default = _info.get_default(call_default_factory=True)
        PLAUSIBLE[_name] = (
            st.sampled_from([None, "orders"]) if _default is None else st.just(_default)
        )


def field_value(field: str) -> st.SearchStrategy[Any]:
    if field == "message_flow_actions":
        return routes
    plausible = PLAUSIBLE.get(field)
    return json_values if plausible is None else mostly(plausible, json_values)


@st.composite
def thread_data(draw: st.DrawFn, keys: st.SearchStrategy[str] | None = None) -> Any:
    """A source shaped like the real ones: a publisher_type (real or junk) and fields of that
    model (and a few unknown ones) with plausible or random values."""
    if not draw(odds(9)):
        return draw(json_values)
    publisher_type = draw(
        mostly(
            st.sampled_from(PUBLISHER_TYPES),
            st.one_of(st.sampled_from(["stdin", "Kafka ", "RabbitMQ", ""]), json_scalars),
        )
    )
    model = MODEL_BY_TYPE.get(publisher_type) or draw(st.sampled_from(SOURCE_CONFIGS))
    extra = keys if keys is not None else st.sampled_from(["bogus", "publisher", "queue"])
    thread: dict[str, Any] = {}
    if draw(odds(9)):
        thread["publisher_type"] = publisher_type
    if draw(odds(9)):
        thread["message_flow_actions"] = draw(
            st.dictionaries(
                route_keys if keys is None else keys, route_targets, min_size=1, max_size=3
            )
        )
    for name, info in model.model_fields.items():
        if name in thread or name == "publisher_type":
            continue
        # Required fields nearly always, the others half the time.
        if draw(odds(9 if info.is_required() else 5)):
            thread[name] = draw(field_value(name))
    unknown = st.lists(extra, unique=True, min_size=1, max_size=2)
    for name in draw(unknown if keys is not None else mostly(st.just([]), unknown)):
        thread[name] = draw(field_value(name))
    return thread


@st.composite
def config_data(draw: st.DrawFn, keys: st.SearchStrategy[str] | None = None) -> Any:
    """Data shaped like a config: a `threads` list and top-level settings."""
    data: dict[str, Any] = {}
    if draw(odds(9)):
        data["threads"] = draw(
            mostly(
                st.lists(thread_data(keys), min_size=1, max_size=3),
                st.one_of(st.just([]), json_values),
            )
        )
    for name in RouterConfig.model_fields:
        if name != "threads" and draw(odds(3)):
            data[name] = draw(field_value(name))
    extra = keys if keys is not None else st.sampled_from(["thread", "sources", "bogus"])
    unknown = st.lists(extra, unique=True, min_size=1, max_size=2)
    for name in draw(unknown if keys is not None else mostly(st.just([]), unknown)):
        data[name] = draw(field_value(name))
    return data


# --------------------------------------------------------------------------------------------
# Config: properties
# --------------------------------------------------------------------------------------------


def test_the_valid_configs_used_for_corruption_load():
    for config in VALID_CONFIGS:
        for style in ("yaml", "json", "json-indented", "json-commented"):
            suffix = ".yaml" if style == "yaml" else ".json"
            assert isinstance(load_text(_dump(config, style), suffix), RouterConfig)


@fuzz(500, shrink=False)  # the regression tests below pin the minimal reproducers
@given(text=config_texts, suffix=st.sampled_from(SUFFIXES))
def test_config_text_gives_a_config_or_a_config_error(text: str, suffix: str):
    check_config_text(text, suffix)


@fuzz(300)
@given(text=st.one_of(fragment_text, corrupted_config_text()), suffix=st.sampled_from(SUFFIXES))
def test_config_text_problems_are_single_lines(text: str, suffix: str):
    try:
        problems = problems_of(load_text, text, suffix)
    except pytest.fail.Exception:  # not a ConfigError: test_config_text_gives_... reports it
        return
    for line in problems or []:
        assert "\n" not in line and "\r" not in line, (
            f"BUG: a problem spans several lines (ConfigError promises one line per problem "
            f"and joins them with newlines): {line!r}"
        )


@fuzz(400)
@given(data=json_values)
def test_any_json_value_gives_a_config_or_a_config_error(data: Any):
    problems = problems_of(parse_config, data)
    if problems is not None:
        check_problems_for_data(data, problems)


@fuzz(500)
@given(data=config_data())
def test_config_shaped_data_gives_a_config_or_problems_naming_fields(data: Any):
    problems = problems_of(parse_config, data)
    if problems is None:
        config = parse_config(data)
        assert config.threads and set(config.routes()) == {t.source_name for t in config.threads}
    else:
        check_problems_for_data(data, problems)


@fuzz(200)
@given(
    data=config_data(keys=st.text(max_size=6)),
    name=st.text(max_size=6),
)
def test_config_problems_quoting_the_input_are_single_lines(data: Any, name: str):
    # Arbitrary strings (newlines included) as dict keys, names and publisher types.
    if isinstance(data.get("threads"), list) and data["threads"]:
        data["threads"].append(
            dict(data["threads"][0], name=name)
            if isinstance(data["threads"][0], dict)
            else {"name": name}
        )
    problems = problems_of(parse_config, data) or []
    for line in problems:
        assert "\n" not in line and "\r" not in line, (
            f"BUG: a problem spans several lines because it quotes the input as is: {line!r}"
        )


@fuzz(200)
@given(key=route_keys, value=st.one_of(st.integers(), st.none(), st.lists(st.integers())))
def test_a_bad_route_is_reported_under_its_message_type(key: str, value: Any):
    data = {"threads": [{"publisher_type": "StdInput", "message_flow_actions": {key: value}}]}
    problems = problems_of(parse_config, data)
    assert problems, "a route to a non-deployment was accepted"
    expected = f"threads[0].message_flow_actions.{key}: "
    assert all(line.startswith(expected) for line in problems), (
        f"BUG: the problem does not name message type {key!r}: {problems!r}"
    )


@fuzz(150, shrink=False)
@given(
    content=st.one_of(
        st.binary(max_size=300),
        config_texts.map(lambda text: text.encode("utf-8", errors="surrogatepass")),
        st.sampled_from(VALID_CONFIGS).map(lambda config: json.dumps(config).encode("utf-8")),
        st.sampled_from(VALID_CONFIGS).map(
            lambda config: "\ufeff".encode() + yaml.safe_dump(config).encode("utf-8")
        ),
        st.sampled_from(VALID_CONFIGS).map(lambda config: json.dumps(config).encode("utf-16")),
    ),
    suffix=st.sampled_from([*SUFFIXES, "", ".txt"]),
)
def test_load_config_of_any_file_gives_a_config_or_a_config_error(content: bytes, suffix: str):
    # A temporary directory per example: function-scoped fixtures are shared by examples.
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / f"router{suffix}"
        path.write_bytes(content)
        problems = problems_of(load_config, path)
    if problems is None:
        return
    if any(line.startswith(f"{path}: ") for line in problems):
        # The file itself: not UTF-8, not JSON/YAML. One line, naming the file.
        assert len(problems) == 1, problems
        assert "\n" not in problems[0] and problems[0][len(f"{path}: ") :].strip(), problems
    else:  # the data: problems name its fields
        data = parse_config_text(content.decode("utf-8"), suffix, ORIGIN)
        check_problems_for_data(data, problems)


# --------------------------------------------------------------------------------------------
# Config: reproducers of the bugs the fuzzing found
# --------------------------------------------------------------------------------------------

CRASHING_TEXT = {
    "yaml-bad-date": ("threads: 2001-13-45", ".yaml"),  # ValueError: month must be in 1..12
    "yaml-int-tag": ("threads: !!int abc", ".yaml"),  # ValueError
    "yaml-float-tag": ("threads: !!float abc", ".yaml"),  # ValueError
    "yaml-bool-tag": ("threads: !!bool abc", ".yaml"),  # KeyError: 'abc'
    "yaml-timestamp-tag": ("threads: !!timestamp x", ".yaml"),  # AttributeError
    "yaml-empty-int-tag": ("!!int ", ".yaml"),  # IndexError
    "yaml-deep-nesting": ("[" * 5000, ".yaml"),  # RecursionError
    "json-deep-nesting": ("[" * 5000, ".json"),  # RecursionError
    "json-long-integer": ('{"threads": ' + "9" * 5000 + "}", ".json"),  # ValueError (4300 digits)
}


@pytest.mark.parametrize("text, suffix", CRASHING_TEXT.values(), ids=CRASHING_TEXT.keys())
def test_regression_config_text_crashes(text: str, suffix: str):
    check_config_text(text, suffix)


def test_regression_yaml_syntax_errors_are_one_line():
    problems = problems_of(load_text, "threads: [", ".yaml")
    assert problems is not None and len(problems) == 1
    assert "\n" not in problems[0], (
        f"BUG: a YAML syntax error gives a multi-line problem: {problems[0]!r}"
    )


def test_regression_problems_quoting_a_name_are_one_line():
    thread = {"publisher_type": "StdInput", "name": "a\nb", "message_flow_actions": {"A": "F/d"}}
    problems = problems_of(parse_config, {"threads": [thread, thread]})
    assert problems is not None
    assert all("\n" not in line for line in problems), (
        f"BUG: a problem quoting the source name is split over lines: {problems!r}"
    )


@pytest.mark.parametrize("message_type", PUBLISHER_TYPES)
def test_regression_route_named_like_a_publisher_type_keeps_its_path(message_type: str):
    data = {"threads": [{"publisher_type": "Kafka", "bootstrap_servers": "b:1", "group_id": "g",
                         "topics": ["t"], "message_flow_actions": {message_type: 5}}]}  # fmt: skip
    problems = problems_of(parse_config, data)
    assert problems is not None
    assert problems[0].startswith(f"threads[0].message_flow_actions.{message_type}: "), (
        f"BUG: format_validation_error drops every path part equal to a publisher type, "
        f"here the message type: {problems!r}"
    )


@pytest.mark.parametrize("servers", [5, None, [5], ["a:1", None]])
def test_regression_union_field_errors_name_the_field(servers: Any):
    thread = {"publisher_type": "Kafka", "group_id": "g", "topics": ["t"]}
    thread |= {"bootstrap_servers": servers, "message_flow_actions": {"A": "F/d"}}
    data = {"threads": [thread]}
    problems = problems_of(parse_config, data)
    assert problems is not None
    assert all(re.match(r"^threads\[0\]\.bootstrap_servers(\[\d+\])?: ", p) for p in problems), (
        f"BUG: pydantic's union member labels (str, list[str]) appear in the paths: {problems!r}"
    )


def test_regression_load_config_of_a_file_that_is_not_utf8():
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "router.json"
        path.write_bytes(b'{"threads": "\xff"}')
        problems = problems_of(load_config, path)
    assert problems is not None and problems[0].startswith(f"{path}: ")


# --------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------

SOURCE = "src"
ROUTES = {
    SOURCE: {
        "SampleMsg": RouteTarget(deployment="Test Flow/integration-test"),
        "ParamsMsg": RouteTarget(deployment="Test Flow with params/integration-test", tags=["p"]),
    }
}
PERMANENT = "fuzz permanent failure"
# Outside the logging tree (Prefect's logging setup resets `propagate` on loggers in it):
# thousands of rejected messages stay out of the captured logs.
logger = logging.Logger("tests.reliability.fuzz")
logger.addHandler(logging.NullHandler())


def expected_route(body: bytes, hint: str | None) -> tuple[str, str] | None:
    """(deployment, identity) if `body` is a routable message (the documented format), else
    None: it must be rejected."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):  # not UTF-8, not JSON, or beyond the parser's limits
        return None
    if not isinstance(data, dict):
        return None
    message_type = data.get("message_type", hint)
    if not isinstance(message_type, str) or message_type not in ROUTES[SOURCE]:
        return None
    if data.get("payload") is not None and not isinstance(data["payload"], dict):
        return None
    message_id = data.get("id")
    if message_id is not None and (
        isinstance(message_id, bool) or not isinstance(message_id, (str, int))
    ):
        return None
    return ROUTES[SOURCE][message_type].deployment, (
        f"id:{message_id}" if message_id is not None else None
    )


message_types = st.one_of(
    st.sampled_from(["SampleMsg", "ParamsMsg", "Other", "", "samplemsg", "SampleMsg "]),
    json_values,
)
message_objects = st.fixed_dictionaries(
    {},
    optional={
        "message_type": message_types,
        "payload": st.one_of(st.dictionaries(st.text(max_size=8), json_values), json_values),
        "id": st.one_of(st.text(max_size=8), st.integers(), json_values),
        "extra": json_values,
    },
)
valid_messages = st.fixed_dictionaries(
    {"message_type": st.sampled_from(["SampleMsg", "ParamsMsg"])},
    optional={
        "payload": st.dictionaries(st.text(max_size=8), json_values, max_size=4),
        "id": st.one_of(st.text(max_size=8), st.integers()),
    },
)


def _encode(value: Any, ascii_only: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", errors="surrogatepass")


bodies = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=100).map(lambda t: t.encode("utf-8", errors="surrogatepass")),
    st.builds(_encode, message_objects, st.booleans()),
    st.builds(_encode, valid_messages, st.booleans()),
    st.builds(_encode, valid_messages, st.booleans()).map(lambda b: b"\xef\xbb\xbf" + b),
    st.builds(_encode, json_values, st.booleans()),
    # Beyond the JSON parser's limits: nesting past the recursion limit, huge integers.
    st.integers(150, 1200).map(lambda n: b"[" * n + b"]" * n),
    st.integers(150, 1200).map(
        lambda n: (
            b'{"message_type": "SampleMsg", "payload": ' + b'{"a":' * n + b"1" + b"}" * n + b"}"
        )
    ),
    st.integers(4000, 6000).map(
        lambda n: b'{"message_type": "SampleMsg", "payload": {"n": ' + b"9" * n + b"}}"
    ),
)
failures = st.lists(st.sampled_from(["transient", "permanent"]), max_size=6).map(
    lambda kinds: [
        PermanentDispatchError(f"{PERMANENT} {i}")
        if kind == "permanent"
        else TransientDispatchError(f"fuzz transient failure {i}")
        for i, kind in enumerate(kinds)
    ]
)


async def run_messages(
    messages: list[tuple[bytes, str | None]], injected: list[Exception], max_concurrency: int
) -> tuple[Settlements, FakeDispatcher, Runtime]:
    dispatcher = FakeDispatcher(failures=list(injected))
    settle = Settlements()
    runtime = Runtime(
        dispatcher,  # type: ignore[arg-type]
        ROUTES,
        logger,
        max_concurrency=max_concurrency,
        retry_initial_seconds=0.001,
        retry_max_seconds=0.002,
    )
    for index, (body, hint) in enumerate(messages):
        message = settle.message(body, native_id=str(index), source=SOURCE)
        message.message_type = hint
        await runtime.submit(message)
    await asyncio.wait_for(runtime.join(), 60)  # a guard against hanging, not a timing check
    return settle, dispatcher, runtime


def check_settlements(
    messages: list[tuple[bytes, str | None]],
    injected: list[Exception],
    settle: Settlements,
    dispatcher: FakeDispatcher,
    runtime: Runtime,
) -> None:
    outcomes: dict[str, list[tuple[str, str]]] = {}
    for native_id, kind, reason in settle.log:
        outcomes.setdefault(native_id, []).append((kind, reason))
    routable_keys = set()
    for index, (body, hint) in enumerate(messages):
        settled = outcomes.get(str(index), [])
        assert len(settled) == 1, f"message {index} settled {len(settled)} times: {settled}"
        kind, reason = settled[0]
        assert kind != "retry_later", (
            f"BUG: message {index} was released (retry_later: {reason[:300]!r}) while the "
            f"router is not stopping; body {body[:120]!r}... ({len(body)} bytes)"
        )
        route = expected_route(body, hint)
        if route is None:
            assert kind == "reject", f"message {index} {body[:200]!r} was {kind}ed, not rejected"
            assert not reason.startswith(PERMANENT), reason
            continue
        deployment, identity = route
        key = idempotency_key(SOURCE, identity or str(index), deployment)
        routable_keys.add(key)
        if kind == "reject":
            assert reason.startswith(PERMANENT), f"routable message {index} rejected: {reason}"
        else:
            assert kind == "ack", kind
            assert key in dispatcher.runs, f"message {index} acked without its flow run"
    assert {call.idempotency_key for call in dispatcher.calls} <= routable_keys, (
        "a message that is not routable was dispatched"
    )
    permanent_consumed = sum(isinstance(e, PermanentDispatchError) for e in injected) - sum(
        isinstance(e, PermanentDispatchError) for e in dispatcher.failures
    )
    kinds = [kind for outcome in outcomes.values() for kind, _ in outcome]
    assert sum(reason.startswith(PERMANENT) for _, _, reason in settle.log) == permanent_consumed
    stats = runtime.stats
    assert stats.received == len(messages)
    assert stats.triggered == kinds.count("ack")
    assert stats.rejected == kinds.count("reject")
    assert stats.released == 0
    assert stats.received == stats.triggered + stats.rejected
    assert runtime.in_flight == 0


@fuzz(300, shrink=False)
@given(
    messages=st.lists(
        st.tuples(
            bodies,
            st.one_of(st.none(), st.none(), st.sampled_from(["SampleMsg", "Other", ""])),
        ),
        min_size=1,
        max_size=8,
    ),
    injected=failures,
    max_concurrency=st.integers(1, 8),
)
def test_any_message_is_settled_once_as_triggered_or_rejected(
    messages: list[tuple[bytes, str | None]], injected: list[Exception], max_concurrency: int
):
    settle, dispatcher, runtime = asyncio.run(run_messages(messages, injected, max_concurrency))
    check_settlements(messages, injected, settle, dispatcher, runtime)


CRASHING_BODIES = {
    "long-integer": b'{"message_type": "SampleMsg", "payload": {"n": ' + b"9" * 5000 + b"}}",
    "bare-long-integer": b"9" * 5000,
    "deep-array": b"[" * 5000 + b"]" * 5000,
    "deep-payload": b'{"message_type": "SampleMsg", "payload": '
    + b'{"a":' * 5000
    + b"1"
    + b"}" * 5001,
}


@pytest.mark.parametrize("body", CRASHING_BODIES.values(), ids=CRASHING_BODIES.keys())
def test_regression_bodies_beyond_the_json_parser_limits_are_rejected(body: bytes):
    messages: list[tuple[bytes, str | None]] = [(body, None)]
    settle, dispatcher, runtime = asyncio.run(run_messages(messages, [], 1))
    check_settlements(messages, [], settle, dispatcher, runtime)
