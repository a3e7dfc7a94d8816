"""The files deliveries leave on disk: erased with the person, and deleted after a retention period.

Three kinds, all under ``<CONSENT_DATA_DIR>/outbox/``:

- ``<workspace>/<channel>/<delivery id>.json``: the dev outbox of SMS, WhatsApp and push (one file a delivery);
- ``<workspace>/print/print-YYYY-MM-DD.jsonl``: the daily print batches a print house collects (production too:
  print without a print house endpoint), one JSON line a letter, ``id`` being the delivery id;
- ``email/*.eml``: the dev mail outbox (confirmation and marketing mails of every workspace alike).

An erasure must leave none of the person's data behind (GDPR Art. 17, issue 16 finding 18): :func:`erase` removes
the delivery files and batch lines of the erased contact's deliveries and the ``.eml`` files addressed to its
email addresses. :func:`prune` deletes files older than the retention period (``CONSENT_OUTBOX_RETENTION_DAYS``):
what nobody collected in that time is not kept for ever either. Both are plain blocking file work; callers run
them in a thread.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Collection, Iterator
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from pathlib import Path

from channel_providers.files import locked_batch


def erase(outbox: Path, workspace_id: uuid.UUID, delivery_ids: Collection[str], emails: Collection[str]) -> int:
    """Remove the files and batch lines of these deliveries and the mails to these addresses; the count removed."""
    ids = set(delivery_ids)
    removed = 0
    folder = outbox / str(workspace_id)
    if ids and folder.is_dir():
        for channel in _folders(folder):
            if channel.name == "print":
                removed += sum(_drop_lines(batch, ids) for batch in sorted(channel.glob("print-*.jsonl")))
                continue
            for delivery_id in ids:
                with contextlib.suppress(FileNotFoundError):
                    (channel / f"{delivery_id}.json").unlink()
                    removed += 1
    wanted = {e.lower() for e in emails}
    mail = outbox / "email"
    if wanted and mail.is_dir():
        for path in mail.glob("*.eml"):
            if _recipients(path) & wanted:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed += 1
    return removed


def prune(outbox: Path, older_than_days: int, *, now: float | None = None) -> int:
    """Delete every outbox file last written more than ``older_than_days`` ago; the count deleted."""
    if not outbox.is_dir():
        return 0
    cutoff = (time.time() if now is None else now) - older_than_days * 86400
    deleted = 0
    for path in outbox.rglob("*"):
        if path.name == ".lock":  # the print batches' lock: removing it under a waiting writer would split the lock
            continue
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                deleted += 1
        except FileNotFoundError:  # removed by someone else meanwhile
            continue
    return deleted


def _folders(folder: Path) -> Iterator[Path]:
    return (p for p in folder.iterdir() if p.is_dir())


def _drop_lines(batch: Path, ids: set[str]) -> int:
    """Rewrite a batch file without the letters of ``ids`` (under the lock its writer takes); the count dropped."""
    with locked_batch(batch) as fh:
        fh.seek(0)
        lines = fh.readlines()
        kept = [line for line in lines if _letter_id(line) not in ids]
        dropped = len(lines) - len(kept)
        if dropped:
            temporary = batch.with_name(f".{batch.name}.tmp")
            with temporary.open("w", encoding="utf-8") as out:
                out.writelines(kept)
                out.flush()
                os.fsync(out.fileno())
            temporary.replace(batch)
    return dropped


def _letter_id(line: str) -> str | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return str(record.get("id")) if isinstance(record, dict) else None


def _recipients(path: Path) -> set[str]:
    """The addresses a mail file is to (To, Cc), lower case; unreadable files have none."""
    try:
        with path.open("rb") as fh:
            headers = BytesHeaderParser().parse(fh)
    except OSError:
        return set()
    fields = [str(v) for name in ("To", "Cc") for v in headers.get_all(name, [])]
    return {address.lower() for _, address in getaddresses(fields) if address}
