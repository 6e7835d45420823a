import asyncio
import io
import logging
import os

from router.sources.stdin import StdInputSource


async def collect(source: StdInputSource, stopping: asyncio.Event) -> list:
    received = []

    async def submit(message):
        received.append(message)

    await asyncio.wait_for(source.run(submit, stopping, logging.getLogger("test")), 5)
    return received


async def test_reads_lines_from_a_pipe_until_eof():
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b'{"message_type": "A"}\n\n  \n{"message_type": "B"}')
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as stream:
        messages = await collect(StdInputSource("stdin", stream), asyncio.Event())
    assert [m.body for m in messages] == [b'{"message_type": "A"}', b'{"message_type": "B"}']
    assert all(m.source == "stdin" for m in messages)
    # identities are distinct per line, and scoped to this read of the stream
    session = messages[0].native_id.split(":")[0]
    assert [m.native_id for m in messages] == [f"{session}:1", f"{session}:4"]
    other = await collect(
        StdInputSource("stdin", io.BytesIO(b'{"message_type": "A"}\n')), asyncio.Event()
    )
    assert other[0].native_id != messages[0].native_id


async def test_stop_returns_even_while_the_read_blocks():
    read_fd, write_fd = os.pipe()
    stopping = asyncio.Event()
    with os.fdopen(read_fd, "rb") as stream:
        task = asyncio.create_task(collect(StdInputSource("stdin", stream), stopping))
        await asyncio.sleep(0.1)
        assert not task.done()
        stopping.set()
        assert await asyncio.wait_for(task, 2) == []
    os.close(write_fd)
