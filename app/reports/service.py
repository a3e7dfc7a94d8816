"""The aggregator (catch-up, rebuild) and the reports built from the rollups; metrics in docs/reporting.md.

A report first catches its workspace up (the ledger past the watermark, the queued message events), in the
transaction that then reads the rollups: the answer is exact at the time of the request, and no request reads
the ledger's history. Catch-ups of one workspace are serialised by the lock on its watermark.
"""

from __future__ import annotations

import functools
import math
import uuid
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.model import Channel, PurposeKind, State, Trigger
from app.domain.validity import SpanError, policy_of
from app.lib.errors import InvalidInput, NotFound
from app.lib.orm import utcnow
from app.reports import repository

GRANULARITIES = ("hour", "day", "week", "month")
CONSENT_GROUPS = ("channel", "purpose", "source", "trigger", "campaign")
MESSAGE_GROUPS = ("channel", "purpose", "provider", "campaign")
#: The longest range of one report, and of one with hourly buckets (a bounded answer, a bounded read).
MAX_RANGE = timedelta(days=400)
MAX_HOURLY_RANGE = timedelta(days=31)
#: The latest ``to`` a report takes: its buckets end before the year 9999 does (a month bucket ends a month on).
LATEST = datetime(9998, 12, 31, tzinfo=UTC)
DEFAULT_RANGE = timedelta(days=30)
#: Ledger events per statement of a catch-up, and queued message events per statement.
LEDGER_CHUNK = 250_000
MESSAGE_BATCH = 50_000

CONSENT_METRICS = (
    "events",
    "signups",
    "confirmations",
    "confirmations_with_scanner_signal",
    "opt_ins",
    "opt_outs",
    "opt_outs_unsubscribe_page",
    "opt_outs_one_click",
    "opt_outs_preference_centre",
    "opt_outs_api",
    "declined",
    "lapsed",
    "expired",
    "objections",
    "objections_personal",
    "objections_sticker",
    "objections_art21",
    "robinson_matches",
    "erasures",
    "push_granted",
    "push_denied",
    "push_revoked",
    "push_token_gone",
    "opted_in_exits",
    "net_growth",
    "opted_in_total",
    "eligible_total",
    "suppressions_total",
    "suppressions_added",
    "confirmation_rate",
    "time_to_confirm_p50_s",
    "time_to_confirm_p90_s",
)
MESSAGE_METRICS = (
    "accepted",
    "sent",
    "delivered",
    "failed",
    "bounced",
    "failed_transient",
    "complaints",
    "blocked_at_send",
    "no_eligible_channel",
    "waiting_for_send_window",
    "outcome_unknown",
    "opened",
    "clicked",
    "converted",
    "opened_by_scanner",
    "clicked_by_scanner",
    "opt_outs_caused",
    "latency_p50_ms",
    "latency_p99_ms",
)
#: message outcome (``report_message_counts.outcome``) → the counters it adds to
_CONSENT_COUNTERS = CONSENT_METRICS[: CONSENT_METRICS.index("opted_in_total")]
_MESSAGE_COUNTERS = MESSAGE_METRICS[: MESSAGE_METRICS.index("latency_p50_ms")]
_OUTCOMES: Mapping[str, tuple[str, ...]] = {
    "queued": ("accepted",),
    "sent": ("sent",),
    "delivered": ("delivered",),
    "failed": ("failed",),
    "bounced": ("failed", "bounced"),
    "retry_scheduled": ("failed_transient",),
    "complaint": ("complaints",),
    "blocked_at_send": ("blocked_at_send",),
    "no_eligible_channel": ("no_eligible_channel",),
    "waiting_for_send_window": ("waiting_for_send_window",),
    "unknown": ("outcome_unknown",),  # a provider call in flight when its worker died (messages, after 0017)
    # engagement signals (issue 20): each recorded once per message; a mail scanner's open or click apart
    "opened": ("opened",),
    "clicked": ("clicked",),
    "converted": ("converted",),
    "opened_by_scanner": ("opened_by_scanner",),
    "clicked_by_scanner": ("clicked_by_scanner",),
    "opt_out": ("opt_outs_caused",),  # from the ledger: an opt-out attributed to a message (link, STOP after it)
}


@dataclass(frozen=True, slots=True)
class Counted:
    """What a catch-up (or rebuild) added to the rollups."""

    ledger_events: int
    message_events: int


async def catch_up(session: AsyncSession, workspace_id: uuid.UUID) -> Counted:
    """Count what the workspace's ledger and message history gained since the last catch-up (caller commits)."""
    await repository.without_jit(session)
    if not await repository.workspace_exists(session, workspace_id):
        raise NotFound(f"No workspace {workspace_id}.", code="workspace_not_found")
    low = await repository.lock_watermark(session, workspace_id)
    head = await repository.ledger_head(session, workspace_id)
    ledger = 0
    while low < head:
        high = min(low + LEDGER_CHUNK, head)
        await repository.count_ledger(session, workspace_id, low, high)
        ledger, low = ledger + high - low, high
    messages = 0
    while taken := await repository.count_messages(session, workspace_id, MESSAGE_BATCH):
        messages += taken
    return Counted(ledger, messages)


async def rebuild(session: AsyncSession, workspace_id: uuid.UUID) -> Counted:
    """Count the workspace's whole ledger and message history again into its rollups (caller commits).

    The rollups then hold exactly what the count found: rows that differ are replaced, missing ones added, others
    deleted.
    """
    if not await repository.workspace_exists(session, workspace_id):
        raise NotFound(f"No workspace {workspace_id}.", code="workspace_not_found")
    await repository.for_a_rebuild(session)
    await repository.lock_watermark(session, workspace_id)
    head = await repository.ledger_head(session, workspace_id)
    return Counted(head, await repository.rebuild(session, workspace_id, head))


#: How often the standing snapshot of a workspace is taken again (the day keeps its last one): the audience
#: count of each purpose, about 1-3 s per purpose at a million contacts.
STANDING_INTERVAL = timedelta(minutes=15)


async def take_standing(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    now: datetime | None = None,
    *,
    push_services: tuple[str, ...] | None,
) -> int:
    """Count the workspace's eligible addresses and suppressions in force now, as its snapshot for today (UTC).

    Eligible: per purpose and channel, the addresses the send gate permits (the audience export's rows, with the
    purpose's validity and inactivity), zeros included. Suppressions: per channel (and purpose, where scoped to one),
    every channel present. Replaces the snapshot taken earlier the same day; returns the rows written.
    ``push_services``: the operator's (``CONSENT_WEB_PUSH_SERVICES``): a web push endpoint off them is not counted,
    as the export leaves it out.
    """
    now = now or utcnow()
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    await repository.lock_standing(session, workspace_id)  # one snapshot of a workspace at a time (its own already)
    rows: list[tuple[str, str, uuid.UUID | None, int]] = []
    for purpose in await repository.standing_purposes(session, workspace_id):
        try:
            policy = policy_of(purpose.validity, purpose.inactivity)
        except SpanError:  # a hand-edited row only (the API and the check constraints refuse it)
            continue
        counts = await repository.eligible_counts(
            session, workspace_id, purpose.id, PurposeKind(purpose.kind), policy, push_services=push_services
        )
        rows += [("eligible_total", channel.value, purpose.id, counts.get(channel.value, 0)) for channel in Channel]
    suppressed = {(c.value, None): (0, 0) for c in Channel}
    for row in await repository.suppressions_in_force(session, workspace_id, day=day, now=now):
        suppressed[row.channel, row.purpose_id] = (int(row.total), int(row.added))
    for (channel, purpose_id), (total, added) in suppressed.items():
        rows += [("suppressions_total", channel, purpose_id, total), ("suppressions_added", channel, purpose_id, added)]
    await repository.replace_standing(session, workspace_id, day=day, taken_at=now, rows=rows)
    return len(rows)


def _due(now: datetime) -> tuple[datetime, datetime]:
    """A snapshot is due again once :data:`STANDING_INTERVAL` old, or at once on a new UTC day: (stale, midnight)."""
    return now - STANDING_INTERVAL, now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


async def standing_due(session: AsyncSession, now: datetime | None = None, limit: int = 100) -> list[uuid.UUID]:
    """Workspaces whose snapshot is due (:func:`_due`), the longest waiting first."""
    stale, midnight = _due(now or utcnow())
    return await repository.standing_due(session, stale=stale, midnight=midnight, limit=limit)


async def take_standing_if_due(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    now: datetime | None = None,
    *,
    push_services: tuple[str, ...] | None,
) -> bool:
    """Take the workspace's snapshot unless another process holds it or has just taken it (caller commits)."""
    now = now or utcnow()
    if not await repository.try_lock_standing(session, workspace_id):
        return False
    stale, midnight = _due(now)
    if not await repository.standing_due(session, stale=stale, midnight=midnight, limit=1, only=workspace_id):
        return False
    await take_standing(session, workspace_id, now, push_services=push_services)
    return True


async def workspaces(session: AsyncSession) -> Sequence[uuid.UUID]:
    """Every workspace there is something to count for."""
    return await repository.workspaces_to_count(session)


# --- the query ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReportQuery:
    """A checked report request: a range of whole hours in UTC, buckets, groups and filters."""

    start: datetime
    end: datetime
    granularity: str
    group_by: tuple[str, ...]
    channels: tuple[str, ...]
    purposes: tuple[str, ...]
    campaigns: tuple[str, ...] = ()


def _whole_hour(name: str, value: datetime) -> datetime:
    if value.tzinfo is None:
        raise InvalidInput(
            f"'{name}' needs a time zone (RFC 3339, e.g. 2026-11-01T00:00:00Z).", code="timezone_required"
        )
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(f"'{name}' is out of range.", code="invalid_range") from None
    if (utc.minute, utc.second, utc.microsecond) != (0, 0, 0):
        raise InvalidInput(f"'{name}' must be a whole hour (the rollups count per hour).", code="invalid_range")
    return utc


def _range(start: datetime | None, end: datetime | None, granularity: str, now: datetime) -> tuple[datetime, datetime]:
    """The report's ``[from, to)`` in UTC, checked; by default the 30 days up to the end of today (or this hour)."""
    if end is not None:
        until = _whole_hour("to", end)
    elif granularity == "hour":  # the end of this hour
        until = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    else:  # the end of today: whole days read the daily rollup
        until = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    since = _whole_hour("from", start) if start is not None else until - DEFAULT_RANGE
    if until <= since:
        raise InvalidInput("'to' must be later than 'from'.", code="invalid_range")
    if until > LATEST:  # the buckets of the last year would run past the calendar (a 500 before)
        raise InvalidInput(f"'to' lies after {LATEST.date().isoformat()}.", code="invalid_range")
    limit = MAX_HOURLY_RANGE if granularity == "hour" else MAX_RANGE
    if until - since > limit:
        raise InvalidInput(
            f"A report with {granularity} buckets covers at most {limit.days} days.", code="range_too_long"
        )
    return since, until


def parse_query(
    *,
    start: datetime | None,
    end: datetime | None,
    granularity: str,
    group_by: str | None,
    channels: Iterable[str],
    purposes: Iterable[str],
    allowed_groups: Sequence[str],
    now: datetime,
    campaigns: Iterable[str] = (),
) -> ReportQuery:
    """Check a request's parameters (422 with a reason for each mistake).

    Default: the 30 days up to the end of today (of this hour for hourly buckets), by day.
    """
    if granularity not in GRANULARITIES:
        raise InvalidInput(f"'granularity' must be one of {', '.join(GRANULARITIES)}.", code="invalid_granularity")
    since, until = _range(start, end, granularity, now)
    groups: list[str] = []
    for raw in (group_by or "").split(","):
        name = raw.strip()
        if not name:
            continue
        if name not in allowed_groups:
            raise InvalidInput(
                f"'group_by' takes {', '.join(allowed_groups)} here; '{name[:40]}' is not one of them.",
                code="invalid_group_by",
            )
        if name not in groups:
            groups.append(name)
    return ReportQuery(
        since,
        until,
        granularity,
        tuple(groups),
        tuple(dict.fromkeys(channels)),
        tuple(purposes),
        tuple(dict.fromkeys(campaigns)),
    )


def buckets(start: datetime, end: datetime, granularity: str) -> list[datetime]:
    """The starts of the buckets that meet [start, end), as PostgreSQL's ``date_trunc`` names them (UTC)."""
    first = _truncate(start, granularity)
    found = []
    current = first
    while current < end:
        found.append(current)
        current = _next(current, granularity)
    return found


def _truncate(moment: datetime, granularity: str) -> datetime:
    moment = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    if granularity == "hour":
        return moment
    moment = moment.replace(hour=0)
    if granularity == "week":
        return moment - timedelta(days=moment.weekday())
    if granularity == "month":
        return moment.replace(day=1)
    return moment


_DECEMBER = 12


def _next(moment: datetime, granularity: str) -> datetime:
    if granularity == "hour":
        return moment + timedelta(hours=1)
    if granularity == "day":
        return moment + timedelta(days=1)
    if granularity == "week":
        return moment + timedelta(days=7)
    return (
        moment.replace(year=moment.year + 1, month=1)
        if moment.month == _DECEMBER
        else moment.replace(month=moment.month + 1)
    )


def percentile(weighted: Iterable[tuple[int, int]], fraction: float) -> int | None:
    """The nearest-rank percentile of values given as (value, count).

    That is the smallest value with at least ``ceil(fraction x total)`` values at or below it.
    """
    pairs = sorted(weighted)
    total = sum(n for _, n in pairs)
    if total == 0:
        return None
    rank = max(1, math.ceil(fraction * total))
    seen = 0
    for value, n in pairs:
        seen += n
        if seen >= rank:
            return value
    return pairs[-1][0]


# --- metrics --------------------------------------------------------------------------------------------------


#: Each consent counter and the events it counts: (trigger, from state, to state, detail) -> counted or not.
_Event = tuple[str, str, str, str | None]
_PENDING_TO_OPTED_IN = (State.PENDING, State.OPTED_IN)
_COUNTS: tuple[tuple[str, Callable[[_Event], bool]], ...] = (
    ("events", lambda _: True),
    ("signups", lambda e: e[0] == Trigger.SIGNUP and e[1] != e[2] and e[2] == State.PENDING),
    (  # the mail's link, or the start word texted to complete a pending SMS/WhatsApp signup
        "confirmations",
        lambda e: e[0] == Trigger.CONFIRM or (e[0] == Trigger.START_WORD and (e[1], e[2]) == _PENDING_TO_OPTED_IN),
    ),
    ("confirmations_with_scanner_signal", lambda e: e[0] == Trigger.CONFIRM and e[3] == "scanner_signal"),
    ("opt_ins", lambda e: e[2] == State.OPTED_IN and e[1] != e[2]),
    ("opted_in_exits", lambda e: e[1] == State.OPTED_IN and e[1] != e[2]),
    ("opt_outs", lambda e: e[2] == State.OPTED_OUT and e[1] != e[2]),
    (
        "opt_outs_unsubscribe_page",
        lambda e: (
            e[2] == State.OPTED_OUT and e[1] != e[2] and e[0] == Trigger.UNSUBSCRIBE and e[3] == "unsubscribe_page"
        ),
    ),
    (
        "opt_outs_one_click",
        lambda e: (
            e[2] == State.OPTED_OUT and e[1] != e[2] and e[0] == Trigger.UNSUBSCRIBE and e[3] == "rfc8058_one_click"
        ),
    ),
    (
        "opt_outs_preference_centre",
        lambda e: (
            e[2] == State.OPTED_OUT and e[1] != e[2] and e[0] == Trigger.UNSUBSCRIBE and e[3] == "preference_centre"
        ),
    ),
    (
        "opt_outs_api",
        lambda e: e[2] == State.OPTED_OUT and e[1] != e[2] and e[0] == Trigger.UNSUBSCRIBE and e[3] == "api",
    ),
    ("declined", lambda e: e[2] == State.DECLINED and e[1] != e[2]),
    ("lapsed", lambda e: e[0] == Trigger.LAPSE),
    ("expired", lambda e: e[0] == Trigger.VALIDITY_ENDED),
    ("objections", lambda e: e[0] == Trigger.OBJECTION and e[1] != e[2]),
    ("objections_personal", lambda e: e[0] == Trigger.OBJECTION and e[1] != e[2] and e[3] == "personal"),
    ("objections_sticker", lambda e: e[0] == Trigger.OBJECTION and e[1] != e[2] and e[3] == "sticker"),
    ("objections_art21", lambda e: e[0] == Trigger.OBJECTION and e[1] != e[2] and e[3] == "art21"),
    ("robinson_matches", lambda e: e[0] == Trigger.ROBINSON_MATCH and e[1] != e[2]),
    ("erasures", lambda e: e[0] == Trigger.ERASURE),
    ("push_granted", lambda e: e[0] == Trigger.PERMISSION_GRANTED and e[1] != e[2]),
    ("push_denied", lambda e: e[0] == Trigger.PERMISSION_DENIED and e[1] != e[2]),
    ("push_revoked", lambda e: e[0] == Trigger.PERMISSION_REVOKED and e[1] != e[2]),
    ("push_token_gone", lambda e: e[0] in (Trigger.UNINSTALLED, Trigger.PROVIDER_GONE) and e[1] != e[2]),
)


@functools.lru_cache(maxsize=4096)
def consent_metrics_of(trigger: str, from_state: str, to_state: str, detail: str | None) -> tuple[str, ...]:
    """The consent counters one ledger event adds to (docs/reporting.md).

    A repeated request that changes no state (a second STOP) is evidence in the ledger, counted only in ``events``.
    Remembered: a report asks for the same few dozen kinds of event for every one of its thousands of rollup rows.
    """
    event = (trigger, from_state, to_state, detail)
    return tuple(name for name, counts in _COUNTS if counts(event))


Group = tuple[str | None, ...]


@dataclass(frozen=True, slots=True)
class SeriesRow:
    """One bucket of one group."""

    bucket: datetime
    group: dict[str, str | None]
    metrics: dict[str, int | float | None]


def _group_of(row: Any, group_by: Sequence[str], purpose_names: Mapping[uuid.UUID, str]) -> Group:
    values: list[str | None] = []
    for name in group_by:
        value = row.purpose_id if name == "purpose" else getattr(row, name)
        values.append(purpose_names.get(value, str(value)) if name == "purpose" and value is not None else value)
    return tuple(values)


async def _purpose_filter(
    session: AsyncSession, workspace_id: uuid.UUID, keys: Collection[str]
) -> tuple[dict[uuid.UUID, str], list[uuid.UUID]]:
    names = await repository.purpose_keys(session, workspace_id)
    by_key = {key: purpose_id for purpose_id, key in names.items()}
    unknown = [key for key in keys if key not in by_key]
    if unknown:
        raise InvalidInput(f"No purpose '{unknown[0][:63]}' in this workspace.", code="unknown_purpose")
    return names, [by_key[key] for key in keys]


def _standing_applies(query: ReportQuery) -> bool:
    """Standing totals and signup cohorts exist per channel and purpose, not per source, trigger or campaign."""
    return set(query.group_by) <= {"channel", "purpose"} and not query.campaigns


def _consent_counters(
    rows: Iterable[Any], group_by: Sequence[str], names: Mapping[uuid.UUID, str]
) -> dict[tuple[datetime, Group], dict[str, int]]:
    """The consent counters per bucket and group, from the rollup rows (each a kind of event and its count)."""
    counters: dict[tuple[datetime, Group], dict[str, int]] = {}
    for row in rows:
        key = (row.bucket, _group_of(row, group_by, names))
        cell = counters.get(key)
        if cell is None:  # (not setdefault: its default, a dict of every counter, would be built for every row)
            cell = counters[key] = dict.fromkeys(_CONSENT_COUNTERS, 0)
        for metric in consent_metrics_of(row.trigger, row.from_state, row.to_state, row.detail):
            cell[metric] += row.n
    for cell in counters.values():
        cell["net_growth"] = cell["opt_ins"] - cell["opted_in_exits"]
    return counters


async def consent_report(session: AsyncSession, workspace_id: uuid.UUID, query: ReportQuery) -> list[SeriesRow]:
    """The consent metrics per bucket and group, after a catch-up (the caller holds the transaction).

    Grouped by channel and purpose at most, every bucket of every group is answered, with the standing total;
    grouped by source or trigger, only the buckets that counted something.
    """
    await catch_up(session, workspace_id)
    names, purpose_ids = await _purpose_filter(session, workspace_id, query.purposes)
    daily = query.granularity != "hour"  # whole days from the daily rollup, the hours around them from the hourly
    scope = repository.Selection(query.group_by, query.channels, purpose_ids, daily=daily, campaigns=query.campaigns)
    rows = await repository.consent_rows(
        session, workspace_id, scope, start=query.start, end=query.end, granularity=query.granularity
    )
    counters = _consent_counters(rows, query.group_by, names)
    if not _standing_applies(query):
        return [
            SeriesRow(bucket, dict(zip(query.group_by, group, strict=True)), {**cell, **_NO_STANDING})
            for (bucket, group), cell in sorted(counters.items(), key=lambda item: (item[0][0], repr(item[0][1])))
        ]

    baseline: dict[Group, int] = {}
    for row in await repository.opted_in_before(session, workspace_id, scope, before=query.start):
        baseline[_group_of(row, query.group_by, names)] = int(row.total or 0)
    doi: dict[tuple[datetime, Group], list[tuple[int | None, int]]] = defaultdict(list)
    if query.granularity != "hour":
        for row in await repository.doi_rows(
            session, workspace_id, scope, start=query.start, end=query.end, granularity=query.granularity
        ):
            doi[row.bucket, _group_of(row, query.group_by, names)].append((row.confirm_s, row.n))
    standing = await _standing(session, workspace_id, scope, query, names)
    groups = sorted({g for _, g in counters} | set(baseline) | {g for _, g in doi} | {g for _, g in standing}, key=repr)
    series = []
    for group in groups if query.group_by else [()]:
        running = baseline.get(group, 0)
        for bucket in buckets(query.start, query.end, query.granularity):
            metrics: dict[str, int | float | None] = dict(
                counters.get((bucket, group)) or dict.fromkeys(_CONSENT_COUNTERS, 0)
            )
            running += int(metrics["net_growth"] or 0)
            metrics["opted_in_total"] = running
            metrics |= _doi_metrics(doi.get((bucket, group), []) if query.granularity != "hour" else None)
            metrics |= _standing_metrics(standing, bucket, group, query.granularity)
            series.append(SeriesRow(bucket, dict(zip(query.group_by, group, strict=True)), metrics))
    return series


_NO_STANDING: dict[str, int | float | None] = {
    "opted_in_total": None,
    "eligible_total": None,
    "suppressions_total": None,
    "suppressions_added": None,
    "confirmation_rate": None,
    "time_to_confirm_p50_s": None,
    "time_to_confirm_p90_s": None,
}


_STANDING_METRICS = ("eligible_total", "suppressions_total", "suppressions_added")


async def _standing(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    scope: repository.Selection,
    query: ReportQuery,
    names: Mapping[uuid.UUID, str],
) -> dict[tuple[datetime, Group], dict[str, int]]:
    """The snapshots' figures per bucket and group (none per hour: snapshots are daily)."""
    standing: dict[tuple[datetime, Group], dict[str, int]] = defaultdict(dict)
    if query.granularity == "hour":
        return standing
    for row in await repository.standing_rows(
        session, workspace_id, scope, start=query.start, end=query.end, granularity=query.granularity
    ):
        cell = standing[row.bucket, _group_of(row, query.group_by, names)]
        cell[row.metric] = int(row.summed if row.metric == "suppressions_added" else row.total)
    return standing


def _standing_metrics(
    standing: Mapping[tuple[datetime, Group], Mapping[str, int]], bucket: datetime, group: Group, granularity: str
) -> dict[str, int | float | None]:
    """The bucket's snapshot figures: ``None`` per hour and where no snapshot was taken in the bucket.

    Any snapshot of the workspace in the bucket holds every group (zeros included), so a group missing from a
    bucket with snapshots counts zero.
    """
    if granularity == "hour" or not any(key[0] == bucket for key in standing):
        return dict.fromkeys(_STANDING_METRICS, None)
    cell = standing.get((bucket, group), {})
    return {metric: cell.get(metric, 0) for metric in _STANDING_METRICS}


def _doi_metrics(cohort: list[tuple[int | None, int]] | None) -> dict[str, int | float | None]:
    if cohort is None:
        return {"confirmation_rate": None, "time_to_confirm_p50_s": None, "time_to_confirm_p90_s": None}
    started = sum(n for seconds, n in cohort if seconds is None)
    confirmed = [(int(seconds), n) for seconds, n in cohort if seconds is not None]
    return {
        "confirmation_rate": round(sum(n for _, n in confirmed) / started, 4) if started else None,
        "time_to_confirm_p50_s": percentile(confirmed, 0.5),
        "time_to_confirm_p90_s": percentile(confirmed, 0.9),
    }


async def message_report(session: AsyncSession, workspace_id: uuid.UUID, query: ReportQuery) -> list[SeriesRow]:
    """The message metrics per bucket and group, after a catch-up (the caller holds the transaction)."""
    await catch_up(session, workspace_id)
    names, purpose_ids = await _purpose_filter(session, workspace_id, query.purposes)
    daily = query.granularity != "hour"
    scope = repository.Selection(query.group_by, query.channels, purpose_ids, daily=daily, campaigns=query.campaigns)
    rows = await repository.message_rows(
        session, workspace_id, scope, start=query.start, end=query.end, granularity=query.granularity
    )
    counters: dict[tuple[datetime, Group], dict[str, int]] = defaultdict(lambda: dict.fromkeys(_MESSAGE_COUNTERS, 0))
    latencies: dict[tuple[datetime, Group], tuple[int | None, int | None]] = {}
    for row in rows:
        key = (row.bucket, _group_of(row, query.group_by, names))
        for metric in _OUTCOMES.get(row.outcome, ()):
            counters[key][metric] += row.n
        if row.outcome == "sent":
            latencies[key] = (row.latency_p50_ms, row.latency_p99_ms)
    groups = sorted({g for _, g in counters}, key=repr) or ([()] if not query.group_by else [])
    series = []
    for group in groups:
        for bucket in buckets(query.start, query.end, query.granularity):
            metrics: dict[str, int | float | None] = dict(
                counters.get((bucket, group)) or dict.fromkeys(_MESSAGE_COUNTERS, 0)
            )
            metrics["latency_p50_ms"], metrics["latency_p99_ms"] = latencies.get((bucket, group), (None, None))
            series.append(SeriesRow(bucket, dict(zip(query.group_by, group, strict=True)), metrics))
    return series
