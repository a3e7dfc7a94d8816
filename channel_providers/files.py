"""Dev adapters: deliveries written as JSON files to a local folder (no account needed); print as daily batches.

- :class:`FileDropAdapter` writes one file per delivery to ``<outbox>/<channel>/`` (SMS, WhatsApp, push).
- :class:`PrintBatchAdapter` appends each letter to ``<folder>/print-YYYY-MM-DD.jsonl``: the daily batch file a
  print house collects.
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import structlog

from channel_providers.base import Outbound, Outcome, SendResult

log = structlog.get_logger(__name__)


class FileDropAdapter:
    """One JSON file per delivery; the file name is the delivery id (a repeat overwrites, never duplicates)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def send(self, outbound: Outbound) -> SendResult:
        """Write the delivery atomically."""
        record: dict[str, object] = {
            "id": outbound.id,
            "channel": outbound.channel,
            "to": outbound.to,
            "from": outbound.sender,
            "content": outbound.content,
            "written_at": datetime.now(UTC).isoformat(),
        }
        path = await asyncio.to_thread(self._write, outbound.id, record)
        log.info("delivery_written_to_outbox", channel=outbound.channel, path=str(path))
        return SendResult(Outcome.ACCEPTED, provider_message_id=f"file:{path.name}")

    def _write(self, name: str, record: dict[str, object]) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.folder / f"{name}.json"
        temporary = final.with_suffix(".tmp")
        temporary.write_text(json.dumps(record, ensure_ascii=False, indent=2))
        temporary.replace(final)
        return final


class PrintBatchAdapter:
    """Appends letters to the day's batch file (one JSON line each, flushed and synced before answering)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = asyncio.Lock()

    async def send(self, outbound: Outbound) -> SendResult:
        """Add the letter to today's batch."""
        record = {
            "id": outbound.id,
            "address": {k: v for k, v in outbound.details.items() if k not in ("address_key", "name_key")},
            "template": outbound.content.get("template"),
            "variables": outbound.content.get("variables") or {},
        }
        async with self._lock:
            path = await asyncio.to_thread(self._append, record)
        return SendResult(Outcome.ACCEPTED, provider_message_id=f"batch:{path.name}:{outbound.id}")

    def _append(self, record: dict[str, object]) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"print-{datetime.now(UTC):%Y-%m-%d}.jsonl"
        with path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return path
