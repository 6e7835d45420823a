"""Standard input: one JSON message per line, until end of file."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import BinaryIO, Literal

from router.message import Message
from router.sources.base import Logger, Source, SourceConfig, Submit, wait_or_stop

_EOF = b""


class StdInputConfig(SourceConfig):
    """Read messages from the router's standard input, one JSON object per line."""

    publisher_type: Literal["StdInput"]

    def default_name(self) -> str:
        """`stdin`."""
        return "stdin"

    def build(self) -> StdInputSource:
        """A source reading this process's standard input."""
        return StdInputSource(self.source_name)


class StdInputSource(Source):
    """Reads lines from a binary stream in a daemon thread, so a blocked read never stalls
    shutdown. stdin has no acknowledgement and no dead letter: the runtime logs rejects."""

    kind = "StdInput"

    def __init__(self, name: str, stream: BinaryIO | None = None) -> None:
        super().__init__(name)
        self._stream = stream
        # Identity of each line: this read of the stream plus the line number. A retry
        # within this run reuses it; a later run with the same input makes new runs.
        self._session = uuid.uuid4().hex[:12]

    async def run(self, submit: Submit, stopping: asyncio.Event, logger: Logger) -> None:
        """Submit each non-blank line until end of file or until `stopping` is set."""
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1)
        stream = self._stream or sys.stdin.buffer
        threading.Thread(
            target=_read_lines, args=(stream, lines, loop), name=f"{self.name}-reader", daemon=True
        ).start()
        line_number = 0
        while True:
            got = await wait_or_stop(lines.get(), stopping)
            if got is None or got == _EOF:
                return
            line_number += 1
            body = got.strip()
            if not body:
                continue
            await submit(
                Message(source=self.name, body=body, native_id=f"{self._session}:{line_number}")
            )


def _read_lines(
    stream: BinaryIO, lines: asyncio.Queue[bytes], loop: asyncio.AbstractEventLoop
) -> None:
    for line in _lines(stream):
        put = lines.put(line)
        try:
            asyncio.run_coroutine_threadsafe(put, loop).result()
        except RuntimeError:  # the loop has closed: the router has gone
            put.close()
            return
        except concurrent.futures.CancelledError:  # the loop shut down while we waited
            return
        if line == _EOF:
            return


def _lines(stream: BinaryIO) -> Iterator[bytes]:
    """Lines of `stream`, then _EOF. A real file descriptor is read with os.read, so this
    thread never holds the buffered reader's lock that interpreter shutdown needs."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError, AttributeError):
        fd = None
    if fd is None:
        yield from iter(stream.readline, _EOF)
        yield _EOF
        return
    pending = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            chunk = _EOF
        if not chunk:
            if pending:
                yield pending
            yield _EOF
            return
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line + b"\n"
