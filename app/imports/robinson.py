"""Robinson list import: postal advertising objections, stored as keyed hashes only (CHANNEL_RULES.md §6).

Each row (name + postal address) is normalised as the ledger normalises print addresses, turned into the same
HMAC a print contact point carries in ``suppression_keys``, and stored in ``robinson_keys``: a suppression of
print marketing that every reader of suppressions reads beside them (migration 0042). Nothing of the list is kept
in clear. Then every known print address that matches is moved to
``objected`` (trigger ``robinson_match``) in the ledger; addresses added later are suppressed by the stored keys.

The file is streamed: rows are parsed and copied to a temporary table in batches, so memory stays flat for any
list size. The import is one transaction (all or nothing) and idempotent: importing the same list again adds
nothing and records no new events. A row that cannot be read (too long, a quote never closed, a NUL character)
is that row's error like any other; a body beyond the operator's limit is refused whole (413), nothing taken.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.model import ActorType, ObjectionKind, Trigger
from app.imports import repository
from app.imports.csvstream import CsvError, LineError, records
from app.imports.limits import BodyLimitReached, too_large
from app.imports.robinson_rows import NAME_COLUMNS, Columns, Row, RowBatches, RowsDone
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
_ALIASES = {
    "strasse": "street",
    "straße": "street",
    "hausnummer": "house_number",
    "hausnr": "house_number",
    "plz": "postcode",
    "postleitzahl": "postcode",
    "zip": "postcode",
    "ort": "city",
    "stadt": "city",
    "land": "country",
    "vorname": "first_name",
    "nachname": "last_name",
}


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
    chunks: AsyncIterator[bytes],
    *,
    actor: Actor,
    source: str,
    progress: Callable[[int], None] | None = None,
    workers: int = 1,
) -> RobinsonReport:
    """Stream ``chunks`` (CSV bytes) into the workspace's Robinson suppressions and match known addresses.

    ``progress`` is called with the byte count of each chunk read (the CLI's progress bar). ``workers``: how many
    worker processes normalise and hash the rows of a list longer than one batch (1: none, all in this process;
    on 2 cores shared with the database and other load they cost more than they gained, docs/benchmarks.md).
    Runs in the caller's transaction.
    """
    report = RobinsonReport()
    started = time.perf_counter()
    driver = await repository.new_keys_table(session)
    try:
        await _stream_keys(driver, keys, chunks, report, progress, workers=workers)
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
    *,
    workers: int,
) -> None:
    """Parse, normalise and hash every row, copying the keys to ``robinson_import`` in batches.

    This process reads the rows; beyond the first batch, ``workers`` worker processes normalise and hash the
    batches (:class:`RowBatches`) while it reads on and copies the keys of the batches done, in order.
    """
    batch: list[Row] = []
    columns: Columns | None = None
    batches = RowBatches(workers, keys.peppers)
    try:
        async for line, fields in records(_counted(chunks, progress)):
            if columns is None:
                columns = _header(line, fields)
                continue
            report.rows += 1
            batch.append((line, fields))
            if len(batch) >= BATCH_ROWS:
                await _take(driver, report, await batches.full(batch, columns))
                batch = []
        if columns is None:
            raise InvalidInput("The file is empty: a header line is needed.", code="invalid_csv")
        await _take(driver, report, await batches.last(batch, columns))
    finally:
        batches.close()


async def _counted(chunks: AsyncIterator[bytes], progress: Callable[[int], None] | None) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        if progress is not None:
            progress(len(chunk))
        yield chunk


async def _take(driver: Any, report: RobinsonReport, results: list[RowsDone]) -> None:
    """Count the batches' rows, report their errors, copy their keys."""
    for done in results:
        report.accepted += done.accepted
        for line, code, message in done.rejected:
            _reject(report, line, code, message)
        if done.keys:
            await repository.copy_keys(driver, done.keys)


def _header(line: int, fields: list[str] | LineError) -> Columns:
    """The header's columns by name, and how many it has."""
    if isinstance(fields, LineError):
        raise InvalidInput(f"The header (line {line}) cannot be read: {fields.message}", code="invalid_csv")
    names = [_ALIASES.get(name.strip().lower(), name.strip().lower()) for name in fields]
    columns = {name: index for index, name in enumerate(names)}
    missing = [name for name in ("street", "postcode", "city") if name not in columns]
    if missing or not any(name in columns for name in NAME_COLUMNS):
        raise InvalidInput(
            "The header needs the columns street, postcode, city and name (or first_name and last_name); "
            f"house_number and country are optional. Found: {', '.join(names)}.",
            code="invalid_csv_header",
        )
    return Columns(columns, len(fields))


def _reject(report: RobinsonReport, line: int, code: str, message: str) -> None:
    report.rejected += 1
    if len(report.errors) < MAX_REPORTED_ERRORS:
        report.errors.append(RowError(line, code, message))


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
