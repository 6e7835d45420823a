"""Start and stop Azurite's queue service on a free loopback port, for tests and benchmarks."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from devtools.prefect_server import PROJECT_ROOT, free_port, spawn, stop_process, wait_for_port

ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public, documented by Microsoft).
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
AZURITE_QUEUE = os.environ.get(
    "AZURITE_QUEUE", str(PROJECT_ROOT / ".tools" / "node_modules" / ".bin" / "azurite-queue")
)


class Azurite:
    """`azurite-queue` in memory (or on `location`, to survive a restart).

    With `cert` and `key` it serves HTTPS and, with `oauth`, accepts bearer tokens too.
    """

    def __init__(
        self,
        *,
        location: Path | None = None,
        port: int | None = None,
        cert: Path | None = None,
        key: Path | None = None,
        oauth: bool = False,
    ) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="azurite-")
        self.location = location
        self.port = port or free_port()
        self._cert, self._key, self._oauth = cert, key, oauth
        scheme = "https" if cert else "http"
        self.account_url = f"{scheme}://127.0.0.1:{self.port}/{ACCOUNT}"
        self.connection_string = (
            f"DefaultEndpointsProtocol={scheme};AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"QueueEndpoint={self.account_url};"
        )
        self.log_path = Path(self._tmp.name) / "azurite.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Azurite:
        """Start Azurite and wait until it accepts connections."""
        if not Path(AZURITE_QUEUE).exists():
            raise RuntimeError(
                f"{AZURITE_QUEUE} not found: `make tools` installs it (npm install azurite@3.37.0)"
            )
        command = [
            AZURITE_QUEUE,
            "--queueHost", "127.0.0.1",
            "--queuePort", str(self.port),
            "--skipApiVersionCheck",  # azure-storage-queue 12.18 speaks a newer API version
            "--disableTelemetry",
            "--loose",
        ]  # fmt: skip
        if self.location is None:
            command.append("--inMemoryPersistence")
        else:
            self.location.mkdir(parents=True, exist_ok=True)
            command += ["--location", str(self.location)]
        if self._cert and self._key:
            command += ["--cert", str(self._cert), "--key", str(self._key)]
        if self._oauth:
            command += ["--oauth", "basic"]
        self._process = spawn(command, dict(os.environ), self.log_path)
        wait_for_port(self._process, self.port, timeout, self.log_path, "Azurite")
        return self

    def stop(self) -> None:
        """Stop Azurite (with a `location`, it can start again with its queues intact)."""
        if self._process is not None:
            stop_process(self._process, timeout=10)
        self._process = None

    def close(self) -> None:
        """Stop Azurite and remove its log folder."""
        self.stop()
        self._tmp.cleanup()
