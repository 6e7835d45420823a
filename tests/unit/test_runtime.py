import asyncio
import logging
import random

import pytest

from router.message import Outcome
from router.runtime import Runtime, backoff_delay
from router.sources.base import RouteTarget
from tests.unit.fakes import (
    FakeDispatcher,
    PermanentDispatchError,
    Settlements,
    TransientDispatchError,
)

ROUTES = {"src": {"SampleMsg": RouteTarget(deployment="Test Flow/integration-test")}}
SAMPLE = b'{"message_type": "SampleMsg"}'
logger = logging.getLogger("test-runtime")


def make_runtime(dispatcher: FakeDispatcher, **kwargs) -> Runtime:
    kwargs.setdefault("retry_initial_seconds", 0.01)
    kwargs.setdefault("retry_max_seconds", 0.02)
    return Runtime(dispatcher, ROUTES, logger, **kwargs)  # type: ignore[arg-type]


async def test_acks_only_after_the_flow_run_exists():
    dispatcher = FakeDispatcher(delay=0.05)
    settle = Settlements()
    runtime = make_runtime(dispatcher)
    await runtime.submit(settle.message(SAMPLE))
    await asyncio.sleep(0.01)
    assert settle.log == []  # dispatch still under way: nothing settled yet
    await runtime.drain(5)
    assert settle.log == [("1", "ack", "")]
    assert len(dispatcher.runs) == 1
    assert runtime.stats.as_dict() == {"received": 1, "triggered": 1, "rejected": 0, "released": 0}


async def test_bad_messages_are_rejected_without_a_dispatch(caplog):
    dispatcher = FakeDispatcher()
    settle = Settlements()
    runtime = make_runtime(dispatcher)
    with caplog.at_level(logging.ERROR, logger="test-runtime"):
        await runtime.submit(settle.message(b"{oops", "1"))
        await runtime.submit(settle.message(b'{"message_type": "Other"}', "2"))
        await runtime.drain(5)
    assert [(i, kind) for i, kind, _ in settle.log] == [("1", "reject"), ("2", "reject")]
    assert dispatcher.calls == []
    assert "not JSON" in caplog.text and "{oops" in caplog.text
    assert "no route for message_type 'Other'" in caplog.text


async def test_transient_failures_are_retried_until_the_run_exists(caplog):
    dispatcher = FakeDispatcher(
        failures=[TransientDispatchError("API down"), TransientDispatchError("HTTP 503")]
    )
    settle = Settlements()
    runtime = make_runtime(dispatcher)
    with caplog.at_level(logging.WARNING, logger="test-runtime"):
        await runtime.submit(settle.message(SAMPLE))
        await runtime.drain(5)
    assert settle.log == [("1", "ack", "")]
    assert len(dispatcher.calls) == 3
    # every attempt carried the same key, so a run created behind a lost answer is reused
    assert len({call.idempotency_key for call in dispatcher.calls}) == 1
    assert "attempt 2" in caplog.text


async def test_permanent_dispatch_failure_rejects_with_the_reason():
    dispatcher = FakeDispatcher(failures=[PermanentDispatchError("parameters rejected: name")])
    settle = Settlements()
    runtime = make_runtime(dispatcher)
    await runtime.submit(settle.message(SAMPLE))
    await runtime.drain(5)
    assert settle.log == [("1", "reject", "parameters rejected: name")]


async def test_drain_releases_what_did_not_finish_in_the_grace_period():
    dispatcher = FakeDispatcher(failures=[TransientDispatchError("down")] * 1000)
    settle = Settlements()
    runtime = make_runtime(dispatcher)
    await runtime.submit(settle.message(SAMPLE))
    await runtime.drain(0.1)
    assert [kind for _, kind, _ in settle.log] == ["retry_later"]
    assert runtime.stats.released == 1
    assert runtime.in_flight == 0


async def test_concurrency_is_bounded_and_submit_applies_back_pressure():
    dispatcher = FakeDispatcher(delay=0.05)
    settle = Settlements()
    runtime = make_runtime(dispatcher, max_concurrency=3)
    for index in range(10):
        await runtime.submit(settle.message(SAMPLE, str(index)))
        assert runtime.in_flight <= 3
    await runtime.drain(5)
    assert dispatcher.peak == 3
    assert len(settle.log) == 10


async def test_a_message_settles_only_once():
    settle = Settlements()
    message = settle.message(SAMPLE)
    assert await message.ack()
    assert not await message.reject("late")
    assert not await message.retry_later("late")
    assert message.outcome is Outcome.ACKED
    assert settle.log == [("1", "ack", "")]


async def test_internal_errors_release_the_message_instead_of_crashing():
    class Broken(FakeDispatcher):
        async def trigger(self, request):
            raise KeyError("bug")

    settle = Settlements()
    runtime = make_runtime(Broken())
    # a KeyError is not a DispatchError, so it reaches the runtime's safety net
    await runtime.submit(settle.message(SAMPLE))
    await runtime.drain(5)
    assert [kind for _, kind, _ in settle.log] == ["retry_later"]


@pytest.mark.parametrize("attempt", range(1, 12))
def test_backoff_grows_exponentially_with_jitter_up_to_the_maximum(attempt):
    rng = random.Random(attempt)
    ceiling = min(30.0, 0.5 * 2 ** (attempt - 1))
    delays = [backoff_delay(attempt, 0.5, 30.0, rng) for _ in range(50)]
    assert all(ceiling / 2 <= d <= ceiling for d in delays)
    assert len(set(delays)) > 1


async def test_join_waits_for_every_message_however_long_it_retries():
    dispatcher = FakeDispatcher(failures=[TransientDispatchError("down")] * 5)
    settle = Settlements()
    runtime = make_runtime(dispatcher)
    await runtime.submit(settle.message(SAMPLE))
    await asyncio.wait_for(runtime.join(), 5)
    assert settle.log == [("1", "ack", "")]


async def test_messages_submitted_while_draining_are_released_not_dispatched():
    dispatcher = FakeDispatcher(failures=[TransientDispatchError("down")] * 1000)
    settle = Settlements()
    runtime = make_runtime(dispatcher, max_concurrency=1)
    await runtime.submit(settle.message(SAMPLE, "held"))
    waiting = asyncio.create_task(runtime.submit(settle.message(SAMPLE, "waiting")))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # back-pressure: the only slot is taken
    await runtime.drain(0.1)
    await asyncio.wait_for(waiting, 1)
    await runtime.submit(settle.message(SAMPLE, "late"))
    assert sorted(settle.log) == [
        ("held", "retry_later", "router stopped before its flow run was created"),
        ("late", "retry_later", "router stopping: not dispatched"),
        ("waiting", "retry_later", "router stopping: not dispatched"),
    ]
    assert runtime.in_flight == 0
