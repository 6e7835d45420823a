"""The router flow: one listener task per source, running until stopped or every source ends."""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.objects import StateType
from prefect.context import FlowRunContext
from prefect.states import Cancelled, Failed, State

from router.config import RouterConfig, load_config, parse_config
from router.dispatch import Dispatcher
from router.errors import ConfigError, TransientDispatchError
from router.runtime import Runtime, backoff_delay
from router.sources.base import Source, wait_or_stop

Logger = logging.Logger | logging.LoggerAdapter


class StopRequest:
    """Why and when the router was asked to stop: a signal, or its run being cancelled."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.reason: str | None = None

    def request(self, reason: str) -> None:
        """Ask the router to stop; the first reason is kept."""
        if self.reason is None:
            self.reason = reason
        self.event.set()


@task(
    name="listen", task_run_name="listen-{source.name}", cache_policy=NO_CACHE, persist_result=False
)
async def listen(source: Source, runtime: Runtime, stopping: asyncio.Event) -> str:
    """Run one source until it ends or the router stops; restart it with backoff if it fails."""
    logger = get_run_logger()
    rng = random.Random()
    failures = 0
    while not stopping.is_set():
        logger.info("Listening to source '%s' (%s)", source.name, source.kind)
        try:
            await source.run(runtime.submit, stopping, logger)
        except Exception as exc:
            failures += 1
            delay = backoff_delay(failures, 1.0, 60.0, rng)
            logger.error("Source '%s' failed: %s; restarting it in %.1fs", source.name, exc, delay)
            await wait_or_stop(asyncio.sleep(delay), stopping)
            continue
        if not stopping.is_set():
            logger.info("Source '%s' has ended", source.name)
            return "ended"
    return "stopped"


@flow(name="event-router", persist_result=False)
async def event_router(config: RouterConfig | str) -> Any:
    """Route messages from every configured source to flow runs of their deployments.

    `config` is the router's configuration, or the path of a JSON or YAML file holding it.
    """
    logger = get_run_logger()
    try:
        router_config = load_config(config) if isinstance(config, str) else parse_config(config)
    except ConfigError as exc:
        for problem in exc.problems:
            logger.error("Invalid config: %s", problem)
        return Failed(message="invalid config: " + "; ".join(exc.problems))
    async with get_client() as client:
        return await serve(router_config, client, logger)


async def serve(config: RouterConfig, client: PrefectClient, logger: Logger) -> Any:
    """Start every source, route their messages until stopped, then drain."""
    stop = StopRequest()
    dispatcher = Dispatcher(client)
    with stop_on_signals(stop):
        missing = await _resolve_deployments(dispatcher, config, stop, logger)
        if stop.reason is not None:
            return Cancelled(message=f"Router stopped before it started: {stop.reason}")
        if missing:
            for name in missing:
                logger.error("Deployment '%s' not found: run `prefect deploy` first", name)
            if config.missing_deployments == "fail":
                return Failed(message="deployments not found: " + ", ".join(missing))
        runtime = Runtime(
            dispatcher,
            config.routes(),
            logger,
            max_concurrency=config.max_concurrency,
            retry_initial_seconds=config.retry_initial_seconds,
            retry_max_seconds=config.retry_max_seconds,
        )
        sources = [source_config.build() for source_config in config.threads]
        watcher = asyncio.create_task(
            _watch_cancellation(client, stop, config.cancel_check_seconds)
        )
        drainer = asyncio.create_task(_drain_when_stopped(stop, runtime, config, logger))
        try:
            # Listeners stop receiving once stop.event is set, and return when what they
            # received is settled: the drainer settles or releases it meanwhile.
            await asyncio.gather(*(listen(source, runtime, stop.event) for source in sources))
            if stop.reason is None:  # every source ended: finish every message they gave
                await wait_or_stop(runtime.join(), stop.event)
            if stop.reason is not None:
                await drainer
        finally:
            watcher.cancel()
            drainer.cancel()
        if stop.reason is None and await _own_run_cancelled(client):
            # Cancelled just as the sources ended: Prefect refuses Completed after Cancelling.
            stop.request("its flow run was cancelled")
    summary = runtime.stats.as_dict()
    logger.info("Router finished: %s", summary)
    if stop.reason is not None:
        return Cancelled(message=f"Router stopped ({stop.reason}): {summary}", data=summary)
    return summary


async def _drain_when_stopped(
    stop: StopRequest, runtime: Runtime, config: RouterConfig, logger: Logger
) -> None:
    await stop.event.wait()
    logger.info("Stopping: %s", stop.reason)
    await runtime.drain(config.shutdown_grace_seconds)


async def _resolve_deployments(
    dispatcher: Dispatcher, config: RouterConfig, stop: StopRequest, logger: Logger
) -> list[str]:
    rng = random.Random()
    attempt = 0
    while True:
        try:
            return await dispatcher.resolve(config.deployments())
        except TransientDispatchError as exc:
            attempt += 1
            delay = backoff_delay(
                attempt, config.retry_initial_seconds, config.retry_max_seconds, rng
            )
            logger.warning("Cannot look up deployments: %s; retrying in %.1fs", exc, delay)
            await wait_or_stop(asyncio.sleep(delay), stop.event)
            if stop.reason is not None:
                return []


async def _watch_cancellation(client: PrefectClient, stop: StopRequest, interval: float) -> None:
    """Stop the router when its own flow run is cancelled.

    A worker stops a cancelled run by signal, but a run started with `python flows/router.py`
    is not interrupted by Prefect: the router has to notice its Cancelling state itself.
    """
    while True:
        await wait_or_stop(asyncio.sleep(interval), stop.event)
        if stop.event.is_set():
            return
        if await _own_run_cancelled(client):
            stop.request("its flow run was cancelled")
            return


async def _own_run_cancelled(client: PrefectClient) -> bool:
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return False
    try:
        flow_run = await client.read_flow_run(context.flow_run.id)
    except Exception:  # the API being away is the dispatcher's business, not ours
        return False
    return flow_run.state is not None and flow_run.state.type in (
        StateType.CANCELLING,
        StateType.CANCELLED,
    )


@contextmanager
def stop_on_signals(stop: StopRequest) -> Iterator[None]:
    """On the first SIGINT or SIGTERM, stop gracefully; a second one acts as it did before."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        loop.call_soon_threadsafe(stop.request, f"received {signal.Signals(signum).name}")
        signal.signal(signum, previous[signum])

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def exit_code(state: State) -> int:
    """The process exit code for the router's final state: 0 unless it failed or crashed."""
    return 1 if state.is_failed() or state.is_crashed() else 0
