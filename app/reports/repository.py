"""All SQL of the reports: the aggregator's catch-up and rebuild, and the reads of the rollups.

Every function takes the workspace and names it in each statement; the rollups are read, never the ledger's
whole history (the catch-up reads only what lies past the watermark).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.model import Channel, PurposeKind
from app.domain.validity import Policy
from app.eligibility.repository import audience_sql

#: Where an event came from, without the free text an actor id may hold (a CLI import names its file).
#: A signup form's id (from the evidence) wins over the actor, as the form is what a report compares.
_SOURCE = """
    CASE WHEN e.personal -> 'evidence' ->> 'form_id' <> ''
         THEN 'form:' || left(e.personal -> 'evidence' ->> 'form_id', 100)
         ELSE e.actor_type || coalesce(':' || CASE WHEN left(e.actor_id, 4) = 'cli:' THEN 'cli' ELSE e.actor_id END, '')
    END
"""
#: The one enumerated word of the evidence a metric splits by: how an unsubscribe came (page or RFC 8058
#: one-click), the kind of an objection, whether a confirmation carried a scanner signal. Never free text.
_DETAIL = """
    CASE
      WHEN e.trigger = 'unsubscribe' AND e.personal -> 'evidence' ->> 'method'
           IN ('unsubscribe_page', 'rfc8058_one_click') THEN e.personal -> 'evidence' ->> 'method'
      WHEN e.trigger IN ('objection', 'robinson_match') AND e.personal -> 'evidence' ->> 'kind'
           IN ('personal', 'sticker', 'art21', 'robinson') THEN e.personal -> 'evidence' ->> 'kind'
      WHEN e.trigger = 'confirm' AND jsonb_typeof(e.personal -> 'evidence' -> 'signals') = 'array'
           AND jsonb_array_length(e.personal -> 'evidence' -> 'signals') > 0 THEN 'scanner_signal'
    END
"""
#: The campaign label of the message an event is attributed to (an unsubscribe link's message, the message a STOP
#: answered), as the evidence recorded it when the event was written.
_CAMPAIGN = "left(e.personal -> 'evidence' ->> 'campaign', 100)"


def _two_digits(expression: str) -> str:
    """SQL rounding a non-negative duration to two significant digits (exact below 100), as a bigint.

    Keeps percentiles within 5 % while a cohort's distinct durations stay a few hundred rows.
    """
    v = f"greatest({expression}, 0)::float8"
    scale = f"power(10, floor(log(greatest({v}, 1))) - 1)"
    return f"(CASE WHEN {v} < 100 THEN round({v}) ELSE round({v} / {scale}) * {scale} END)::bigint"


_CONSENT_KEY = "channel, purpose_id, source, trigger, from_state, to_state, detail, campaign"


def _rollup_both(grouped: str, key: str, hourly: str, daily: str) -> str:
    """One statement adding ``grouped``'s rows to the hourly table and, summed per day, to the daily one.

    ``grouped``: rows of an ``hour``, the ``key`` columns and ``n``. The ledger is read and grouped once for both
    (it was read once per table before: issue 18's rebuild rate).
    """
    return f"""
        WITH grouped AS ({grouped}),
        hourly AS (
            INSERT INTO {hourly} (workspace_id, hour, {key}, n)
            SELECT :ws, hour, {key}, n FROM grouped
            ON CONFLICT ON CONSTRAINT uq_{hourly}_key DO UPDATE SET n = {hourly}.n + excluded.n
        )
        INSERT INTO {daily} (workspace_id, day, {key}, n)
        SELECT :ws, date_trunc('day', hour, 'UTC'), {key}, sum(n)::bigint FROM grouped
         GROUP BY 2, {key}
        ON CONFLICT ON CONSTRAINT uq_{daily}_key DO UPDATE SET n = {daily}.n + excluded.n
    """  # noqa: S608  # constant names; every input is a bind parameter


#: The ledger events with ``:lo < seq <= :hi`` added to the hourly and the daily consent rollups.
_CONSENT_COUNTS = _rollup_both(
    f"""
    SELECT date_trunc('hour', e.occurred_at, 'UTC') AS hour, e.channel, e.purpose_id, {_SOURCE} AS source,
           e.trigger, e.from_state, e.to_state, {_DETAIL} AS detail, {_CAMPAIGN} AS campaign, count(*) AS n
      FROM consent_events e
     WHERE e.workspace_id = :ws AND e.seq > :lo AND e.seq <= :hi
     GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
    """,  # noqa: S608  # constant names; every input is a bind parameter
    _CONSENT_KEY,
    "report_consent_counts",
    "report_consent_daily",
)

_DOI_STARTED = """
    INSERT INTO report_doi (workspace_id, cohort_day, channel, purpose_id, confirm_s, n)
    SELECT :ws, (e.occurred_at AT TIME ZONE 'UTC')::date, e.channel, e.purpose_id, NULL, count(*)
      FROM consent_events e
     WHERE e.workspace_id = :ws AND e.seq > :lo AND e.seq <= :hi
       AND e.trigger = 'signup' AND e.from_state <> 'pending' AND e.to_state = 'pending'
     GROUP BY 2, 3, 4
    ON CONFLICT ON CONSTRAINT uq_report_doi_key DO UPDATE SET n = report_doi.n + excluded.n
"""

#: A confirmation belongs to the signup that started its pending state: the newest such event of the same
#: address and purpose before it (found through the contact's events, ``ix_consent_events_contact_id_seq``).
_DOI_CONFIRMED = f"""
    INSERT INTO report_doi (workspace_id, cohort_day, channel, purpose_id, confirm_s, n)
    SELECT :ws, (s.occurred_at AT TIME ZONE 'UTC')::date, e.channel, e.purpose_id,
           {_two_digits("extract(epoch FROM e.occurred_at - s.occurred_at)")}, count(*)
      FROM consent_events e
      CROSS JOIN LATERAL (
            SELECT s.occurred_at FROM consent_events s
             WHERE s.contact_id = e.contact_id AND s.workspace_id = :ws AND s.seq < e.seq
               AND s.contact_point_id = e.contact_point_id AND s.purpose_id IS NOT DISTINCT FROM e.purpose_id
               AND s.trigger = 'signup' AND s.from_state <> 'pending' AND s.to_state = 'pending'
             ORDER BY s.seq DESC LIMIT 1) s
     WHERE e.workspace_id = :ws AND e.seq > :lo AND e.seq <= :hi AND e.trigger = 'confirm'
     GROUP BY 2, 3, 4, 5
    ON CONFLICT ON CONSTRAINT uq_report_doi_key DO UPDATE SET n = report_doi.n + excluded.n
"""  # noqa: S608


#: Message outcomes that arrive as ledger events, added to the hourly and the daily message rollups.
#: ``complaint``: provider feedback (a spam complaint). ``opt_out``: an opt-out attributed to a message we sent (its
#: unsubscribe link, or a STOP after it), counted under the message's campaign: once per address, by the event of
#: the message's own purpose (a STOP also ends the other purposes and the channel as a whole).
_FROM_LEDGER = _rollup_both(
    f"""
    SELECT date_trunc('hour', e.occurred_at, 'UTC') AS hour, e.channel, e.channel AS provider, e.purpose_id,
           CASE WHEN e.trigger = 'complaint' THEN 'complaint' ELSE 'opt_out' END AS outcome,
           NULL::bigint AS latency_ms, {_CAMPAIGN} AS campaign, count(*) AS n
      FROM consent_events e
     WHERE e.workspace_id = :ws AND e.seq > :lo AND e.seq <= :hi
       AND (e.trigger = 'complaint'
            OR (e.purpose_id::text = e.personal -> 'evidence' ->> 'attributed_purpose_id'
                AND e.to_state = 'opted_out' AND e.from_state <> 'opted_out'))
     GROUP BY 1, 2, 3, 4, 5, 6, 7
    """,  # noqa: S608  # constant names; every input is a bind parameter
    "channel, provider, purpose_id, outcome, latency_ms, campaign",
    "report_message_counts",
    "report_message_daily",
)

#: Consume up to :batch queued message events and count them. A failure reported by the provider after the send
#: is a bounce; a retry is a transient failure; an open or click with a mail scanner's signs is the scanner's;
#: ``sent`` carries its queue-to-sent latency, measured from the later of the queueing and the time the delivery
#: was held back to (``not_before``: a send_at or a quiet time).
_MESSAGES = f"""
    WITH taken AS (
        DELETE FROM report_message_queue q
         WHERE q.workspace_id = :ws
           AND q.id IN (SELECT id FROM report_message_queue WHERE workspace_id = :ws ORDER BY id LIMIT :batch)
        RETURNING q.event_id
    ), counted AS (
        SELECT date_trunc('hour', e.at, 'UTC') AS hour, e.channel,
               coalesce(e.detail ->> 'provider', e.channel) AS provider, m.purpose_id, m.campaign,
               CASE WHEN e.status = 'failed' AND e.detail ? 'provider_status' THEN 'bounced'
                    WHEN e.status IN ('opened', 'clicked') AND e.detail ? 'scanner_signals'
                    THEN e.status || '_by_scanner'
                    ELSE e.status END AS outcome,
               CASE WHEN e.status = 'sent' THEN
                   {
    _two_digits("extract(epoch FROM e.at - greatest(q.at, (q.detail ->> 'not_before')::timestamptz)) * 1000")
}
               END AS latency_ms
          FROM taken t
          JOIN message_events e ON e.id = t.event_id
          JOIN messages m ON m.id = e.message_id AND m.workspace_id = :ws
          LEFT JOIN LATERAL (
                SELECT qe.at, qe.detail FROM message_events qe
                 WHERE qe.message_id = e.message_id AND qe.delivery_id = e.delivery_id AND qe.status = 'queued'
                 ORDER BY qe.at LIMIT 1) q ON e.status = 'sent'
    ), added AS (
        INSERT INTO report_message_counts
               (workspace_id, hour, channel, provider, purpose_id, outcome, latency_ms, campaign, n)
        SELECT :ws, hour, channel, provider, purpose_id, outcome, latency_ms, campaign, count(*)
          FROM counted GROUP BY 2, 3, 4, 5, 6, 7, 8
        ON CONFLICT ON CONSTRAINT uq_report_message_counts_key
        DO UPDATE SET n = report_message_counts.n + excluded.n
    ), added_daily AS (
        INSERT INTO report_message_daily
               (workspace_id, day, channel, provider, purpose_id, outcome, latency_ms, campaign, n)
        SELECT :ws, date_trunc('day', hour, 'UTC'), channel, provider, purpose_id, outcome, latency_ms, campaign,
               count(*)
          FROM counted GROUP BY 2, 3, 4, 5, 6, 7, 8
        ON CONFLICT ON CONSTRAINT uq_report_message_daily_key
        DO UPDATE SET n = report_message_daily.n + excluded.n
    )
    SELECT count(*) FROM taken
"""  # noqa: S608


async def lock_watermark(session: AsyncSession, workspace_id: uuid.UUID) -> int:
    """The workspace's ledger watermark (created at 0), locked until commit: one catch-up at a time."""
    await session.execute(
        text("INSERT INTO report_watermarks (workspace_id) VALUES (:ws) ON CONFLICT DO NOTHING"), {"ws": workspace_id}
    )
    seq = await session.scalar(
        text("SELECT ledger_seq FROM report_watermarks WHERE workspace_id = :ws FOR UPDATE"), {"ws": workspace_id}
    )
    return int(seq or 0)


async def workspace_exists(session: AsyncSession, workspace_id: uuid.UUID) -> bool:
    """Whether the workspace exists."""
    found = await session.scalar(text("SELECT 1 FROM workspaces WHERE id = :ws"), {"ws": workspace_id})
    return found is not None


async def ledger_head(session: AsyncSession, workspace_id: uuid.UUID) -> int:
    """The workspace's last ledger seq: every event up to it has committed (appends are serialised)."""
    seq = await session.scalar(text("SELECT last_seq FROM ledger_heads WHERE workspace_id = :ws"), {"ws": workspace_id})
    return int(seq or 0)


async def count_ledger(session: AsyncSession, workspace_id: uuid.UUID, lo: int, hi: int) -> None:
    """Add the ledger events with ``lo < seq <= hi`` to the rollups and move the watermark to ``hi``."""
    params = {"ws": workspace_id, "lo": lo, "hi": hi}
    for statement in (_CONSENT_COUNTS, _DOI_STARTED, _DOI_CONFIRMED, _FROM_LEDGER):
        await session.execute(text(statement), params)
    await session.execute(
        text("UPDATE report_watermarks SET ledger_seq = :hi WHERE workspace_id = :ws"), {"ws": workspace_id, "hi": hi}
    )


async def count_messages(session: AsyncSession, workspace_id: uuid.UUID, batch: int) -> int:
    """Consume up to ``batch`` queued message events of the workspace into the rollups; answers how many."""
    return int(await session.scalar(text(_MESSAGES), {"ws": workspace_id, "batch": batch}) or 0)


async def queued_messages(session: AsyncSession, workspace_id: uuid.UUID) -> int:
    """How many message events of the workspace wait to be counted."""
    return int(
        await session.scalar(
            text("SELECT count(*) FROM report_message_queue WHERE workspace_id = :ws"), {"ws": workspace_id}
        )
        or 0
    )


async def reset(session: AsyncSession, workspace_id: uuid.UUID) -> None:
    """Forget the workspace's rollups and queue everything again: the next catch-up recounts from the start."""
    tables = (
        "report_consent_counts",
        "report_consent_daily",
        "report_doi",
        "report_message_counts",
        "report_message_daily",
    )
    for table in (*tables, "report_message_queue"):
        await session.execute(text(f"DELETE FROM {table} WHERE workspace_id = :ws"), {"ws": workspace_id})  # noqa: S608
    await session.execute(
        text(
            "INSERT INTO report_watermarks (workspace_id, ledger_seq) VALUES (:ws, 0)"
            " ON CONFLICT (workspace_id) DO UPDATE SET ledger_seq = 0"
        ),
        {"ws": workspace_id},
    )
    await session.execute(
        text(
            """
            INSERT INTO report_message_queue (workspace_id, event_id)
            SELECT m.workspace_id, e.id FROM messages m JOIN message_events e ON e.message_id = m.id
             WHERE m.workspace_id = :ws AND e.status <> 'sending' ORDER BY e.at, e.id
            """
        ),
        {"ws": workspace_id},
    )


async def workspaces_to_count(session: AsyncSession) -> Sequence[uuid.UUID]:
    """Every workspace with a ledger or queued message events."""
    rows = await session.scalars(
        text(
            "SELECT workspace_id FROM ledger_heads UNION SELECT DISTINCT workspace_id FROM report_message_queue"
            " ORDER BY 1"
        )
    )
    return rows.all()


# --- reads ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Selection:
    """Which rollup rows a report reads and how it groups them (dimension names from a closed list)."""

    group_by: Sequence[str]
    channels: Collection[str]
    purpose_ids: Collection[uuid.UUID]
    #: read the daily counters (a range of whole UTC days, buckets of a day or longer)
    daily: bool = False
    campaigns: Collection[str] = ()

    @property
    def consent_table(self) -> tuple[str, str]:
        """The consent rollup to read, and its time column."""
        return ("report_consent_daily", "day") if self.daily else ("report_consent_counts", "hour")


def _filters(selection: Selection) -> str:
    clauses = []
    if selection.channels:
        clauses.append(" AND r.channel = ANY(:channels)")
    if selection.purpose_ids:
        clauses.append(" AND r.purpose_id = ANY(:purposes)")
    if selection.campaigns:
        clauses.append(" AND r.campaign = ANY(:campaigns)")
    return "".join(clauses)


def _params(selection: Selection, **values: Any) -> dict[str, Any]:
    return {
        **values,
        "channels": list(selection.channels),
        "purposes": list(selection.purpose_ids),
        "campaigns": list(selection.campaigns),
    }


def _dimensions(group_by: Sequence[str], allowed: Collection[str]) -> str:
    columns = [f"r.{'purpose_id' if name == 'purpose' else name}" for name in group_by]
    for name in group_by:
        if name not in allowed:  # names come from a closed list checked by the service; checked again for SQL
            raise ValueError(name)
    return "".join(f", {column}" for column in columns)


async def consent_rows(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    selection: Selection,
    *,
    start: datetime,
    end: datetime,
    granularity: str,
) -> Sequence[Row[Any]]:
    """Summed consent counters per bucket x group x (trigger, from, to, detail), in [start, end)."""
    group_by = selection.group_by
    dims = _dimensions(group_by, ("channel", "purpose", "source", "trigger", "campaign"))
    extra = "" if "trigger" in group_by else ", r.trigger"
    table, at = selection.consent_table
    sql = f"""
        SELECT date_trunc(:g, r.{at}, 'UTC') AS bucket{dims}{extra}, r.from_state, r.to_state, r.detail,
               sum(r.n)::bigint AS n
          FROM {table} r
         WHERE r.workspace_id = :ws AND r.{at} >= :start AND r.{at} < :end{_filters(selection)}
         GROUP BY 1{dims}{extra}, r.from_state, r.to_state, r.detail
    """  # noqa: S608  # columns from a closed list; values are bind parameters
    params = _params(selection, ws=workspace_id, g=granularity, start=start, end=end)
    return (await session.execute(text(sql), params)).all()


_DELTA = (
    "sum(r.n * CASE WHEN r.to_state = 'opted_in' AND r.from_state <> 'opted_in' THEN 1"
    " WHEN r.from_state = 'opted_in' AND r.to_state <> 'opted_in' THEN -1 ELSE 0 END)::bigint"
)


async def opted_in_before(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    selection: Selection,
    *,
    before: datetime,
) -> Sequence[Row[Any]]:
    """The standing opted-in total per group at ``before``: the sum of the deltas of every earlier hour."""
    group_by = selection.group_by
    dims = _dimensions(group_by, ("channel", "purpose"))
    table, at = selection.consent_table
    sql = f"""
        SELECT {_DELTA} AS total{dims}
          FROM {table} r
         WHERE r.workspace_id = :ws AND r.{at} < :before{_filters(selection)}
           AND (r.to_state = 'opted_in') <> (r.from_state = 'opted_in')
         GROUP BY {"1" if not dims else dims.lstrip(", ")}
    """  # noqa: S608
    if not dims:
        sql = sql.replace("GROUP BY 1", "")
    params = _params(selection, ws=workspace_id, before=before)
    return (await session.execute(text(sql), params)).all()


async def doi_rows(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    selection: Selection,
    *,
    start: datetime,
    end: datetime,
    granularity: str,
) -> Sequence[Row[Any]]:
    """Double opt-in cohorts (signup days in [start, end)) per bucket x group x seconds to confirm."""
    group_by = selection.group_by
    dims = _dimensions(group_by, ("channel", "purpose"))
    sql = f"""
        SELECT date_trunc(:g, r.cohort_day::timestamp AT TIME ZONE 'UTC', 'UTC') AS bucket{dims}, r.confirm_s,
               sum(r.n)::bigint AS n
          FROM report_doi r
         WHERE r.workspace_id = :ws AND r.cohort_day >= (:start AT TIME ZONE 'UTC')::date
           AND r.cohort_day < (:end AT TIME ZONE 'UTC')::date{_filters(selection)}
         GROUP BY 1{dims}, r.confirm_s
    """  # noqa: S608  # (a report filtered by campaign reads no cohorts: report_doi has no campaign)
    params = _params(selection, ws=workspace_id, g=granularity, start=start, end=end)
    return (await session.execute(text(sql), params)).all()


async def message_rows(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    selection: Selection,
    *,
    start: datetime,
    end: datetime,
    granularity: str,
) -> Sequence[Row[Any]]:
    """Summed message counters per bucket x group x outcome x latency, in [start, end)."""
    group_by = selection.group_by
    dims = _dimensions(group_by, ("channel", "purpose", "provider", "campaign"))
    table, at = ("report_message_daily", "day") if selection.daily else ("report_message_counts", "hour")
    sql = f"""
        SELECT date_trunc(:g, r.{at}, 'UTC') AS bucket{dims}, r.outcome, r.latency_ms, sum(r.n)::bigint AS n
          FROM {table} r
         WHERE r.workspace_id = :ws AND r.{at} >= :start AND r.{at} < :end{_filters(selection)}
         GROUP BY 1{dims}, r.outcome, r.latency_ms
    """  # noqa: S608
    params = _params(selection, ws=workspace_id, g=granularity, start=start, end=end)
    return (await session.execute(text(sql), params)).all()


async def purpose_keys(session: AsyncSession, workspace_id: uuid.UUID) -> dict[uuid.UUID, str]:
    """The workspace's purposes, id → key."""
    rows = await session.execute(text("SELECT id, key FROM purposes WHERE workspace_id = :ws"), {"ws": workspace_id})
    return {row.id: row.key for row in rows}


# --- what the reconciliation test and the benchmark count directly, for comparison --------------------------


async def recount_ledger(session: AsyncSession, workspace_id: uuid.UUID) -> Sequence[Row[Any]]:
    """The consent counters recounted straight from the ledger (a full scan: tests and benchmarks only)."""
    sql = f"""
        SELECT date_trunc('hour', e.occurred_at, 'UTC') AS hour, e.channel, e.purpose_id, {_SOURCE} AS source,
               e.trigger, e.from_state, e.to_state, {_DETAIL} AS detail, {_CAMPAIGN} AS campaign, count(*) AS n
          FROM consent_events e WHERE e.workspace_id = :ws GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
    """  # noqa: S608
    return (await session.execute(text(sql), {"ws": workspace_id})).all()


async def stored_consent_counts(session: AsyncSession, workspace_id: uuid.UUID) -> Sequence[Row[Any]]:
    """The consent rollups as stored, in the shape of :func:`recount_ledger`."""
    sql = """
        SELECT hour, channel, purpose_id, source, trigger, from_state, to_state, detail, campaign, n
          FROM report_consent_counts WHERE workspace_id = :ws
    """
    return (await session.execute(text(sql), {"ws": workspace_id})).all()


async def stored_rollups(session: AsyncSession, workspace_id: uuid.UUID) -> dict[str, list[tuple[Any, ...]]]:
    """Every rollup row of the workspace (ids left out), sorted: for comparing a rebuild with the increments."""
    found: dict[str, list[tuple[Any, ...]]] = {}
    for table, columns in (
        (
            "report_consent_counts",
            "hour, channel, purpose_id, source, trigger, from_state, to_state, detail, campaign, n",
        ),
        (
            "report_consent_daily",
            "day, channel, purpose_id, source, trigger, from_state, to_state, detail, campaign, n",
        ),
        ("report_doi", "cohort_day, channel, purpose_id, confirm_s, n"),
        ("report_message_counts", "hour, channel, provider, purpose_id, outcome, latency_ms, campaign, n"),
        ("report_message_daily", "day, channel, provider, purpose_id, outcome, latency_ms, campaign, n"),
    ):
        sql = f"SELECT {columns} FROM {table} WHERE workspace_id = :ws"  # noqa: S608  # constant names
        rows = await session.execute(text(sql), {"ws": workspace_id})
        found[table] = sorted((tuple(row) for row in rows), key=repr)
    return found


_STANDING_PURPOSES = text("SELECT id, kind, validity, inactivity FROM purposes WHERE workspace_id = :ws ORDER BY key")


async def standing_purposes(session: AsyncSession, workspace_id: uuid.UUID) -> Sequence[Row[Any]]:
    """The workspace's purposes with what their eligible count needs (kind, lifecycle)."""
    return (await session.execute(_STANDING_PURPOSES, {"ws": workspace_id})).all()


async def eligible_counts(
    session: AsyncSession, workspace_id: uuid.UUID, purpose_id: uuid.UUID, kind: PurposeKind, policy: Policy
) -> dict[str, int]:
    """Addresses per channel the send gate permits for the purpose now: the audience export's rows, counted."""
    raw = await (await session.connection()).get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    sql = audience_sql(kind, list(Channel), policy=policy)
    rows = await driver.fetch(f"SELECT a.channel, count(*) AS n FROM ({sql}) a GROUP BY 1", workspace_id, purpose_id)  # noqa: S608  # audience_sql is built from the domain's own words
    return {row["channel"]: int(row["n"]) for row in rows}


_SUPPRESSIONS_IN_FORCE = text(
    """
    SELECT s.channel, s.purpose_id, count(*) AS total, count(*) FILTER (WHERE s.created_at >= :day) AS added
      FROM (SELECT channel, purpose_id, created_at FROM suppressions
             WHERE workspace_id = :ws AND (until IS NULL OR until > :now)
            UNION ALL  -- a Robinson key is a suppression of print marketing (migration 0042)
            SELECT 'print', NULL::uuid, created_at FROM robinson_keys WHERE workspace_id = :ws) s
     GROUP BY 1, 2
    """
)


async def suppressions_in_force(
    session: AsyncSession, workspace_id: uuid.UUID, *, day: datetime, now: datetime
) -> Sequence[Row[Any]]:
    """Suppressions in force per channel and purpose (NULL: any purpose), and how many were made since ``day``."""
    return (await session.execute(_SUPPRESSIONS_IN_FORCE, {"ws": workspace_id, "day": day, "now": now})).all()


async def replace_standing(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    *,
    day: datetime,
    taken_at: datetime,
    rows: Sequence[tuple[str, str, uuid.UUID | None, int]],
) -> None:
    """The day's snapshot (metric, channel, purpose id, n) in place of the one taken earlier that day."""
    await session.execute(
        text("DELETE FROM report_standing_daily WHERE workspace_id = :ws AND day = :day"),
        {"ws": workspace_id, "day": day},
    )
    if rows:
        await session.execute(
            text(
                "INSERT INTO report_standing_daily (workspace_id, day, metric, channel, purpose_id, n, taken_at)"
                " VALUES (:ws, :day, :metric, :channel, :purpose_id, :n, :taken_at)"
            ),
            [
                {
                    "ws": workspace_id,
                    "day": day,
                    "metric": m,
                    "channel": c,
                    "purpose_id": p,
                    "n": n,
                    "taken_at": taken_at,
                }
                for m, c, p, n in rows
            ],
        )


async def standing_due(
    session: AsyncSession, *, stale: datetime, midnight: datetime, limit: int | None, only: uuid.UUID | None = None
) -> list[uuid.UUID]:
    """Workspaces (or just ``only``) whose snapshot is due, the longest waiting first.

    Due: the last one was taken at ``stale`` or earlier, or before ``midnight``, or none was.
    """
    rows = await session.execute(
        text(
            """
            SELECT w.id FROM workspaces w
              LEFT JOIN LATERAL (SELECT max(taken_at) AS at FROM report_standing_daily r
                                  WHERE r.workspace_id = w.id) last ON TRUE
             WHERE (last.at IS NULL OR last.at <= :stale OR last.at < :midnight)
               AND (CAST(:only AS uuid) IS NULL OR w.id = :only)
             ORDER BY last.at NULLS FIRST, w.id
             LIMIT :limit
            """
        ),
        {"stale": stale, "midnight": midnight, "only": only, "limit": limit},
    )
    return [row.id for row in rows]


_STANDING_LOCK = "hashtext('report_standing'), hashtext(CAST(:ws AS uuid)::text)"


async def lock_standing(session: AsyncSession, workspace_id: uuid.UUID) -> None:
    """The workspace's snapshot lock, waited for (a rebuild's snapshot beside the served app's round)."""
    await session.execute(text(f"SELECT pg_advisory_xact_lock({_STANDING_LOCK})"), {"ws": workspace_id})


async def try_lock_standing(session: AsyncSession, workspace_id: uuid.UUID) -> bool:
    """One snapshot of a workspace at a time across processes (a transaction-level advisory lock, not waited for)."""
    locked: bool = await session.scalar(
        text(f"SELECT pg_try_advisory_xact_lock({_STANDING_LOCK})"),
        {"ws": workspace_id},
    )
    return locked


async def standing_rows(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    selection: Selection,
    *,
    start: datetime,
    end: datetime,
    granularity: str,
) -> Sequence[Row[Any]]:
    """Per bucket x group x metric: the total of the bucket's last snapshot day, and the sum of its days.

    A bucket's standing total is that of the workspace's last snapshot day in it (``total``; a group without a row
    that day counts 0, not its value of an earlier day: hostile review 2026-12-05); ``added`` counts add up over
    its days (``summed``).
    """
    dims = _dimensions(selection.group_by, ("channel", "purpose"))
    plain = dims.replace("r.", "d.")
    filters = " AND r.channel = ANY(:channels)" if selection.channels else ""
    if selection.purpose_ids:  # suppressions of every purpose (all, all_marketing) apply to the chosen ones too
        filters += " AND (r.purpose_id = ANY(:purposes) OR (r.purpose_id IS NULL AND r.metric <> 'eligible_total'))"
    sql = f"""
        WITH days AS (
            SELECT date_trunc(:g, r.day, 'UTC') AS bucket, r.day, r.metric{dims}, sum(r.n)::bigint AS n
              FROM report_standing_daily r
             WHERE r.workspace_id = :ws AND r.day >= :start AND r.day < :end{filters}
             GROUP BY 1, 2, 3{dims}
        ), last AS (  -- each bucket's last snapshot day of the workspace, whatever the filters keep
            SELECT date_trunc(:g, r.day, 'UTC') AS bucket, max(r.day) AS day
              FROM report_standing_daily r
             WHERE r.workspace_id = :ws AND r.day >= :start AND r.day < :end
             GROUP BY 1
        )
        SELECT d.bucket, d.metric{plain}, coalesce(sum(d.n) FILTER (WHERE d.day = l.day), 0)::bigint AS total,
               sum(d.n)::bigint AS summed
          FROM days d JOIN last l ON l.bucket = d.bucket
         GROUP BY d.bucket, d.metric{plain}
    """  # noqa: S608  # columns from a closed list; values are bind parameters
    params = _params(selection, ws=workspace_id, g=granularity, start=start, end=end)
    return (await session.execute(text(sql), params)).all()
