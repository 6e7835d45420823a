"""Start and stop a throwaway Prefect server, work pool and worker on free loopback ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
WORK_POOL = "event-router-pool"
PREFECT = [sys.executable, "-m", "prefect"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrefectServer:
    """`prefect server start` in its own PREFECT_HOME (SQLite unless `database_url` is given)."""

    def __init__(
        self,
        *,
        home: Path | None = None,
        port: int | None = None,
        database_url: str | None = None,
        services: bool = False,
        ui: bool = False,
    ) -> None:
        self._tmp = None if home else tempfile.TemporaryDirectory(prefix="prefect-home-")
        self.home = home or Path(self._tmp.name)  # type: ignore[union-attr]
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        self.ui_url = f"http://127.0.0.1:{self.port}"
        self._database_url = database_url
        self._services = services
        self._ui = ui
        self._process: subprocess.Popen[bytes] | None = None
        self.log_path = self.home / "server.log"
        self.home.mkdir(parents=True, exist_ok=True)

    def client_env(self) -> dict[str, str]:
        """Environment for a Prefect client process talking to this server."""
        env = dict(os.environ)
        env.pop("PREFECT_API_URI", None)
        env.update(
            PREFECT_API_URL=self.url,
            PREFECT_HOME=str(self.home),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_CLI_PROMPT="false",
        )
        return env

    def start(self, timeout: float = 90.0) -> PrefectServer:
        """Start the server and wait until its health check answers."""
        env = self.client_env()
        env.pop("PREFECT_API_URL")
        env.update(
            PREFECT_SERVER_UI_ENABLED=str(self._ui).lower(),
            PREFECT_SERVER_LOGGING_LEVEL="WARNING",
        )
        if self._database_url:
            env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = self._database_url
        command = [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(self.port)]
        if not self._services:
            command.append("--no-services")
        self._process = spawn(command, env, self.log_path)
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float) -> None:
        """Wait for /api/health, failing with the server's log if it does not come up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(
            f"Prefect server on port {self.port} did not start:\n"
            + self.log_path.read_text()[-3000:]
        )

    def kill(self) -> None:
        """SIGKILL the server, as a crash would (start() brings it back on the same database)."""
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, 9)
            self._process.wait()
        self._process = None

    def stop(self) -> None:
        """Stop the server (it can be started again on the same port and database)."""
        if self._process is not None:
            stop_process(self._process)
        self._process = None

    def close(self) -> None:
        """Stop the server and remove its home."""
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def prefect(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a `prefect` CLI command against this server from the project root."""
        return subprocess.run(
            [*PREFECT, *args],
            env=self.client_env(),
            cwd=PROJECT_ROOT,
            check=check,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )

    def deploy_examples(self) -> None:
        """Create the process work pool and `prefect deploy` every deployment in prefect.yaml."""
        self.prefect("work-pool", "create", WORK_POOL, "--type", "process", "--overwrite")
        result = self.prefect("--no-prompt", "deploy", "--all", check=False)
        if result.returncode != 0:
            raise RuntimeError(f"prefect deploy failed:\n{result.stdout}\n{result.stderr}")

    def start_worker(
        self, log_path: Path | None = None, work_queue: str | None = None, **env: str
    ) -> subprocess.Popen[bytes]:
        """A process worker on the example pool (or one of its work queues) that polls every
        second, with `env` added to its environment."""
        env = {**self.client_env(), **env}
        env.update(PREFECT_WORKER_QUERY_SECONDS="1", PREFECT_WORKER_PREFETCH_SECONDS="5")
        command = [*PREFECT, "worker", "start", "--pool", WORK_POOL]
        if work_queue:
            command += ["--work-queue", work_queue]
        return spawn(command, env, log_path or self.home / "worker.log")


def spawn(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start `command` from the project root in its own process group, logging to `log_path`."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            command,
            env=env,
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def stop_process(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM a process group started with start_new_session, then SIGKILL it if it lingers."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, 15)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait()


def wait_for_port(
    process: subprocess.Popen[bytes], port: int, timeout: float, log_path: Path, what: str
) -> None:
    """Wait until something accepts connections on 127.0.0.1:`port`, or fail with the log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not start:\n{log_path.read_text()[-3000:]}")
