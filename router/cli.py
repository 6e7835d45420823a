"""`prefect-event-router run|validate CONFIG`."""

from __future__ import annotations

import argparse
import asyncio
import sys

import router  # noqa: F401  (aliases PREFECT_API_URI before prefect is imported)
from router.config import RouterConfig, load_config
from router.errors import ConfigError

EXIT_CONFIG = 2


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = argparse.ArgumentParser(
        prog="prefect-event-router",
        description="Start Prefect flow runs from messages on queues.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the router flow on a config file")
    run.add_argument("config", help="the config file (JSON, with // comments, or YAML)")
    validate = commands.add_parser(
        "validate", help="check a config file and that its deployments exist"
    )
    validate.add_argument("config", help="the config file (JSON, with // comments, or YAML)")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    if not _api_url():
        print(
            "error: no Prefect API configured: set PREFECT_API_URL (or the original "
            "PREFECT_API_URI), e.g. http://127.0.0.1:4200/api, or `prefect config set` it",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    if args.command == "validate":
        return asyncio.run(_validate(config))
    return _run(config)


def _api_url() -> str | None:
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


def _run(config: RouterConfig) -> int:
    from router.flow import event_router, exit_code

    state = asyncio.run(event_router(config, return_state=True))
    if state.is_failed() or state.is_crashed():
        print(f"error: {state.message}", file=sys.stderr)
    return exit_code(state)


async def _validate(config: RouterConfig) -> int:
    from prefect.client.orchestration import get_client

    from router.dispatch import Dispatcher
    from router.errors import DispatchError

    async with get_client() as client:
        try:
            missing = set(await Dispatcher(client).resolve(config.deployments()))
        except DispatchError as exc:
            print(f"error: cannot check the deployments: {exc}", file=sys.stderr)
            return 1
    for source in config.threads:
        print(f"source '{source.source_name}' ({source.publisher_type})")
        for message_type, target in source.message_flow_actions.items():
            status = "NOT FOUND" if target.deployment in missing else "ok"
            print(f"  {message_type} -> {target.deployment}  [{status}]")
    for name in sorted(missing):
        print(f"error: deployment '{name}' not found: run `prefect deploy` first", file=sys.stderr)
    return 1 if missing else 0
