"""ZeroMQ benchmark: messages on a PUSH socket -> flow runs per second, and send-to-run latency.

The benchmark binds a PUSH socket on loopback and the router's PULL source connects to it: PUSH
blocks at the high-water mark, so a backlog is sent as fast as the router takes it, and nothing
is dropped. Prints; asserts nothing. `python bench/zeromq.py` (or `make bench`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

if not __package__:  # run as a script: the project root, not bench/, comes first
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import zmq  # noqa: E402

from bench.common import body, stop_on_signals  # noqa: E402
from bench.sources import Driver, run_single, source_arguments  # noqa: E402

SEND_TIMEOUT_MS = 120_000


class ZeroMQDriver(Driver):
    """A PUSH socket bound on a free loopback port, for a PULL source connecting to it."""

    key = "zeromq"

    def __init__(self) -> None:
        super().__init__()
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.PUSH)
        self.endpoint = ""

    def start(self) -> ZeroMQDriver:
        """Bind the PUSH socket (a send blocks until the router has connected)."""
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.SNDTIMEO, SEND_TIMEOUT_MS)
        port = self._socket.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        return self

    def close(self) -> None:
        """Close the socket and its context."""
        self._socket.close(linger=0)
        self._context.term()

    def _source_fields(self) -> dict[str, Any]:
        """A PULL socket connecting to ours."""
        return {"publisher_type": "ZeroMQ", "socket_type": "PULL", "connect": [self.endpoint]}

    def _send(self, name: str) -> None:
        """One message; blocks at the high-water mark (or until the router connects)."""
        self._socket.send(body(name))


def main() -> None:
    """Run the ZeroMQ benchmark on its own and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source_arguments(parser)
    stop_on_signals()
    run_single(ZeroMQDriver(), parser.parse_args())


if __name__ == "__main__":
    main()
