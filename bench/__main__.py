"""`python -m bench` (`make bench`): every benchmark in one run, a table, and a JSON record.

Starts a Prefect server on a fresh PostgreSQL database, Azurite, Tansu and a ZeroMQ socket, then
one router process with all four sources (stdin, Azure queue, Kafka, ZeroMQ) for the per-source,
Azure and router-process figures, then the dispatch comparison with routers of its own. Writes
bench/results/latest.json and a timestamped copy; stops everything it started, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

import psutil

from bench import dispatch
from bench.azure_queue import AzureDriver, queue_arguments, queue_figures, queue_report
from bench.common import start_server, stop_on_signals
from bench.kafka import KafkaDriver
from bench.sources import (
    Driver,
    StdinDriver,
    measure_source,
    source_arguments,
    source_table,
    start_router,
    warm_up,
)
from bench.zeromq import ZeroMQDriver
from devtools.prefect_server import PROJECT_ROOT

RESULTS = PROJECT_ROOT / "bench" / "results"
QUICK = {
    "messages": 30,
    "latency_messages": 20,
    "dispatch_messages": 30,
    "busy_messages": 10,
    "idle_seconds": 15.0,
    "idle_messages": 1,
}


def arguments() -> argparse.Namespace:
    """The command line: message counts and where the results go."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    source_arguments(parser, messages=400)
    parser.set_defaults(latency_messages=150)
    queue_arguments(parser)
    parser.add_argument("--dispatch-messages", type=int, default=300, help="runs per figure")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small counts to try the benchmark out; results go to a temporary folder",
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        help=f"where to write latest.json and its timestamped copy (default {RESULTS})",
    )
    args = parser.parse_args()
    if args.quick:
        for name, value in QUICK.items():
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
    if args.results_dir is None:
        quick_dir = Path(tempfile.gettempdir()) / "event-router-bench"
        args.results_dir = quick_dir if args.quick else RESULTS
    return args


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    memory = psutil.virtual_memory().total / 2**30
    return {
        "cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "cpu": _cpu_model(),
        "memory_gib": round(memory, 1),
        "load_average_at_start": [round(load, 2) for load in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "prefect": version("prefect"),
        "aiokafka": version("aiokafka"),
        "pyzmq": version("pyzmq"),
        "azure_storage_queue": version("azure-storage-queue"),
        "postgresql": _command(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-Atc", "SHOW server_version"]
        ),
        "git_commit": _command(["git", "rev-parse", "--short", "HEAD"]),
        "git_dirty": bool(_command(["git", "status", "--porcelain", "--untracked-files=no"])),
    }


def _cpu_model() -> str:
    """The CPU's model name, from /proc/cpuinfo where there is one."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    models = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return models[0] if models else platform.processor()


def _command(command: list[str]) -> str:
    """What `command` prints, stripped (empty if it fails)."""
    try:
        result = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True)
    except OSError:
        return ""
    return result.stdout.strip()


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start everything, measure, stop everything; the results record."""
    results: dict[str, Any] = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
    }
    started = time.monotonic()
    with ExitStack() as stack:
        print(f"Starting a Prefect server on a fresh {args.database} database ...", flush=True)
        server = start_server(stack, args.database)
        print("Starting Azurite, Tansu and a ZeroMQ socket ...", flush=True)
        drivers: list[Driver] = []
        for driver in (StdinDriver(), AzureDriver(), KafkaDriver(), ZeroMQDriver()):
            stack.callback(driver.close)
            drivers.append(driver.start())
        print("Starting one router with all four sources ...", flush=True)
        router = start_router(server, drivers, name="all-sources")
        stack.callback(router.close)
        warm_up(server, router, drivers)

        results["sources"] = {}
        for driver in drivers:
            print(
                f"Source {driver.key}: {args.messages} as a backlog, "
                f"{args.latency_messages} at {args.per_second:g}/s ...",
                flush=True,
            )
            results["sources"][driver.key] = measure_source(
                server, router, driver, args.messages, args.latency_messages, args.per_second
            )
        print("Azure queue: busy pickup, idle requests, idle pickup ...", flush=True)
        azure = next(driver for driver in drivers if isinstance(driver, AzureDriver))
        results["azure"] = queue_figures(
            server,
            router,
            azure,
            busy_messages=args.busy_messages,
            busy_per_second=args.busy_per_second,
            idle_seconds=args.idle_seconds,
            idle_messages=args.idle_messages,
        )
        cpu = sum(figures["cpu_s"] for figures in results["sources"].values())
        messages = sum(figures["messages"] for figures in results["sources"].values())
        results["router"] = {
            "peak_rss_mb": round(router.peak_rss_mb(), 1),
            "cpu_s_per_1000": round(cpu / messages * 1000, 3),
            "messages": messages,
            "sources": [driver.key for driver in drivers],
        }
        router.close()

        print(f"Dispatch: {args.dispatch_messages} runs per figure ...", flush=True)
        results["dispatch"] = dispatch.measure(server, args.dispatch_messages, args.concurrency)
    results["options"] = {
        name: getattr(args, name)
        for name in (
            "messages",
            "latency_messages",
            "per_second",
            "busy_messages",
            "busy_per_second",
            "idle_seconds",
            "idle_messages",
            "dispatch_messages",
            "concurrency",
            "quick",
        )
    }
    results["duration_s"] = round(time.monotonic() - started)
    results["machine"]["load_average_at_end"] = [round(load, 2) for load in os.getloadavg()]
    order = ("dispatch", "sources", "azure", "router", "machine", "when", "duration_s", "options")
    return {key: results[key] for key in order}


def report(results: dict[str, Any]) -> str:
    """The results as the printed table."""
    m = results["machine"]
    r = results["router"]
    return "\n".join(
        [
            f"Prefect Event Router benchmark, {results['when']}",
            f"{m['cores']} cores, {m['memory_gib']} GiB, Python {m['python']}, "
            f"Prefect {m['prefect']}, PostgreSQL {m['postgresql']}, "
            f"load at start {m['load_average_at_start'][0]}",
            "",
            "Dispatch: router (stdin) vs raw create_flow_run_from_deployment, server timestamps",
            dispatch.table(results["dispatch"]),
            "",
            "Sources: runs/s from a backlog; send -> run created latency at a steady pace",
            source_table(results["sources"]),
            "",
            "Azure queue",
            queue_report(results["azure"]),
            "",
            f"Router process ({', '.join(r['sources'])} in one process)",
            f"  peak RSS   {r['peak_rss_mb']:.0f} MB",
            f"  CPU        {r['cpu_s_per_1000']:.2f} s per 1000 messages "
            f"({r['messages']} messages)",
            "",
            f"({results['duration_s']} s in all)",
        ]
    )


def save(results: dict[str, Any], folder: Path) -> list[Path]:
    """Write latest.json and a copy named after the UTC time of the run."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromisoformat(results["when"]).strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(results, indent=2) + "\n"
    paths = [folder / "latest.json", folder / f"{stamp}.json"]
    for path in paths:
        path.write_text(text)
    return paths


def main() -> int:
    """Run the benchmark; the process exit code."""
    args = arguments()
    stop_on_signals()
    try:
        results = run(args)
    except KeyboardInterrupt:
        print("\nInterrupted: everything started was stopped.", file=sys.stderr)
        return 130
    print()
    print(report(results))
    for path in save(results, args.results_dir):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
