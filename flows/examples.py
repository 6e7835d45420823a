"""The example target flows of the original tool, used by the demo and the tests."""

import asyncio

from prefect import flow, get_run_logger


@flow(name="Test Flow")
async def test_flow() -> str:
    """A flow without parameters."""
    logger = get_run_logger()
    await asyncio.sleep(1)
    logger.info("Test Flow ran")
    await asyncio.sleep(1)
    return "done"


@flow(name="Test Flow with params")
async def test_flow_with_params(name: str) -> str:
    """A flow that greets `name`."""
    logger = get_run_logger()
    await asyncio.sleep(1)
    logger.info("Hello, %s!", name)
    await asyncio.sleep(1)
    return f"Hello, {name}!"
