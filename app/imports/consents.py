"""Importing consents collected elsewhere (a former tool, a CRM), each with its original proof.

Lines come as NDJSON or CSV, streamed in constant memory, and are recorded through :func:`record_batch` (the
ledger's rules, written set-based: a few statements per batch) as ``import`` events dated when the consent was
captured (DESIGN.md: "an import never overrides a later opt-out or
objection"). Rules, per line:

- opt-ins need proof: when (``captured_at``), how (``source``), and the text the person agreed to (``notice_id``,
  or ``notice_text``, kept as a notice version of its own);
- an opt-in for an address on a do-not-contact list (unsubscribe, complaint, erasure, objection) is not taken
  (CHANNEL_RULES.md §8 X2, X5: check suppression first, never lift it silently);
- a line older than what the ledger already holds for that consent changes nothing, so importing the same file
  again records nothing new (idempotent), and a later withdrawal always stands;
- push permissions come from the devices, not from files; print lines record objections (channel-level).

Lines are taken in batches of :data:`BATCH`, each in a transaction of its own, so a long import does not hold
the workspace's ledger for its whole length. A line that is wrong is reported and the others are taken; after a
fix, the whole file can be imported again. That holds for lines that cannot even be read too (longer than
:data:`~app.imports.csvstream.MAX_LINE_BYTES`, a CSV quote never closed, a NUL character): each is its line's
error, never the whole import's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import msgspec
import structlog
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.gate import is_suppressed
from app.domain.identifiers import InvalidIdentifier, normalise_email, normalise_phone, valid_external_id
from app.domain.model import (
    WITHDRAWN_STATES,
    Channel,
    PurposeKind,
    State,
    SuppressionScope,
    Trigger,
    VerifiedVia,
)
from app.eligibility.repository import consent_ends, lifecycle_policy
from app.imports.csvstream import (
    NUL_IN_LINE,
    CsvError,
    LineError,
    LineSplitter,
    records,
    too_many_fields,
)
from app.imports.limits import BodyLimitReached, too_large
from app.ledger import repository
from app.ledger.actions import postal_details, print_value
from app.ledger.models import Contact
from app.ledger.reassigned import PHONE_CHANNELS, check_date, reassign
from app.ledger.schemas import ContactRef, Evidence, PostalAddressIn
from app.ledger.service import Actor, Applied, Change, PointRef, apply_changes, record_batch
from app.lib.errors import InvalidInput, answered_as, raced, unhandled_problem
from app.lib.ids import opaque_id, parse_uuid
from app.lib.inputs import NUMERIC_DATETIME, datetime_shape, json_has_nul, numeric_datetime
from app.lib.keys import Keys
from app.lib.orm import utcnow
from app.purposes import repository as purposes
from app.purposes.models import Notice, Purpose
from app.purposes.service import newest_or_new
from app.workspaces.service import settings_of
from app.workspaces.settings import WorkspaceSettings, known_time_zone

log = structlog.get_logger(__name__)

#: Lines per transaction.
BATCH = 2_000
#: Problems listed in the report (all are counted).
MAX_PROBLEMS = 1_000
#: A consent captured later than this ahead of our clock is refused (clock skew allowance).
FUTURE_SKEW = timedelta(minutes=5)
_IMPORTABLE_CHANNELS = (Channel.EMAIL, Channel.SMS, Channel.WHATSAPP, Channel.PRINT)


class ImportLine(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One consent to import (an NDJSON line; CSV has the same names as columns, evidence and postal fields flat)."""

    contact: ContactRef
    channel: Channel
    address: Annotated[str, msgspec.Meta(min_length=1, max_length=320)] | None = None
    postal_address: PostalAddressIn | None = None
    purpose: Annotated[str, msgspec.Meta(min_length=1, max_length=63)] | None = None
    state: Literal["opted_in", "opted_out", "declined", "objected"]
    captured_at: datetime
    source: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    notice_id: uuid.UUID | None = None
    notice_text: Annotated[str, msgspec.Meta(min_length=1, max_length=20000)] | None = None
    locale: Annotated[str, msgspec.Meta(pattern=r"^[a-z]{2,3}(-[A-Z]{2})?$")] | None = None
    timezone: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    evidence: Evidence = msgspec.field(default_factory=Evidence)
    #: sms/whatsapp: the number went to someone else then (:mod:`app.ledger.reassigned`, applied before the batch).
    reassigned_at: datetime | None = None

    def __post_init__(self) -> None:
        """An unknown time zone rejects the line here, not the dispatcher's batch at send time."""
        if self.timezone is not None and not known_time_zone(self.timezone):
            msg = f"timezone is not an IANA time zone such as Europe/Berlin (got {self.timezone!r})"
            raise ValueError(msg)


_EVIDENCE_COLUMNS = frozenset(Evidence.__struct_fields__)
_POSTAL_COLUMNS = frozenset(PostalAddressIn.__struct_fields__)
#: The columns a CSV import may have: a line's fields, with the evidence and the postal address flat.
CSV_COLUMNS = (
    (frozenset(ImportLine.__struct_fields__) - {"evidence", "postal_address"}) | _EVIDENCE_COLUMNS | _POSTAL_COLUMNS
)


class LineRejected(Exception):  # an outcome, not a failure
    """The line cannot be taken as it stands; ``code`` is stable, the message says what to fix."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(slots=True)
class RowProblem:
    """A line that was not recorded: ``rejected`` (fix it) or ``skipped`` (nothing to do)."""

    line: int
    outcome: Literal["rejected", "skipped"]
    code: str
    message: str


@dataclass(slots=True)
class ImportReport:
    """What the import did."""

    lines: int = 0
    recorded: int = 0
    skipped: int = 0
    rejected: int = 0
    contacts_created: int = 0
    problems: list[RowProblem] = field(default_factory=list)
    problems_truncated: bool = False
    expired: int = 0
    """Recorded opt-ins already past their purpose's end: recorded, then ended at once (:func:`_end_lapsed`)."""

    def add(self, problem: RowProblem) -> None:
        """Count a line that was not recorded; list it while the list is short.

        Once the list is full, a line to fix (``rejected``) takes the place of the last listed line with nothing to
        do (``skipped``): importing a file again skips every line, and the few wrong ones must still show.
        """
        if problem.outcome == "rejected":
            self.rejected += 1
        else:
            self.skipped += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)
            return
        self.problems_truncated = True
        if problem.outcome == "rejected":
            for index in range(len(self.problems) - 1, -1, -1):
                if self.problems[index].outcome == "skipped":
                    del self.problems[index]
                    self.problems.append(problem)  # lines come in order: the list stays in the file's order
                    return


async def ndjson_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[int, ImportLine | LineRejected]]:
    """``(line number, line or why it is unreadable)`` for every non-empty NDJSON line."""
    splitter = LineSplitter()
    async for chunk in chunks:
        for number, raw in splitter.feed(chunk):
            if isinstance(raw, LineError) or raw.strip():
                yield number, _decode_json(raw)
    for number, raw in splitter.finish():
        if isinstance(raw, LineError) or raw.strip():
            yield number, _decode_json(raw)


def _decode_json(raw: bytes | LineError) -> ImportLine | LineRejected:
    if isinstance(raw, LineError):
        return LineRejected(raw.code, raw.message)
    if b"\0" in raw or json_has_nul(raw):  # PostgreSQL cannot store it: this line's error, not the batch's
        return LineRejected(NUL_IN_LINE.code, NUL_IN_LINE.message)
    try:
        return msgspec.json.decode(raw, type=ImportLine)
    except msgspec.ValidationError as exc:
        return LineRejected("invalid_line", str(exc))
    except msgspec.DecodeError as exc:
        return LineRejected("malformed_json", f"Not a JSON object: {exc}")
    except UnicodeDecodeError as exc:  # msgspec's own error for bytes that are not UTF-8 inside a string
        return LineRejected("malformed_json", f"Not UTF-8 (byte {exc.start} of the line): JSON text is UTF-8.")


async def csv_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[int, ImportLine | LineRejected]]:
    """``(line number, line or why it is unreadable)`` for every CSV record after the header."""
    header: list[str] | None = None
    async for number, fields in records(chunks):
        if header is None:
            if isinstance(fields, LineError):
                raise CsvError(f"The header (line {number}) cannot be read: {fields.message}")
            header = [name.strip().lower() for name in fields]
            missing = {"contact", "channel", "state", "captured_at", "source"} - set(header)
            if missing:
                raise CsvError(f"The header lacks the column(s) {', '.join(sorted(missing))} (line {number}).")
            unknown = set(header) - CSV_COLUMNS
            if unknown:
                raise CsvError(
                    f"Unknown column(s) {', '.join(sorted(unknown))} (line {number}); "
                    f"known: {', '.join(sorted(CSV_COLUMNS))}."
                )
            continue
        if isinstance(fields, LineError):
            yield number, LineRejected(fields.code, fields.message)
        elif any(field.strip() for field in fields[len(header) :]):
            extra = too_many_fields(len(fields), len(header))
            yield number, LineRejected(extra.code, extra.message)
        else:
            yield number, _from_csv(dict(zip(header, (f.strip() for f in fields), strict=False)))


def _from_csv(row: Mapping[str, str]) -> ImportLine | LineRejected:
    given = {name: value for name, value in row.items() if value}
    line: dict[str, Any] = {
        name: value for name, value in given.items() if name not in _EVIDENCE_COLUMNS | _POSTAL_COLUMNS
    }
    line["evidence"] = {name: value for name, value in given.items() if name in _EVIDENCE_COLUMNS}
    postal = {name: value for name, value in given.items() if name in _POSTAL_COLUMNS}
    if postal:
        line["postal_address"] = postal
    # every field is text, so the lax rules are needed (numbers, booleans); they would also read "5" as a date-time
    # of 1970 (an NDJSON line's number is refused by its strict decoding)
    dated_by_number = numeric_datetime(datetime_shape(ImportLine), line)
    if dated_by_number is not None:
        return LineRejected("invalid_line", f"{NUMERIC_DATETIME} - at `$.{dated_by_number}`")
    try:
        return msgspec.convert(line, ImportLine, strict=False)
    except msgspec.ValidationError as exc:
        return LineRejected("invalid_line", str(exc))


@dataclass(slots=True)
class _Context:
    """What every line of one import draws on, looked up once."""

    workspace_id: uuid.UUID
    settings: WorkspaceSettings
    keys: Keys
    actor: Actor
    now: datetime
    purposes: dict[str, Purpose | None] = field(default_factory=dict)
    notices: dict[tuple[uuid.UUID, str, str, str], Notice] = field(
        default_factory=dict
    )  # purpose, locale, text, channel


async def import_consents(
    session: AsyncSession,
    keys: Keys,
    workspace_id: uuid.UUID,
    lines: AsyncIterator[tuple[int, ImportLine | LineRejected]],
    *,
    actor: Actor,
    progress: Callable[[ImportReport], None] | None = None,
) -> ImportReport:
    """Take every line it can, in batches of :data:`BATCH` (a transaction each); report the others.

    A body cut at the operator's limit (:class:`BodyLimitReached`) answers 413 saying which lines were taken
    (``lines_taken_through``, ``recorded``): the batches committed before stay, the one being read is dropped. So
    does an unreadable CSV line (422), and any database failure of a batch: a race with another writer that still
    refused it after it was taken again (:func:`_take_again_if_raced`; 503 ``database_busy``, 409 ``contact_merged``
    or ``deleted_meanwhile``), the database out of reach (503) or any other error of it (500, a statement timeout),
    each with its status and code as :func:`app.lib.errors.unhandled_problem` gives them (logged there). Other
    exceptions (the framework's, a client gone mid-body) are the framework's to answer, as for any request.
    ``progress`` is called with the report so far after each batch (the CLI's progress bar).
    """
    report = ImportReport()
    async with session.begin():
        context = _Context(workspace_id, await settings_of(session, workspace_id), keys, actor, utcnow())
    batch: list[tuple[int, ImportLine | LineRejected]] = []
    taken_through = 0  # the last line of the last batch committed
    try:
        async for item in lines:
            report.lines += 1
            batch.append(item)
            if len(batch) >= BATCH:
                await _take_again_if_raced(session, context, batch, report)
                taken_through, batch = batch[-1][0], []
                if progress is not None:
                    progress(report)
        if batch:
            await _take_again_if_raced(session, context, batch, report)
            if progress is not None:
                progress(report)
    except CsvError as exc:
        done, taken = _stopped(taken_through, report, batch, fix=True)
        raise InvalidInput(f"{exc} {done}", code="invalid_csv", extra=taken) from None
    except BodyLimitReached as exc:
        done = (
            f"Reading stopped there; lines 1 to {taken_through} were taken ({report.recorded} recorded), nothing "
            "after them."
            if taken_through
            else "Reading stopped there; nothing was recorded."
        )
        raise too_large(exc.limit, done, {"lines_taken_through": taken_through, "recorded": report.recorded}) from None
    except (DBAPIError, OSError) as exc:  # a batch failed in the database: its answer, with what was done before
        answer = unhandled_problem(exc)  # logged there
        done, taken = _stopped(taken_through, report, batch, fix=False)
        first = batch[0][0] if batch else taken_through + 1
        why = _STOPPED_BY.get(answer.code, answer.detail)
        raise answered_as(answer, f"The import stopped at the batch from line {first}: {why} {done}", taken) from exc
    return report


#: Why a batch failed, by the code :func:`app.lib.errors.unhandled_problem` gives its exception.
_STOPPED_BY = {
    "database_busy": "the database aborted its transaction for concurrent writes (a deadlock, a serialization "
    "failure or a lock wait that ran out), three times.",
    "contact_merged": "a contact it names was merged into another while it ran, three times.",
    "deleted_meanwhile": "a record it names was deleted by another request while it ran (an erasure), three times.",
    "database_unavailable": "the database could not be reached.",
    "internal_error": "the database failed on it (logged, with the request id for a request).",
}


def _stopped(
    taken_through: int, report: ImportReport, batch: Sequence[tuple[int, ImportLine | LineRejected]], *, fix: bool
) -> tuple[str, dict[str, int]]:
    """What an import cut short says it did, and the body's fields for it.

    The lines of the batches committed before (``lines_taken_through``) and their events (``recorded``); a number
    reassignment of the batch that did not commit may have been applied (each commits before its batch,
    :func:`_reassign_numbers`), which importing it again leaves as it is. ``fix``: a line is to be fixed first.
    """
    reassigning = any(isinstance(line, ImportLine) and line.reassigned_at for _, line in batch)
    first = batch[0][0] if batch else taken_through + 1
    applied = (
        f" (number reassignments on line {first} and later may have been applied; importing them again changes nothing)"
        if reassigning
        else ""
    )
    taken = {"lines_taken_through": taken_through, "recorded": report.recorded}
    fixed = "fix that line and " if fix else ""
    if not taken_through:
        return f"No line was recorded{applied}: {fixed}import the file again.", taken
    done = (
        f"Lines 1 to {taken_through} were taken ({report.recorded} recorded), nothing after them{applied}: "
        f"{fixed}import the rest again (or the whole file: lines already recorded record nothing again)."
    )
    return done, taken


#: Tries of a batch a race refused (:func:`_take_again_if_raced`).
_BATCH_ATTEMPTS = 3


async def _take_again_if_raced(
    session: AsyncSession, context: _Context, batch: list[tuple[int, ImportLine | LineRejected]], report: ImportReport
) -> None:
    """:func:`_take`, again (up to twice more) when a race with another writer refused the batch's transaction.

    The transaction wrote nothing: a merge of a contact the batch names committed while it ran (the ledger refuses
    rows for a merged contact, migration 0031: read again, its lines go to the survivor), PostgreSQL broke a deadlock
    with another writer or a lock wait ran out, or an erasure of a row it names committed meanwhile
    (:func:`app.lib.errors.raced`). A batch is idempotent, so taking it again is safe; a third refusal stands.
    """
    counted = (report.recorded, report.contacts_created, report.expired)
    for attempt in range(1, _BATCH_ATTEMPTS + 1):
        try:
            await _take(session, context, batch, report)
        except DBAPIError as exc:
            if attempt == _BATCH_ATTEMPTS or not raced(exc):
                raise
            log.info("import_batch_taken_again_after_a_race", attempt=attempt, first_line=batch[0][0])
            report.recorded, report.contacts_created, report.expired = counted
            # what the rolled-back transaction read or made (a notice version) is not to be taken from the cache
            context.purposes.clear()
            context.notices.clear()
        else:
            return


async def _take(
    session: AsyncSession, context: _Context, batch: list[tuple[int, ImportLine | LineRejected]], report: ImportReport
) -> None:
    """One batch in one transaction, set-based.

    Lines checked, what they name read with a query per kind, new contacts and addresses inserted with a statement
    per kind, then everything recorded by :func:`record_batch` (one pass over the chain, a few statements).
    """
    problems: list[RowProblem] = []
    reassigned = await _reassign_numbers(session, context, batch)
    async with session.begin():
        prepared: list[_PreparedLine] = []
        for number, line in batch:
            try:
                if isinstance(line, LineRejected):
                    raise line
                prepared.append(await _prepare(session, context, number, line))
            except LineRejected as refused:
                problems.append(RowProblem(number, "rejected", refused.code, refused.message))
        prepared = reassigned.keep(prepared, problems)
        found = await _Found.of(session, context.workspace_id, prepared)
        planned = _plan_lines(found, prepared, problems)
        report.contacts_created += await found.create(session, context.workspace_id)
        changes: list[tuple[int, Change]] = []
        for item in planned:
            try:
                changes.append((item.number, item.change(found.point(item))))
            except LineRejected as refused:  # another writer took the address meanwhile
                problems.append(RowProblem(item.number, "rejected", refused.code, refused.message))
        applied = await record_batch(session, context.workspace_id, [c for _, c in changes], context.actor)
        for (number, change), outcome in zip(changes, applied, strict=True):
            if outcome.event_id is not None:
                report.recorded += 1
            else:
                problems.append(_not_recorded(number, change, outcome))
        report.expired += await _end_lapsed(session, context, [c for _, c in changes], applied)
    for each in sorted(problems, key=lambda p: p.line):  # in the order of the file
        report.add(each)


def _plan_lines(found: _Found, prepared: Sequence[_PreparedLine], problems: list[RowProblem]) -> list[_PreparedLine]:
    """The lines to record, their contacts and addresses planned in the order of the file; the others reported."""
    planned: list[_PreparedLine] = []
    for item in prepared:
        if item.target is State.OPTED_IN and found.suppressed(item):
            problems.append(RowProblem(item.number, "skipped", "suppressed", SUPPRESSED))
            continue
        try:
            found.plan(item)
        except LineRejected as refused:
            problems.append(RowProblem(item.number, "rejected", refused.code, refused.message))
            continue
        planned.append(item)
    return planned


async def _end_lapsed(
    session: AsyncSession, context: _Context, changes: Sequence[Change], applied: Sequence[Applied]
) -> int:
    """End at once the recorded opt-ins whose purpose's validity or inactivity is over (issue 19, E11).

    Recorded, then ended: the import keeps its proof of the consent as given, and ``validity_ended`` at the end
    instant says when it lapsed, with the same evidence the sweep records (:mod:`app.lifecycle.service`).
    """
    by_id = {p.id: p for p in context.purposes.values() if p is not None}
    ending: list[tuple[Change, Applied, Purpose]] = []
    for change, outcome in zip(changes, applied, strict=True):
        purpose = by_id.get(change.purpose_id) if change.purpose_id else None
        if outcome.event_id is not None and outcome.to_state is State.OPTED_IN and purpose is not None:
            ending.append((change, outcome, purpose))
    policies = {p.id: lifecycle_policy(p.validity, p.inactivity) for _, _, p in ending}
    ending = [e for e in ending if policies[e[2].id].ends]
    if not ending:
        return 0
    tz = context.settings.timezone
    now = utcnow()
    given = [change.occurred_at or now for change, _, _ in ending]
    computed = await consent_ends(
        session,
        context.workspace_id,
        [
            (change.contact_point.id, at, purpose.validity, purpose.inactivity)
            for (change, _, purpose), at in zip(ending, given, strict=True)
        ],
        tz,
    )
    ends: list[Change] = []
    for (change, outcome, purpose), given_at, found in zip(ending, given, computed, strict=True):
        end, last = found.end, found.engaged_at
        if end is None or end.at > now:
            continue
        evidence = {
            "rule": end.rule,
            "validity": purpose.validity,
            "inactivity": purpose.inactivity,
            "timezone": tz,
            "given_at": given_at.isoformat(),
            "given_event_id": str(outcome.event_id),
            "last_engagement": last.isoformat() if last else None,
            "ended_at": end.at.isoformat(),
            "on": "import",
        }
        ends.append(Change(change.contact_point, purpose.id, Trigger.VALIDITY_ENDED, evidence, occurred_at=end.at))
    done = await apply_changes(session, context.workspace_id, ends, context.actor, skip_not_allowed=True)
    return sum(1 for a in done if a.event_id is not None)


def _not_recorded(number: int, change: Change, outcome: Applied) -> RowProblem:
    if outcome.from_state is change.target:
        code, message = "already_recorded", "The ledger holds this state from this time or later: nothing new."
    elif outcome.from_state in WITHDRAWN_STATES:
        code, message = (
            "later_withdrawal_stands",
            f"A later '{outcome.from_state}' stands; the import does not undo it.",
        )
    else:
        code, message = "later_change_stands", f"A later change to '{outcome.from_state}' stands."
    return RowProblem(number, "skipped", code, message)


SUPPRESSED = (
    "The address is on the do-not-contact list (unsubscribe, complaint, erasure or objection); an imported opt-in "
    "does not lift that. Only a fresh opt-in by the person can."
)


@dataclass(slots=True)  # not frozen: made once per line, only read (a frozen one costs a setattr call per field)
class _PreparedLine:
    """A line that passed every check that needs no contact or address: what it will record, once resolved."""

    number: int
    line: ImportLine
    channel: Channel
    target: State
    purpose: Purpose | None
    notice: Notice | None
    value: str
    details: dict[str, Any] | None
    keys: tuple[bytes, ...]

    def change(self, point: PointRef) -> Change:
        """The ledger change of this line for its address."""
        line = self.line
        evidence = {**line.evidence.as_dict(), "source": line.source, "collection_method": f"import:{line.source}"}
        return Change(
            point,
            self.purpose.id if self.purpose else None,
            Trigger.IMPORT,
            evidence,
            notice=self.notice,
            # within the clock-skew allowance a time ahead of ours is taken as now: a consent dated in the future
            # would make every real event until then look older than it
            occurred_at=min(line.captured_at.astimezone(UTC), utcnow()),
            target=self.target,
        )


async def _prepare(session: AsyncSession, context: _Context, number: int, line: ImportLine) -> _PreparedLine:
    """Every check of the line that needs no contact or address (purposes and notices are looked up once)."""
    channel = line.channel
    if channel not in _IMPORTABLE_CHANNELS:
        raise LineRejected(
            "channel_not_importable",
            f"{channel} permissions come from the devices: report them through /v1/push, not in an import.",
        )
    if line.captured_at.tzinfo is None:
        raise LineRejected("invalid_captured_at", "'captured_at' needs a time zone (RFC 3339, e.g. …T10:00:00Z).")
    try:
        line.captured_at.astimezone(UTC)
    except OverflowError:
        raise LineRejected("invalid_captured_at", "'captured_at' lies outside the calendar.") from None
    if line.captured_at > context.now + FUTURE_SKEW:
        raise LineRejected("invalid_captured_at", "'captured_at' lies in the future.")
    target = State(line.state)
    purpose = await _purpose(session, context, line, channel, target)
    value, details = _address(line, channel, context.settings)  # before the notice: a text may add a version
    notice = await _notice(session, context, line, channel, purpose) if target is State.OPTED_IN else None
    keys = tuple(context.keys.point_keys(channel.value, value, details or {}))
    return _PreparedLine(number, line, channel, target, purpose, notice, value, details, keys)


@dataclass(frozen=True, slots=True)
class _Point:
    """An address as the ledger needs it (:class:`app.ledger.service.PointRef`)."""

    id: uuid.UUID
    contact_id: uuid.UUID
    channel: str


@dataclass(slots=True)
class _Found:
    """The contacts, addresses and suppressions a batch names, read with one query each; what it adds, planned.

    :meth:`plan` decides, line by line in the order of the file, which contact and address each line records for
    (creating none yet); :meth:`create` inserts the new ones with one statement per kind; :meth:`point` answers
    each planned line's address.
    """

    contacts: dict[str, uuid.UUID]
    """A line's ``contact`` (id or external id) → the contact's id (a merged duplicate's: its survivor's)."""
    points: dict[tuple[str, str], tuple[uuid.UUID, uuid.UUID]]
    """``(channel, value)`` → ``(address id, contact id)``, known or planned."""
    suppressions: set[tuple[bytes, SuppressionScope, uuid.UUID | None]]
    new_contacts: dict[str, repository.NewContact] = field(default_factory=dict)
    new_points: dict[tuple[str, str], repository.NewPoint] = field(default_factory=dict)

    @classmethod
    async def of(cls, session: AsyncSession, workspace_id: uuid.UUID, batch: Sequence[_PreparedLine]) -> _Found:
        """What ``batch`` names, as it stands now."""
        refs = {item.line.contact for item in batch}
        contacts: dict[str, uuid.UUID] = {}
        if refs:
            rows = await repository.contacts_by_refs(session, workspace_id, refs)

            def live(row: Contact) -> uuid.UUID:  # a merged duplicate's line goes to its survivor
                return row.merged_into if row.merged_into is not None else row.id

            by_external_id = {row.external_id: live(row) for row in rows}
            by_id = {row.id: live(row) for row in rows}
            for ref in refs:  # as find_contact: an id (in any spelling uuid takes) wins over an external id
                as_id = parse_uuid(ref)
                if as_id is not None and as_id in by_id:
                    contacts[ref] = by_id[as_id]
                elif ref in by_external_id:
                    contacts[ref] = by_external_id[ref]
        points = await repository.points_by_values(
            session, workspace_id, {(item.channel.value, item.value) for item in batch}
        )
        keys = {key for item in batch if item.target is State.OPTED_IN for key in item.keys}
        suppressions: set[tuple[bytes, SuppressionScope, uuid.UUID | None]] = set()
        if keys:
            suppressions = await repository.suppressions_with_keys(session, workspace_id, keys)
        return cls(contacts, points, suppressions)

    def suppressed(self, item: _PreparedLine) -> bool:
        """Whether a suppression stops marketing to the line's address for its purpose (the send gate's rule)."""
        if not self.suppressions:  # the batch names no suppressed key (the common case)
            return False
        purpose_id = item.purpose.id if item.purpose else None
        scopes = {
            scope
            for key in item.keys
            for suppressed, scope, named in self.suppressions
            if key == suppressed and (scope is not SuppressionScope.PURPOSE or named == purpose_id)
        }
        return is_suppressed(scopes, PurposeKind.MARKETING)  # an imported opt-in is for a marketing purpose

    def plan(self, item: _PreparedLine) -> None:
        """Decide the line's contact and address, planning them where new; nothing is written.

        A line that is refused plans nothing; what is planned holds for the rest of the batch, as if written.
        """
        line = item.line
        contact_id = self.contacts.get(line.contact)
        held = self.points.get((item.channel.value, item.value))
        if held is not None:
            if contact_id is None or held[1] != contact_id:
                raise LineRejected("address_of_another_contact", "This address belongs to another contact.")
            return
        if contact_id is None:
            if parse_uuid(line.contact) is not None:
                raise LineRejected("contact_not_found", "No contact with this id (an unknown external id is created).")
            if not valid_external_id(line.contact):
                raise LineRejected(
                    "invalid_external_id",
                    "An external id has no '/' or control characters and is not '.' or '..' (it names the contact "
                    "in URLs).",
                )
            contact = repository.NewContact(opaque_id(), line.contact, line.locale, line.timezone)
            self.new_contacts[line.contact] = contact
            self.contacts[line.contact] = contact_id = contact.id
        point = repository.NewPoint(
            opaque_id(),
            contact_id,
            item.channel.value,
            item.value,
            msgspec.json.encode(item.details or {}).decode(),
            list(item.keys),
        )
        self.new_points[point.channel, point.value] = point
        self.points[point.channel, point.value] = (point.id, contact_id)

    async def create(self, session: AsyncSession, workspace_id: uuid.UUID) -> int:
        """Insert the planned contacts and addresses (one statement each); answers how many contacts were new.

        Another writer may have added the same external id or address meanwhile: theirs is taken (a planned
        address of a contact someone else created goes to that contact), and :meth:`point` compares owners. A new
        contact left without any address that way is deleted again and not counted.
        """
        # in one order every writer shares (an import naming the same new keys in another order waits, never
        # deadlocks: each INSERT … ON CONFLICT waits on the rows another transaction inserted first)
        contacts = sorted(self.new_contacts.values(), key=lambda c: c.external_id)
        ids = await repository.insert_contacts(session, workspace_id, contacts)
        moved = {c.id: ids[c.external_id] for c in self.new_contacts.values() if ids[c.external_id] != c.id}
        for ref, contact_id in self.contacts.items():
            self.contacts[ref] = moved.get(contact_id, contact_id)
        points = [
            dataclasses.replace(p, contact_id=moved.get(p.contact_id, p.contact_id))
            for _, p in sorted(self.new_points.items())
        ]
        written = await repository.insert_points(session, workspace_id, points, verified=VerifiedVia.API)
        self.points |= written
        # a new contact whose every new address another writer added first (under another contact) has none: its
        # lines are rejected (:meth:`point`), and it goes with them rather than stay behind, counted, without one
        made = {c.id for c in self.new_contacts.values() if c.id not in moved}
        bare = made - {contact_id for _, contact_id in written.values()}
        gone = await repository.delete_contacts_without_points(session, workspace_id, bare)
        return len(made) - len(gone)

    def point(self, item: _PreparedLine) -> _Point:
        """The planned line's address, as written."""
        point_id, contact_id = self.points[item.channel.value, item.value]
        if contact_id != self.contacts[item.line.contact]:
            raise LineRejected("address_of_another_contact", "This address belongs to another contact.")
        return _Point(point_id, contact_id, item.channel.value)


async def _purpose(
    session: AsyncSession, context: _Context, line: ImportLine, channel: Channel, target: State
) -> Purpose | None:
    if channel is Channel.PRINT:
        if target is not State.OBJECTED:
            raise LineRejected(
                "state_not_importable", "Print needs no opt-in: a print line records an objection ('objected')."
            )
        if line.purpose is not None:
            raise LineRejected("purpose_not_allowed", "A print objection holds for every purpose: leave 'purpose' out.")
        return None
    if target is State.OBJECTED:
        raise LineRejected(
            "state_not_importable", f"'objected' is for print; on {channel} an objection is 'opted_out'."
        )
    if line.purpose is None:
        raise LineRejected("purpose_required", f"The line has no purpose: every {channel} consent needs one.")
    if line.purpose not in context.purposes:
        context.purposes[line.purpose] = await purposes.get_by_key(session, context.workspace_id, line.purpose)
    purpose = context.purposes[line.purpose]
    if purpose is None:
        raise LineRejected("purpose_not_found", f"No purpose with key '{line.purpose}'.")
    if purpose.kind != PurposeKind.MARKETING:
        raise LineRejected("purpose_not_consent_based", f"'{purpose.key}' is transactional and needs no consent.")
    return purpose


async def _notice(
    session: AsyncSession, context: _Context, line: ImportLine, channel: Channel, purpose: Purpose | None
) -> Notice:
    """The notice an imported opt-in rests on: the one named, or a version holding the text given."""
    assert purpose is not None
    if line.notice_id is not None:
        notice = await purposes.get_notice(session, context.workspace_id, line.notice_id)
        if notice is None:
            raise LineRejected("notice_not_found", "No notice with this id.")
        if notice.purpose_id != purpose.id or channel.value not in notice.channels:
            raise LineRejected("notice_mismatch", f"The notice is not for '{purpose.key}' on {channel}.")
        return notice
    if line.notice_text is None:
        raise LineRejected(
            "notice_required", "An opt-in needs the text the person agreed to: 'notice_id' or 'notice_text'."
        )
    locale = line.locale or context.settings.locale
    key = (purpose.id, locale, line.notice_text, channel.value)
    if key not in context.notices:
        context.notices[key] = await _notice_with_text(session, purpose, channel, locale, line.notice_text)
    return context.notices[key]


async def _notice_with_text(
    session: AsyncSession, purpose: Purpose, channel: Channel, locale: str, text: str
) -> Notice:
    """A notice version of the purpose holding exactly this text for this channel: found, or added."""
    digest = hashlib.sha256(text.encode()).hexdigest()
    for notice in await purposes.notices_with_text(session, purpose.workspace_id, purpose.id, locale, digest):
        if channel.value in notice.channels:
            return notice
    notice, _ = await newest_or_new(session, purpose, channels=[channel.value], locale=locale, text=text)
    return notice


def _address(line: ImportLine, channel: Channel, settings: WorkspaceSettings) -> tuple[str, dict[str, Any] | None]:
    try:
        if channel is Channel.PRINT:
            given = line.postal_address
            if given is None:
                raise LineRejected("postal_address_required", "A print line needs the postal address.")
            address = given.normalised()
            return print_value(address), postal_details(address)
        if line.address is None:
            raise LineRejected("address_required", f"A {channel} line needs the address.")
        if channel is Channel.EMAIL:
            return normalise_email(line.address), None
        return normalise_phone(line.address, settings.default_region), None
    except InvalidIdentifier as exc:
        raise LineRejected(exc.code, exc.message) from None


@dataclass(slots=True)
class _Reassigned:
    """The numbers a batch reports as reassigned (E.164 → latest date), and its lines refused for that."""

    dates: dict[str, datetime] = field(default_factory=dict)
    refused: dict[int, RowProblem] = field(default_factory=dict)

    def keep(self, batch: list[_PreparedLine], problems: list[RowProblem]) -> list[_PreparedLine]:
        """The lines to record: not those refused, nor an opt-in for such a number captured before its date."""
        kept = []
        for item in batch:
            before = self.dates.get(item.value) if item.channel in PHONE_CHANNELS else None
            if item.number in self.refused:
                problems.append(self.refused[item.number])
            elif before is not None and item.target is State.OPTED_IN and item.line.captured_at < before:
                problems.append(RowProblem(item.number, "skipped", "before_reassignment", BEFORE_REASSIGNMENT))
            else:
                kept.append(item)
        return kept


async def _reassign_numbers(
    session: AsyncSession, context: _Context, batch: Sequence[tuple[int, ImportLine | LineRejected]]
) -> _Reassigned:
    """Lines with ``reassigned_at``: the number's former owner's consents end, as the API's report does.

    Only for a line that passes every other check (a refused line changes nothing; the batch reports it). Each in
    a transaction of its own before the batch's, as one writer locks consents, then the chain head, once; the
    batch's opt-ins of the new owner are recorded after it.
    """
    found = _Reassigned()
    for number, line in batch:
        if isinstance(line, LineRejected) or line.reassigned_at is None:
            continue
        try:
            if line.channel not in PHONE_CHANNELS:
                raise InvalidInput(NOT_A_NUMBER)  # noqa: TRY301  # one refusal for every reason
            when = check_date(line.reassigned_at, context.now)
        except InvalidInput as refused:
            found.refused[number] = RowProblem(number, "rejected", "invalid_reassigned_at", refused.detail)
            continue
        async with session.begin():
            try:
                item = await _prepare(session, context, number, line)
            except LineRejected:
                continue
            held = await repository.contact_points_with_values(session, context.workspace_id, [item.value])
            if not any(
                p.channel in PHONE_CHANNELS and line.contact in (p.contact_external_id, str(p.contact_id)) for p in held
            ):  # as the API's report: a line naming another contact (a typo, a stranger) ends nobody's consents
                found.refused[number] = RowProblem(number, "rejected", "number_not_held", NUMBER_NOT_HELD)
                continue
            evidence = {**line.evidence.as_dict(), "source": line.source, "import_line": number}
            await reassign(
                session, context.keys, context.workspace_id, item.value, when, evidence=evidence, actor=context.actor
            )
        found.dates[item.value] = max(when, found.dates.get(item.value, when))
    return found


NOT_A_NUMBER = "'reassigned_at' is for sms and whatsapp numbers."
NUMBER_NOT_HELD = (
    "'reassigned_at': the line's contact holds this number neither for SMS nor for WhatsApp, so nothing was ended."
)
BEFORE_REASSIGNMENT = (
    "The opt-in was captured before the number went to someone else ('reassigned_at'): it was the former owner's."
)
