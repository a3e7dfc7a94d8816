"""Outbox files: pruned after their retention, batch lines dropped under the writers' lock."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid

from app.channels import outbox_files
from channel_providers.base import Outbound
from channel_providers.files import PrintBatchAdapter


def test_files_past_the_retention_are_deleted_and_newer_ones_and_the_lock_stay(tmp_path):
    outbox = tmp_path / "outbox"
    old = outbox / "w" / "sms" / "old.json"
    new = outbox / "w" / "sms" / "new.json"
    lock = outbox / "w" / "print" / ".lock"
    for path in (old, new, lock):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    long_ago = time.time() - 31 * 86400
    os.utime(old, (long_ago, long_ago))
    os.utime(lock, (long_ago, long_ago))

    assert outbox_files.prune(outbox, 30) == 1
    assert not old.exists()
    assert new.exists()
    assert lock.exists()
    assert outbox_files.prune(tmp_path / "nothing", 30) == 0


async def test_an_erasure_rewriting_a_batch_loses_no_letter_appended_meanwhile(tmp_path):
    """Letters appended while batch lines are dropped all survive (the writers and the rewrite share one lock)."""
    folder = tmp_path / "outbox" / "w" / "print"
    adapter = PrintBatchAdapter(folder)

    def letter(i: int) -> Outbound:
        return Outbound(id=f"L{i}", channel="print", to="k", content={"template": "t"}, details={"name": f"N{i}"})

    await asyncio.gather(*(adapter.send(letter(i)) for i in range(20)))
    erased = {f"L{i}" for i in range(0, 20, 2)}
    workspace = uuid.uuid4()
    (tmp_path / "outbox" / str(workspace)).symlink_to(tmp_path / "outbox" / "w")

    async def erase() -> int:
        return await asyncio.to_thread(outbox_files.erase, tmp_path / "outbox", workspace, erased, [])

    results = await asyncio.gather(erase(), *(adapter.send(letter(i)) for i in range(20, 60)))
    assert results[0] == 10
    [batch] = folder.glob("print-*.jsonl")
    ids = [json.loads(line)["id"] for line in batch.read_text().splitlines()]
    assert sorted(ids) == sorted({f"L{i}" for i in range(60)} - erased)
