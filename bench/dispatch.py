"""Dispatch benchmark: the router's sustained trigger rate next to the raw Prefect client's.

Both create runs of the same deployment on the same Prefect server at the same concurrency;
the rate of each is measured from the server's own creation timestamps of its runs.
Prints a table; it asserts nothing. Run with `make bench` or `python bench/dispatch.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

if not __package__:  # run as a script: the project root, not bench/, comes first
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from prefect.client.orchestration import PrefectClient  # noqa: E402

from bench.common import RouterProcess, rate, runs_tagged, start_server, stop_on_signals  # noqa: E402
from devtools.prefect_server import PrefectServer  # noqa: E402

DEPLOYMENT = "Test Flow/integration-test"


def raw_client(url: str, messages: int, concurrency: int) -> float:
    """Runs per second of `create_flow_run_from_deployment` at `concurrency`."""
    tag = f"bench-raw-{uuid.uuid4().hex[:8]}"

    async def create() -> None:
        async with PrefectClient(url) as client:
            deployment = await client.read_deployment_by_name(DEPLOYMENT)
            slots = asyncio.Semaphore(concurrency)

            async def one(index: int) -> None:
                async with slots:
                    await client.create_flow_run_from_deployment(
                        deployment.id, tags=[tag], idempotency_key=f"{tag}-{index}"
                    )

            await asyncio.gather(*(one(i) for i in range(messages)))

    asyncio.run(create())
    runs = runs_tagged(url, tag)
    assert len(runs) == messages, f"raw client made {len(runs)} runs of {messages}"
    return rate(run.created for run in runs)


def router(server: PrefectServer, messages: int, concurrency: int) -> float:
    """Runs per second of a stdin router fed `messages` lines, `max_concurrency` = concurrency."""
    source = f"bench-{uuid.uuid4().hex[:8]}"
    config = {
        "threads": [
            {
                "publisher_type": "StdInput",
                "name": source,
                "message_flow_actions": {"SampleMsg": DEPLOYMENT},
            }
        ],
        "max_concurrency": concurrency,
    }
    lines = "".join(
        json.dumps({"message_type": "SampleMsg", "id": str(i)}) + "\n" for i in range(messages)
    )
    process = RouterProcess(server, config, name=source, stdin=True)
    try:
        process.process.communicate(lines.encode(), timeout=600)
    finally:
        process.close()
    if process.process.returncode != 0:
        raise RuntimeError(f"router failed:\n{process.log_path.read_text()[-3000:]}")
    runs = runs_tagged(server.url, f"source:{source}")
    assert len(runs) == messages, f"router made {len(runs)} runs of {messages}"
    return rate(run.created for run in runs)


def measure(
    server: PrefectServer, messages: int, concurrencies: list[int]
) -> dict[str, dict[str, Any]]:
    """Router and raw client rates at each concurrency, as results entries keyed by it."""
    figures: dict[str, dict[str, Any]] = {}
    for concurrency in concurrencies:
        raw = raw_client(server.url, messages, concurrency)
        routed = router(server, messages, concurrency)
        figures[str(concurrency)] = {
            "router_rps": round(routed, 2),
            "raw_rps": round(raw, 2),
            "ratio": round(routed / raw, 3),
            "messages": messages,
        }
        print(
            f"  concurrency {concurrency}: router {routed:.1f} runs/s, raw {raw:.1f} runs/s",
            flush=True,
        )
    return figures


def table(figures: dict[str, dict[str, Any]]) -> str:
    """The dispatch figures as a text table."""
    lines = [
        f"{'concurrency':>11} {'router runs/s':>14} {'raw runs/s':>11} {'ratio':>6} {'msgs':>5}"
    ]
    for concurrency, f in figures.items():
        lines.append(
            f"{concurrency:>11} {f['router_rps']:>14.1f} {f['raw_rps']:>11.1f} "
            f"{f['ratio']:>6.2f} {f['messages']:>5}"
        )
    return "\n".join(lines)


def main() -> None:
    """Run the dispatch benchmark on its own and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200, help="runs per measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument(
        "--database",
        choices=["postgres", "sqlite"],
        default="postgres",
        help="the server's database (SQLite locks under load and answers 503)",
    )
    args = parser.parse_args()
    stop_on_signals()
    with ExitStack() as stack:
        print(f"Starting a Prefect server ({args.database}) ...", flush=True)
        server = start_server(stack, args.database)
        figures = measure(server, args.messages, args.concurrency)
    print(f"\nDispatch rate, {args.messages} runs per figure, Prefect server on {args.database}")
    print(table(figures))


if __name__ == "__main__":
    main()
