"""Dev adapters and print: deliveries as JSON files (no account needed), print as daily batches or print-house jobs.

- :class:`FileDropAdapter` writes one file per delivery to ``<outbox>/<channel>/`` (SMS, WhatsApp, push).
- :class:`PrintBatchAdapter` appends each letter to ``<folder>/print-YYYY-MM-DD.jsonl``: the daily batch file a
  print house collects.
- :class:`PrintHouseAdapter` posts each letter as a JSON job to the print house's HTTPS endpoint, with the
  delivery id as ``Idempotency-Key`` (a retried post is the same job).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import httpx
import structlog

from channel_providers._http import UNREACHED, json_or_none, unreached
from channel_providers.base import Outbound, Outcome, SendResult, outcome_for_status

log = structlog.get_logger(__name__)


class FileDropAdapter:
    """One JSON file per delivery; the file name is the delivery id (a repeat overwrites, never duplicates)."""

    provider = "dev_outbox"
    """The provider a report names (``group_by=provider``): the development outbox folder."""

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

    provider = "print_batch"
    """The provider a report names (``group_by=provider``): the daily batch file a print house collects."""

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
        with locked_batch(path) as fh:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return path


@contextlib.contextmanager
def locked_batch(path: Path) -> Iterator[TextIO]:
    """The batch file opened for appending and reading, under the folder's lock (an erasure rewrites batches).

    The lock is a file of its own (``.lock``), not the batch: a rewrite replaces the batch file, and a writer
    waiting on the old file's lock would append to a file no longer there. Every process writing or rewriting
    batches in the folder takes it (``flock``), the print adapter of each worker process included.
    """
    with (path.parent / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with path.open("a+", encoding="utf-8") as fh:
                yield fh
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


_MAX_JOB_ID = 200
_ACCEPTED = (409,)  # Conflict: the print house has a job with this Idempotency-Key (an earlier attempt got through)


class PrintHouseAdapter:
    """Posts letters to a print house's job endpoint (``Authorization: Bearer``, no redirects followed).

    The URL is the tenant's: the service passes its outbound guard as ``transport`` (public addresses only, the
    connection to the checked address, a capped answer). An answer's body is never kept beyond the job id.
    """

    provider = "print_house"
    """The provider a report names (``group_by=provider``)."""

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        timeout: float = 15.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url
        self.token = token
        self.timeout = timeout
        """Seconds for the request as a whole, and for each of its steps."""
        self.transport = transport
        self._client: httpx.AsyncClient | None = None

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def send(self, outbound: Outbound) -> SendResult:
        """Create the job; a 409 means the print house already has it (an earlier attempt got through)."""
        if self._client is None or self._client.is_closed:
            self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False, transport=self.transport)
        job = {
            "id": outbound.id,
            "template": outbound.content.get("template"),
            "variables": outbound.content.get("variables") or {},
            "address": {k: v for k, v in outbound.details.items() if k not in ("address_key", "name_key")},
        }
        headers = {"Idempotency-Key": outbound.id}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            async with asyncio.timeout(self.timeout):
                response = await self._client.post(self.url, json=job, headers=headers)
            status = response.status_code
            body = json_or_none(response)
        except UNREACHED as exc:
            return unreached(exc)
        outcome = outcome_for_status(status, accepted=_ACCEPTED)
        if outcome is Outcome.ACCEPTED:
            # the print house's own job id, kept as an opaque short string
            job_id = str(body["id"])[:_MAX_JOB_ID] if isinstance(body, dict) and body.get("id") else outbound.id
            return SendResult(outcome, provider_message_id=job_id)
        return SendResult(outcome, error_code=str(status), detail=f"HTTP {status}")
