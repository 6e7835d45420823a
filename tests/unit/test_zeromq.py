"""The ZeroMQ source: its config, and the source over real pyzmq sockets on loopback TCP."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator

import pytest
import zmq
import zmq.asyncio

from router.config import RouterConfig, parse_config
from router.errors import ConfigError, SourceError
from router.message import Message
from router.sources.zeromq import ZeroMQConfig, ZeroMQSource

ROUTES = {"SampleMsg": "Test Flow/integration-test"}
LOGGER = logging.getLogger("test")
GUARD = 10  # seconds before a stuck test fails instead of hanging; never a speed check


def zeromq(**fields: object) -> dict:
    return {"threads": [{"publisher_type": "ZeroMQ", "message_flow_actions": ROUTES, **fields}]}


def source_config(**fields: object) -> ZeroMQConfig:
    (config,) = parse_config(zeromq(**fields)).threads
    return config


def body(name: str, **extra: object) -> bytes:
    message = {"message_type": "ParamsMsg", "payload": {"name": name}, **extra}
    return json.dumps(message).encode()


# --- config ---------------------------------------------------------------------------------


def test_original_fields_connect_a_sub_socket_to_one_topic():
    config = source_config(tcp_uri="tcp://127.0.0.1:5556", topic="preftopic")
    assert config.socket_type == "SUB"
    assert config.connect == ["tcp://127.0.0.1:5556"]
    assert config.bind == []
    assert config.topics == ["preftopic"]
    assert config.high_water_mark == 1000
    assert config.source_name == "zeromq"
    assert isinstance(config.build(), ZeroMQSource)
    assert config.build().kind == "ZeroMQ"


def test_original_fields_merge_with_the_new_ones():
    config = source_config(
        tcp_uri="tcp://a:1", topic="x", connect=["tcp://b:2", "tcp://a:1"], topics=["y"]
    )
    assert config.connect == ["tcp://a:1", "tcp://b:2"]
    assert config.topics == ["y", "x"]


def test_sub_subscribes_to_everything_by_default():
    config = source_config(connect=["tcp://127.0.0.1:5556"])
    assert (config.socket_type, config.topics) == ("SUB", [""])


def test_pull_binding_and_connecting():
    config = source_config(
        socket_type="PULL", bind=["tcp://*:5557", "ipc:///tmp/router.sock"], connect=["tcp://h:1"]
    )
    assert config.socket_type == "PULL"
    assert config.bind == ["tcp://*:5557", "ipc:///tmp/router.sock"]
    assert config.connect == ["tcp://h:1"]


def test_a_parsed_config_validates_again_unchanged():
    # The router's flow takes the config as a parameter: it may be serialized and parsed anew.
    for fields in (
        {"tcp_uri": "tcp://a:1", "topic": "x"},
        {"tcp_uri": "tcp://a:1", "topic": "x", "topics": ["y"]},
        {"socket_type": "PULL", "bind": ["tcp://*:1"]},
    ):
        config = parse_config(zeromq(**fields))
        again = RouterConfig.model_validate(json.loads(config.model_dump_json()))
        assert again == config


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({}, "threads[0]: set at least one endpoint in `connect` or `bind` (or the original"),
        ({"topic": "x"}, "set at least one endpoint"),
        ({"connect": []}, "set at least one endpoint"),
        ({"socket_type": "PUSH", "connect": ["tcp://a:1"]}, "threads[0].socket_type: Input"),
        ({"socket_type": "PULL", "connect": ["tcp://a:1"], "topic": "x"}, "only to socket_type"),
        ({"socket_type": "PULL", "connect": ["tcp://a:1"], "topics": ["x"]}, "only to socket"),
        ({"connect": ["127.0.0.1:5556"]}, "expected an endpoint 'transport://address'"),
        ({"tcp_uri": "localhost"}, "threads[0].tcp_uri: expected an endpoint"),
        ({"bind": ["tpc://*:1"]}, "unknown transport 'tpc'"),
        ({"connect": ["inproc://x"]}, "inproc reaches only sockets inside the router"),
        ({"connect": ["tcp://a:1"], "topics": []}, "threads[0].topics: List should have"),
        ({"connect": ["tcp://a:1"], "high_water_mark": -1}, "high_water_mark"),
        ({"connect": ["tcp://a:1"], "tcp_url": "tcp://a:1"}, "threads[0].tcp_url: unknown field"),
    ],
)
def test_invalid_configs_name_the_problem(fields, problem):
    with pytest.raises(ConfigError) as info:
        parse_config(zeromq(**fields))
    assert problem in "\n".join(info.value.problems)


def test_every_field_is_described():
    for name, field in ZeroMQConfig.model_fields.items():
        assert name == "publisher_type" or field.description, name


def test_the_router_imports_without_pyzmq():
    code = (
        "import sys; sys.modules['zmq'] = None\n"
        "from router.config import parse_config\n"
        f"config = parse_config({zeromq(tcp_uri='tcp://a:1')!r})\n"
        "config.threads[0].build()\n"
        "assert 'zmq' not in [m for m, v in sys.modules.items() if v is not None]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


async def test_missing_pyzmq_is_a_clear_source_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "zmq", None)
    monkeypatch.setitem(sys.modules, "zmq.asyncio", None)
    source = source_config(tcp_uri="tcp://127.0.0.1:1").build()
    with pytest.raises(SourceError, match=r"pip install prefect-event-router\[zeromq\]"):
        await source.run(Collector().submit, asyncio.Event(), LOGGER)


# --- the source over real sockets -----------------------------------------------------------


class Collector:
    """A fake `submit` that keeps what the source hands over."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._arrived = asyncio.Condition()

    async def submit(self, message: Message) -> None:
        async with self._arrived:
            self.messages.append(message)
            self._arrived.notify_all()

    async def wait_for(self, count: int) -> list[Message]:
        """The first `count` messages, once there are that many."""
        await self.wait_until(lambda: len(self.messages) >= count)
        return self.messages[:count]

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once `predicate()` holds, checked as messages arrive."""
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(predicate), GUARD)

    def bodies(self) -> list[bytes]:
        return [message.body for message in self.messages]


class Running:
    """A source running in a task, with its stop event."""

    def __init__(self, source: ZeroMQSource, collector: Collector) -> None:
        self.source = source
        self.collector = collector
        self.stopping = asyncio.Event()
        self.task = asyncio.create_task(source.run(collector.submit, self.stopping, LOGGER))

    async def stop(self) -> None:
        self.stopping.set()
        await asyncio.wait_for(self.task, GUARD)


class Peer:
    """The test's side of the sockets, closed at the end of the test."""

    def __init__(self) -> None:
        self.context = zmq.asyncio.Context()
        self.sockets: list[zmq.asyncio.Socket] = []

    def socket(self, kind: int) -> zmq.asyncio.Socket:
        socket = self.context.socket(kind)
        socket.setsockopt(zmq.LINGER, 0)
        self.sockets.append(socket)
        return socket

    def bound(self, kind: int) -> tuple[zmq.asyncio.Socket, str]:
        """A socket of `kind` bound to a free loopback port, and its endpoint."""
        socket = self.socket(kind)
        socket.bind("tcp://127.0.0.1:*")
        return socket, socket.getsockopt_string(zmq.LAST_ENDPOINT)

    def close(self) -> None:
        for socket in self.sockets:
            socket.close(linger=0)
        self.context.term()


@pytest.fixture
def peer() -> Iterator[Peer]:
    peer = Peer()
    yield peer
    peer.close()


async def until_received(
    collector: Collector, send: Callable[[int], Awaitable[None]]
) -> list[bytes]:
    """Call send(n) for n = 0, 1, ... until a message arrives (the SUB slow joiner: a SUB
    gets only what is published once its subscription has reached the PUB)."""

    async def probe() -> None:
        n = 0
        while not collector.messages:
            await send(n)
            n += 1
            await asyncio.sleep(0.05)

    await asyncio.wait_for(probe(), GUARD)
    return collector.bodies()


async def test_pull_receives_single_frames_with_a_session_counter_identity(peer):
    push, endpoint = peer.bound(zmq.PUSH)
    collector = Collector()
    running = Running(source_config(socket_type="PULL", connect=[endpoint]).build(), collector)
    # PUSH holds messages until the PULL has connected: no message is lost here
    for name in ("a", "b", "c"):
        await push.send(body(name))
    messages = await collector.wait_for(3)
    await running.stop()
    assert [m.body for m in messages] == [body("a"), body("b"), body("c")]
    assert all(m.source == "zeromq" for m in messages)
    session = messages[0].native_id.split(":")[0]
    assert [m.native_id for m in messages] == [f"{session}:1", f"{session}:2", f"{session}:3"]
    # nothing to settle at the sender: each settlement is accepted and does nothing
    assert await messages[0].ack()
    assert await messages[1].reject("not wanted")
    assert await messages[2].retry_later("later")


async def test_each_run_has_its_own_session(peer):
    push, endpoint = peer.bound(zmq.PUSH)
    source = source_config(socket_type="PULL", connect=[endpoint], name="pull").build()
    identities = []
    for name in ("first", "second"):
        collector = Collector()
        running = Running(source, collector)
        await push.send(body(name))
        (message,) = await collector.wait_for(1)
        await running.stop()
        assert (message.source, message.body) == ("pull", body(name))
        identities.append(message.native_id)
    assert identities[0].endswith(":1") and identities[1].endswith(":1")
    assert identities[0] != identities[1]


async def test_pull_binds_and_the_sender_connects(peer):
    collector = Collector()
    source = source_config(socket_type="PULL", bind=["tcp://127.0.0.1:*"]).build()
    running = Running(source, collector)
    while not source.bound:
        await asyncio.sleep(0.01)
    (endpoint,) = source.bound
    assert endpoint.startswith("tcp://127.0.0.1:") and not endpoint.endswith("*")
    push = peer.socket(zmq.PUSH)
    push.connect(endpoint)
    await push.send_multipart([b"ignored", body("last frame")])
    (message,) = await collector.wait_for(1)
    await running.stop()
    assert message.body == body("last frame")


async def test_sub_takes_the_last_frame_after_the_topic(peer):
    pub, endpoint = peer.bound(zmq.PUB)
    collector = Collector()
    running = Running(source_config(tcp_uri=endpoint, topic="orders").build(), collector)
    await until_received(collector, lambda n: pub.send_multipart([b"orders", body(f"probe-{n}")]))
    await pub.send_multipart([b"orders", body("real", id="order-1")])
    await pub.send_multipart([b"orders", b"meta", body("three frames")])
    await collector.wait_until(lambda: body("three frames") in collector.bodies())
    await running.stop()
    rest = [m for m in collector.bodies() if b"probe" not in m]
    assert rest == [body("real", id="order-1"), body("three frames")]
    assert json.loads(rest[0])["id"] == "order-1"  # the topic frame is not in the body


async def test_sub_gets_only_its_topic_prefixes(peer):
    pub, endpoint = peer.bound(zmq.PUB)
    collector = Collector()
    config = source_config(connect=[endpoint], topics=["orders", "billing."])
    running = Running(config.build(), collector)
    await until_received(collector, lambda n: pub.send_multipart([b"orders", body(f"probe-{n}")]))
    sent = [
        (b"other", "other"),
        (b"billing", "billing without the dot"),
        (b"orders.eu", "orders.eu"),  # a prefix match, as ZeroMQ subscriptions go
        (b"order", "order"),
        (b"billing.eu", "billing.eu"),
        (b"orders", "last"),
    ]
    for topic, name in sent:
        await pub.send_multipart([topic, body(name)])
    # one TCP connection keeps the order: once "last" is in, every earlier one is too
    await collector.wait_until(lambda: body("last") in collector.bodies())
    await running.stop()
    names = [json.loads(m)["payload"]["name"] for m in collector.bodies()]
    assert [n for n in names if not n.startswith("probe-")] == ["orders.eu", "billing.eu", "last"]


async def test_stop_returns_while_recv_blocks_and_closes_the_socket(peer):
    collector = Collector()
    source = source_config(socket_type="PULL", bind=["tcp://127.0.0.1:*"]).build()
    running = Running(source, collector)
    while not source.bound:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    assert not running.task.done()
    await running.stop()
    assert collector.messages == []
    # closed with linger 0: its endpoint is free again at once
    peer.socket(zmq.PULL).bind(source.bound[0])


async def test_a_taken_endpoint_is_a_clear_source_error(peer):
    _, endpoint = peer.bound(zmq.PULL)
    source = source_config(socket_type="PULL", bind=[endpoint], name="busy").build()
    with pytest.raises(SourceError, match=f"ZeroMQ source 'busy' cannot bind {endpoint}: "):
        await asyncio.wait_for(source.run(Collector().submit, asyncio.Event(), LOGGER), GUARD)


async def test_an_endpoint_libzmq_refuses_is_a_clear_source_error():
    source = ZeroMQSource(source_config(connect=["tcp://127.0.0.1:no-port"]))
    with pytest.raises(SourceError, match="cannot connect to tcp://127.0.0.1:no-port: "):
        await asyncio.wait_for(source.run(Collector().submit, asyncio.Event(), LOGGER), GUARD)
