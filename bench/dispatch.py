"""Dispatch benchmark: the router's sustained trigger rate next to the raw Prefect client's.

Both create runs of the same deployment on the same Prefect server at the same concurrency;
the rate of each is measured from the server's own creation timestamps of its runs.
Prints a table; it asserts nothing. Run with `make bench` or `python bench/dispatch.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prefect.client.orchestration import PrefectClient  # noqa: E402
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags  # noqa: E402

from devtools.prefect_server import PROJECT_ROOT, PrefectServer  # noqa: E402

DEPLOYMENT = "Test Flow/integration-test"


async def runs_tagged(client: PrefectClient, tag: str, expected: int) -> list:
    runs: list = []
    while True:
        batch = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])),
            limit=200,
            offset=len(runs),
        )
        runs.extend(batch)
        if len(batch) < 200 or len(runs) >= expected:
            return runs


def rate(runs: list) -> float:
    """Runs per second between the first and the last creation, on the server's clock."""
    created = sorted(run.created for run in runs)
    span = (created[-1] - created[0]).total_seconds()
    return (len(created) - 1) / span if span > 0 else float("inf")


async def raw_client(url: str, messages: int, concurrency: int) -> float:
    tag = f"bench-raw-{uuid.uuid4().hex[:8]}"
    async with PrefectClient(url) as client:
        deployment = await client.read_deployment_by_name(DEPLOYMENT)
        slots = asyncio.Semaphore(concurrency)

        async def one(index: int) -> None:
            async with slots:
                await client.create_flow_run_from_deployment(
                    deployment.id, tags=[tag], idempotency_key=f"{tag}-{index}"
                )

        await asyncio.gather(*(one(i) for i in range(messages)))
        runs = await runs_tagged(client, tag, messages)
    assert len(runs) == messages, f"raw client made {len(runs)} runs of {messages}"
    return rate(runs)


async def router(server: PrefectServer, messages: int, concurrency: int, work: Path) -> float:
    source = f"bench-{uuid.uuid4().hex[:8]}"
    config = work / f"{source}.json"
    config.write_text(
        json.dumps(
            {
                "threads": [
                    {
                        "publisher_type": "StdInput",
                        "name": source,
                        "message_flow_actions": {"SampleMsg": DEPLOYMENT},
                    }
                ],
                "max_concurrency": concurrency,
            }
        )
    )
    lines = "".join(
        json.dumps({"message_type": "SampleMsg", "id": str(i)}) + "\n" for i in range(messages)
    )
    result = subprocess.run(
        [sys.executable, "flows/router.py", str(config)],
        input=lines,
        env=server.client_env(),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"router failed:\n{result.stderr[-3000:]}")
    async with PrefectClient(server.url) as client:
        runs = await runs_tagged(client, f"source:{source}", messages)
    assert len(runs) == messages, f"router made {len(runs)} runs of {messages}"
    return rate(runs)


def postgres_url(database: str) -> str:
    subprocess.run(
        [
            "psql",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-q",
            "-c",
            f"DROP DATABASE IF EXISTS {database}",
        ],
        check=True,
    )
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-q", "-c", f"CREATE DATABASE {database}"],
        check=True,
    )
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}"


def main() -> None:
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

    database_url = postgres_url("event_router_bench") if args.database == "postgres" else None
    server = PrefectServer(database_url=database_url)
    print(f"Starting a Prefect server ({args.database}) ...", flush=True)
    server.start()
    try:
        server.deploy_examples()
        rows = []
        for concurrency in args.concurrency:
            raw = asyncio.run(raw_client(server.url, args.messages, concurrency))
            routed = asyncio.run(router(server, args.messages, concurrency, server.home))
            rows.append((concurrency, routed, raw))
            print(
                f"  concurrency {concurrency}: router {routed:.1f} runs/s, raw {raw:.1f} runs/s",
                flush=True,
            )
    finally:
        server.close()

    print(f"\nDispatch rate, {args.messages} runs per figure, Prefect server on {args.database}")
    print(f"{'concurrency':>11} {'router runs/s':>14} {'raw runs/s':>11} {'ratio':>6}")
    for concurrency, routed, raw in rows:
        print(f"{concurrency:>11} {routed:>14.1f} {raw:>11.1f} {routed / raw:>6.2f}")


if __name__ == "__main__":
    main()
