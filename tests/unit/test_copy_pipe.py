"""The pipe between a COPY and the client: gathering, holding back, and a reader that goes away."""

from __future__ import annotations

import asyncio

import pytest

from app.lib.copystream import PIECE, QUEUE, ClientGone, Pipe


async def _finished() -> None:
    return None


async def test_small_pieces_are_gathered_and_the_rest_follows_at_the_end():
    pipe = Pipe()
    writer = asyncio.create_task(_finished())
    for _ in range(3):
        await pipe.write(b"x" * (PIECE // 2 + 1))
    await pipe.close_writing()
    await writer
    pieces = []
    while (piece := await pipe.read(writer)) is not None:
        pieces.append(piece)
    assert [len(p) for p in pieces] == [2 * (PIECE // 2 + 1), PIECE // 2 + 1]


async def test_a_full_pipe_holds_the_writer_until_the_reader_takes_a_piece():
    pipe = Pipe()
    for _ in range(QUEUE):
        await pipe.write(b"x" * PIECE)
    blocked = asyncio.create_task(pipe.write(b"x" * PIECE))
    await asyncio.sleep(0.05)
    assert not blocked.done()
    assert await pipe.read(blocked) == b"x" * PIECE
    await asyncio.wait_for(blocked, 1)


async def test_a_reader_that_goes_away_stops_a_writer_that_has_finished_its_copy():
    """The end mark must not wait forever for a reader that is gone (it held the response's close)."""
    pipe = Pipe()
    for _ in range(QUEUE):
        await pipe.write(b"x" * PIECE)
    ending = asyncio.create_task(pipe.close_writing())
    await asyncio.sleep(0.05)
    assert not ending.done()
    pipe.gone.set()
    with pytest.raises(ClientGone):
        await asyncio.wait_for(ending, 1)
    with pytest.raises(ClientGone):
        await pipe.write(b"more")


async def test_the_writers_error_reaches_the_reader():
    pipe = Pipe()

    async def failing() -> None:
        raise RuntimeError("the query failed")

    writer = asyncio.create_task(failing())
    with pytest.raises(RuntimeError, match="the query failed"):
        await pipe.read(writer)
