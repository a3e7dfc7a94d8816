"""Robinson list import: postal advertising objections, stored as keyed hashes only (CHANNEL_RULES.md §6).

Each row (name + postal address) is normalised as the ledger normalises print addresses, turned into the same
HMAC a print contact point carries in ``suppression_keys``, and stored in ``robinson_keys``: a suppression of
print marketing that every reader of suppressions reads beside them (migration 0042). Nothing of the list is kept
in clear. Then every known print address that matches is moved to
``objected`` (trigger ``robinson_match``) in the ledger; addresses added later are suppressed by the stored keys.

The file is streamed: rows are parsed and copied to a temporary table in batches, so memory stays flat for any
list size. A list file given to the CLI is read by worker processes, each its own share of the file
(:mod:`app.imports.robinson_split`); a body that arrives over HTTP is read in this process, the same way. The
import is one transaction (all or nothing) and idempotent: importing the same list again adds nothing and records
no new events. A row that cannot be read (too long, a quote never closed, a NUL character) is that row's error
like any other; a body beyond the operator's limit is refused whole (413), nothing taken.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.model import ActorType, ObjectionKind, Trigger
from app.imports import repository, robinson_split
from app.imports.csvstream import CsvError, RecordReader
from app.imports.limits import BodyLimitReached, too_large
from app.imports.robinson_rows import KeyMaker, KeysDone
from app.imports.robinson_split import header
from app.ledger import repository as ledger
from app.ledger.models import ContactPoint
from app.ledger.service import Actor, Change, lock_consents_of, record_batch
from app.lib.errors import InvalidInput
from app.lib.keys import Keys

log = structlog.get_logger(__name__)

BATCH_ROWS = 5_000
MAX_REPORTED_ERRORS = 100
MAX_REPORTED_MATCHES = 10_000
_MATCH_BATCH = 2_000


@dataclass(slots=True)
class RowError:
    """Why one line was not taken."""

    line: int
    code: str
    message: str


@dataclass(slots=True)
class Match:
    """A known contact whose postal address is on the list."""

    contact_id: uuid.UUID
    external_id: str | None
    contact_point_id: uuid.UUID


@dataclass(slots=True)
class RobinsonReport:
    """What an import did."""

    rows: int = 0
    accepted: int = 0
    rejected: int = 0
    new_entries: int = 0
    matched: int = 0
    matches: list[Match] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)


async def import_robinson(
    session: AsyncSession,
    keys: Keys,
    workspace_id: uuid.UUID,
    chunks: AsyncIterator[bytes] | Path,
    *,
    actor: Actor,
    source: str,
    progress: Callable[[int], None] | None = None,
    workers: int = 1,
) -> RobinsonReport:
    """Read ``chunks`` (CSV bytes, or a file) into the workspace's Robinson suppressions and match known addresses.

    ``progress`` is called with the byte count of each part read (the CLI's progress bar). ``workers``: for a
    file, how many worker processes read a share of it each (:mod:`app.imports.robinson_split`); a body that
    arrives in chunks (the HTTP import) is read in this process. Runs in the caller's transaction.
    """
    report = RobinsonReport()
    started = time.perf_counter()
    driver = await repository.new_keys_table(session)
    try:
        shares = None
        if isinstance(chunks, Path):
            shares = await robinson_split.read_shares(driver, keys.peppers, chunks, progress, workers=workers)
        if shares is not None:
            for done, lines_before in shares:
                add_done(report, done, lines_before)
        else:
            body = robinson_split.file_chunks(chunks) if isinstance(chunks, Path) else chunks
            await _stream_keys(driver, keys, body, report, progress)
    except CsvError as exc:
        raise InvalidInput(str(exc), code="invalid_csv") from None
    except BodyLimitReached as exc:
        raise too_large(
            exc.limit, "Reading stopped there; nothing of the list was imported (all or nothing)."
        ) from None
    streamed = time.perf_counter()
    await repository.analyze_keys(session)
    report.new_entries = await ledger.add_robinson_keys_from_table(session, workspace_id, repository.KEYS_TABLE)
    suppressed = time.perf_counter()
    await _match(session, workspace_id, report, actor=actor, source=source)
    log.info(
        "robinson_import",
        seconds_reading=round(streamed - started, 2),
        seconds_suppressing=round(suppressed - streamed, 2),
        seconds_matching=round(time.perf_counter() - suppressed, 2),
        workspace_id=str(workspace_id),
        rows=report.rows,
        accepted=report.accepted,
        rejected=report.rejected,
        new_entries=report.new_entries,
        matched=report.matched,
    )
    return report


async def _stream_keys(
    driver: Any,
    keys: Keys,
    chunks: AsyncIterator[bytes],
    report: RobinsonReport,
    progress: Callable[[int], None] | None,
) -> None:
    """Parse, normalise and hash every row in this process, copying the keys to ``robinson_import`` in batches."""
    reader = RecordReader()
    maker: KeyMaker | None = None
    done = KeysDone(MAX_REPORTED_ERRORS)
    async for chunk in chunks:
        if progress is not None:
            progress(len(chunk))
        found = reader.feed(chunk)
        if maker is None and found:
            maker = KeyMaker(header(*found[0]), keys.peppers)
            found = found[1:]
        if maker is not None:
            maker.take(found, done)
        if len(done.data) >= BATCH_ROWS:
            await repository.copy_key_rows(driver, done.data)
            done.data.clear()
    found = reader.finish()
    if maker is None:
        if not found:
            raise InvalidInput("The file is empty: a header line is needed.", code="invalid_csv")
        maker = KeyMaker(header(*found[0]), keys.peppers)
        found = found[1:]
    maker.take(found, done)
    if done.data:
        await repository.copy_key_rows(driver, done.data)
    add_done(report, done, 0)


def add_done(report: RobinsonReport, done: KeysDone, lines_before: int) -> None:
    """Count rows read apart (in this process, or in a worker whose share began after ``lines_before`` lines)."""
    report.rows += done.rows
    report.accepted += done.accepted
    report.rejected += done.rejected
    room = MAX_REPORTED_ERRORS - len(report.errors)
    report.errors += [RowError(line + lines_before, code, message) for line, code, message in done.errors[:room]]


async def _match(
    session: AsyncSession, workspace_id: uuid.UUID, report: RobinsonReport, *, actor: Actor, source: str
) -> None:
    """Record ``robinson_match`` for every known print address on the list that is not objected yet."""
    point_ids = await ledger.unobjected_print_points_in_table(session, workspace_id, repository.KEYS_TABLE)
    evidence = {"kind": ObjectionKind.ROBINSON.value, "scope": "print", "source": source}
    points: list[ContactPoint] = []
    for start in range(0, len(point_ids), _MATCH_BATCH):
        found = await ledger.contact_points_by_id(session, [workspace_id], point_ids[start : start + _MATCH_BATCH])
        points += found.values()
    points.sort(key=lambda point: point.id)  # the matches chained and reported in id order, as the ledger locks
    changes = [Change(point, None, Trigger.ROBINSON_MATCH, evidence) for point in points]
    # Every consent row the matches move, locked before the first batch locks the chain head: the batches run in
    # this one transaction, and a later batch locking consents while the head is held would invert the ledger's
    # lock order (consents, then the head) against any other writer.
    await lock_consents_of(session, workspace_id, changes)
    for start in range(0, len(changes), _MATCH_BATCH):
        chosen = changes[start : start + _MATCH_BATCH]
        applied = await record_batch(session, workspace_id, chosen, actor)
        external = await ledger.external_ids(session, workspace_id, [c.contact_point.contact_id for c in chosen])
        for change, result in zip(chosen, applied, strict=True):
            if result.event_id is None:
                continue
            point = change.contact_point
            report.matched += 1
            if len(report.matches) < MAX_REPORTED_MATCHES:
                report.matches.append(Match(point.contact_id, external.get(point.contact_id), point.id))


SYSTEM_IMPORT = Actor(ActorType.SYSTEM, "robinson_import")
