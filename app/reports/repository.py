"""All SQL of the reports: the aggregator's catch-up and rebuild, and the reads of the rollups.

Every function takes the workspace and names it in each statement; the rollups are read, never the ledger's
whole history (the catch-up reads only what lies past the watermark).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.domain.model import Channel, PurposeKind
from app.domain.validity import Policy
from app.eligibility.repository import audience_sql, push_hosts_args

#: Where an event came from, without the free text an actor id may hold (a CLI import names its file).
#: A signup form's id (from the evidence) wins over the actor, as the form is what a report compares.
_SOURCE = """
    CASE WHEN e.personal -> 'evidence' ->> 'form_id' <> ''
         THEN 'form:' || left(e.personal -> 'evidence' ->> 'form_id', 100)
         ELSE e.actor_type || coalesce(':' || CASE WHEN left(e.actor_id, 4) = 'cli:' THEN 'cli' ELSE e.actor_id END, '')
    END
"""
#: The one enumerated word of the evidence a metric splits by: how an unsubscribe came (a mail's link: its page or
#: RFC 8058 one-click, as the email unsubscribe path records it; else the preference centre or an API key, as the
#: actor says, which an erasure keeps), the kind of an objection, whether a confirmation carried a scanner signal.
#: Never free text. (An API withdrawal's evidence cannot name a ``method``: its schema has no such field.)
_DETAIL = """
    CASE
      WHEN e.trigger = 'unsubscribe' AND e.personal -> 'evidence' ->> 'method'
           IN ('unsubscribe_page', 'rfc8058_one_click') THEN e.personal -> 'evidence' ->> 'method'
      WHEN e.trigger = 'unsubscribe' AND e.actor_type = 'api_key' THEN 'api'
      WHEN e.trigger = 'unsubscribe' AND e.actor_type = 'subject' AND e.actor_id = 'preference_centre'
           THEN 'preference_centre'
      WHEN e.trigger IN ('objection', 'robinson_match') AND e.personal -> 'evidence' ->> 'kind'
           IN ('personal', 'sticker', 'art21', 'robinson') THEN e.personal -> 'evidence' ->> 'kind'
      WHEN e.trigger = 'confirm' AND jsonb_typeof(e.personal -> 'evidence' -> 'signals') = 'array'
           AND jsonb_array_length(e.personal -> 'evidence' -> 'signals') > 0 THEN 'scanner_signal'
    END
"""
#: The campaign label of the message an event is attributed to (an unsubscribe link's message, the message a STOP
#: answered), as the evidence recorded it when the event was written.
_CAMPAIGN = "left(e.personal -> 'evidence' ->> 'campaign', 100)"


def _hour(expression: str) -> str:
    """SQL: the UTC hour a timestamptz falls in, as ``date_trunc('hour', …, 'UTC')`` gives it.

    ``date_bin`` counts from an origin in absolute time and needs no time-zone conversion per row: 2.2x faster
    over a million events (the rebuild's largest cost); UTC has no offset changes, so both give the same hour.
    """
    return f"date_bin('1 hour', {expression}, {_ORIGIN})"


def _day(expression: str) -> str:
    """SQL: the UTC day a timestamptz falls in (see :func:`_hour`)."""
    return f"date_bin('1 day', {expression}, {_ORIGIN})"


_ORIGIN = "TIMESTAMPTZ '2000-01-01 00:00:00+00'"


def _two_digits(expression: str) -> str:
    """SQL rounding a non-negative duration to two significant digits (exact below 100), as a bigint.

    Keeps percentiles within 5 % while a cohort's distinct durations stay a few hundred rows.
    """
    v = f"greatest({expression}, 0)::float8"
    scale = f"power(10, floor(log(greatest({v}, 1))) - 1)"
    return f"(CASE WHEN {v} < 100 THEN round({v}) ELSE round({v} / {scale}) * {scale} END)::bigint"


_CONSENT_KEY = "channel, purpose_id, source, trigger, from_state, to_state, detail, campaign"
#: The message rollups' key; a row also carries ``latencies``: how many of its ``sent`` events took each queue-to-sent
#: time (``{"ms": count}``, two significant digits), NULL for the other outcomes (migration 0049: a row per latency
#: before, 720,000 of the 1.57 million counter rows a rebuild wrote at ten million events).
_MESSAGE_KEY = "channel, provider, purpose_id, outcome, campaign"
#: The rollup tables: (hourly, daily).
_CONSENT_TABLES = ("report_consent_counts", "report_consent_daily")
_MESSAGE_TABLES = ("report_message_counts", "report_message_daily")


def _adding(table: str) -> str:
    """The clause that adds a counted row to the one of the same key already in ``table`` (a catch-up's).

    A message rollup's latencies are added too, count by count (either side NULL: the other's): the stored
    histogram with each of the batch's latencies replaced by its sum (``||``), so a catch-up reads only the batch's
    few latencies, each found in the stored one by key, not every latency the row holds (unnesting and grouping both
    took 0.63 ms per upsert into a row of 550 latencies, this 0.22 ms: docs/benchmarks.md).
    """
    adding = f"ON CONFLICT ON CONSTRAINT uq_{table}_key DO UPDATE SET n = {table}.n + excluded.n"
    if table not in _MESSAGE_TABLES:
        return adding
    return f"""{adding},
        latencies = CASE WHEN {table}.latencies IS NULL THEN excluded.latencies
                         WHEN excluded.latencies IS NULL THEN {table}.latencies
                         ELSE {table}.latencies || (
                              SELECT jsonb_object_agg(ms, coalesce(({table}.latencies ->> ms)::bigint, 0) + c::bigint)
                                FROM jsonb_each_text(excluded.latencies) b (ms, c)) END"""  # noqa: S608


def _with_latencies(rows: str, at: str, name: str, count: str = "sum(n)", *, grouped: bool = False) -> str:
    """SELECT of message rollup rows (``name``, key, n, latencies) from ``rows`` of one latency each.

    ``rows``: a FROM item with ``hour``, the key, ``latency_ms`` (NULL: none) and ``n`` (``count``: how the inner
    grouping counts them, ``count(*)`` for one row per event); ``at``: the rollup's time of a row, from ``hour``.
    ``grouped``: ``rows`` hold one row per ``at``, key and latency already (no inner grouping).
    """
    if not grouped:  # one row per time, key and latency first
        rows = f"""(SELECT {at} AS {name}, {_MESSAGE_KEY}, latency_ms, {count}::bigint AS n FROM {rows}
                 GROUP BY 1, {_MESSAGE_KEY}, latency_ms) l"""  # noqa: S608  # constant names
        at = name
    return f"""
        SELECT {at} AS {name}, {_MESSAGE_KEY}, sum(n)::bigint AS n,
               jsonb_object_agg(latency_ms, n) FILTER (WHERE latency_ms IS NOT NULL) AS latencies
          FROM {rows}
         GROUP BY 1, {_MESSAGE_KEY}
    """  # noqa: S608  # constant names; every input is a bind parameter


#: The ledger events with ``:lo < seq <= :hi`` grouped once by the consent counters' key; ``attributed``: how many of
#: them are of the purpose of the message their opt-out is attributed to (``opt_out`` below).
_GROUPED = f"""
    SELECT {_hour("e.occurred_at")} AS hour, e.channel, e.purpose_id, {_SOURCE} AS source,
           e.trigger, e.from_state, e.to_state, {_DETAIL} AS detail, {_CAMPAIGN} AS campaign, count(*) AS n,
           count(*) FILTER (WHERE e.purpose_id::text = e.personal -> 'evidence' ->> 'attributed_purpose_id')
               AS attributed
      FROM consent_events e
     WHERE e.workspace_id = :ws AND e.seq > :lo AND e.seq <= :hi
     GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
"""  # noqa: S608  # constant names; every input is a bind parameter


def _hourly_consents(grouped: str) -> str:
    """SELECT of the hourly consent counters from the grouped events in ``grouped``."""
    return f"SELECT :ws, hour, {_CONSENT_KEY}, n FROM {grouped}"  # noqa: S608


def _daily_consents(grouped: str) -> str:
    """SELECT of the daily consent counters: the hourly ones summed per UTC day."""
    return f"SELECT :ws, {_day('hour')}, {_CONSENT_KEY}, sum(n)::bigint FROM {grouped} GROUP BY 2, {_CONSENT_KEY}"  # noqa: S608


def _doi_starts(grouped: str) -> str:
    """SELECT of the DOI cohorts' starts (a signup that starts a pending state) per UTC day, channel and purpose.

    The columns of ``report_doi`` after the workspace: cohort day, channel, purpose, ``confirm_s`` (NULL), n.
    """
    return f"""
        SELECT (hour AT TIME ZONE 'UTC')::date, channel, purpose_id, NULL::bigint, sum(n)::bigint FROM {grouped}
         WHERE trigger = 'signup' AND from_state <> 'pending' AND to_state = 'pending'
         GROUP BY 1, 2, 3
    """  # noqa: S608


def _outcomes(grouped: str) -> str:
    """SELECT of the message outcomes that arrive as ledger events, per hour (the message rollups' columns).

    No provider (NULL): the ledger event of a complaint or of an opt-out names none.
    """
    return f"""
        SELECT hour, channel, NULL::text AS provider, purpose_id,
               CASE WHEN trigger = 'complaint' THEN 'complaint' ELSE 'opt_out' END AS outcome, campaign,
               NULL::bigint AS latency_ms, sum(CASE WHEN trigger = 'complaint' THEN n ELSE attributed END)::bigint AS n
          FROM {grouped}
         WHERE trigger = 'complaint' OR (attributed > 0 AND to_state = 'opted_out' AND from_state <> 'opted_out')
         GROUP BY 1, 2, 3, 4, 5, 6
    """  # noqa: S608


#: The ledger events with ``:lo < seq <= :hi``, read and grouped once, added to every rollup counted from them: the
#: hourly and the daily consent counters, the DOI cohorts' starts (a signup that starts a pending state), and the
#: message outcomes that arrive as ledger events. ``complaint``: provider feedback (a spam complaint).
#: ``opt_out``: an opt-out attributed to a message we sent (its unsubscribe link, or a STOP after it), counted under
#: the message's campaign: once per address, by the event of the message's own purpose (a STOP also ends the other
#: purposes and the channel as a whole). (Three statements read the same events before: a rebuild's rate.)
_LEDGER_COUNTS = f"""
    WITH grouped AS ({_GROUPED}
    ), hourly AS (
        INSERT INTO report_consent_counts (workspace_id, hour, {_CONSENT_KEY}, n)
        {_hourly_consents("grouped")}
        {_adding("report_consent_counts")}
    ), daily AS (
        INSERT INTO report_consent_daily (workspace_id, day, {_CONSENT_KEY}, n)
        {_daily_consents("grouped")}
        {_adding("report_consent_daily")}
    ), started AS (
        INSERT INTO report_doi (workspace_id, cohort_day, channel, purpose_id, confirm_s, n)
        SELECT :ws, d.* FROM ({_doi_starts("grouped")}) d
        {_adding("report_doi")}
    ), outcomes AS ({_outcomes("grouped")}
    ), outcomes_hourly AS (
        INSERT INTO report_message_counts (workspace_id, hour, {_MESSAGE_KEY}, n)
        SELECT :ws, hour, {_MESSAGE_KEY}, n FROM outcomes
        {_adding("report_message_counts")}
    )
    INSERT INTO report_message_daily (workspace_id, day, {_MESSAGE_KEY}, n)
    SELECT :ws, {_day("hour")}, {_MESSAGE_KEY}, sum(n)::bigint FROM outcomes
     GROUP BY 2, {_MESSAGE_KEY}
    {_adding("report_message_daily")}
"""  # noqa: S608  # constant names; every input is a bind parameter

#: A rebuild's temporary tables (of the session, dropped after use and at the latest at commit): the whole ledger
#: grouped as :data:`_GROUPED` groups it, the message history counted per hourly and per daily key (with their
#: latencies), and a rollup's differences.
_STAGE = "report_rebuild_ledger"
_MESSAGE_STAGE = "report_rebuild_messages"
_MESSAGE_DAILY_STAGE = "report_rebuild_messages_daily"
_DIFF = "report_rebuild_diff"

#: A rebuild's grouped read of the whole ledger, into :data:`_STAGE`: a statement of its own, so the rebuild can group
#: by hashing (the groups are misestimated as many as the events, so the planner would sort, and spill, the whole
#: ledger). ``CREATE TABLE … AS`` may also be read by parallel workers, unlike a data-modifying CTE; with a lower
#: ``parallel_tuple_cost`` it was (a parallel scan under the serial hash), no faster on two busy cores
#: (docs/benchmarks.md), so the planner's settings are left as they are. No lower ``seq`` bound: the planner reads
#: the ledger in one sequential pass (a prepared statement's generic plan for the bounded range walked the seq
#: index: 3.6 s instead of 0.3 s for a million events).
_STAGE_LEDGER = f"CREATE TEMPORARY TABLE {_STAGE} ON COMMIT DROP AS " + _GROUPED.replace(
    "e.seq > :lo AND e.seq <= :hi", "e.seq <= :hi"
)

#: What confirms a double opt-in: the mail's link (``confirm``), or the start word texted to complete a pending
#: SMS/WhatsApp signup (``start_word`` from ``pending`` to ``opted_in``); the same rule as the ``confirmations``
#: counter (``app.reports.service``).
_CONFIRMS = """(e.trigger = 'confirm'
                OR (e.trigger = 'start_word' AND e.from_state = 'pending' AND e.to_state = 'opted_in'))"""

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
     WHERE e.workspace_id = :ws AND e.seq > :lo AND e.seq <= :hi AND {_CONFIRMS}
     GROUP BY 2, 3, 4, 5
    ON CONFLICT ON CONSTRAINT uq_report_doi_key DO UPDATE SET n = report_doi.n + excluded.n
"""  # noqa: S608


#: A rebuild's DOI confirmations of the whole ledger (cohort day, channel, purpose, seconds, count): each confirmation
#: carries the time its pending state started (``doi_started_at``, set at insert as ``_DOI_CONFIRMED`` pairs a
#: confirmation with its signup: the newest signup of the same contact, address and purpose before it; migration
#: 0045), so the rebuild reads the confirmations alone instead of numbering every signup and confirmation in one
#: sorted window (13.5 s of the rebuild at ten million events, docs/benchmarks.md).
_ALL_DOI_CONFIRMED = f"""
    SELECT (e.doi_started_at AT TIME ZONE 'UTC')::date, e.channel, e.purpose_id,
           {_two_digits("extract(epoch FROM e.occurred_at - e.doi_started_at)")}, count(*)
      FROM consent_events e
     WHERE e.workspace_id = :ws AND e.seq <= :hi AND e.doi_started_at IS NOT NULL AND {_CONFIRMS}
     GROUP BY 1, 2, 3, 4
"""  # noqa: S608


def _counted(events: str) -> str:
    """SELECT of message events with what the message rollups count them by (one row per event).

    ``events``: the FROM/WHERE clause giving the events ``e``, their messages ``m`` and, for a ``sent`` event, its
    delivery's first ``queued`` event ``q`` as ``q.start``: the later of its time and the time the delivery was held
    back to. ``provider``: the one the step names (an attempt's, a provider's report), else NULL, never the
    channel's name: the steps before the send (queued, waiting for a send window, blocked at send, no eligible
    channel) are written before the dispatcher chooses a provider. A ``sent`` whose delivery has no ``queued`` step
    has no latency (NULL: counted, not timed; the rounding's ``greatest`` took the missing one as 0 ms before, which
    pulled the percentiles down: hostile review 2026-12-06). The queue-to-sent milliseconds are computed once per
    event in the inner query (``OFFSET 0`` keeps it from being merged into the outer one, which would repeat the
    computation five times inside the rounding); with the first queued event narrowed to its start, the message
    history's count took a fifth less CPU at a million events (0.65 s against 0.81 s).
    """
    return f"""
        SELECT hour, channel, provider, purpose_id, campaign, outcome,
               CASE WHEN ms IS NOT NULL THEN {_two_digits("ms")} END AS latency_ms
          FROM (SELECT {_hour("e.at")} AS hour, e.channel,
                       e.detail ->> 'provider' AS provider, m.purpose_id, m.campaign,
                       CASE WHEN e.status = 'failed' AND e.detail ? 'provider_status' THEN 'bounced'
                            WHEN e.status IN ('opened', 'clicked') AND e.detail ? 'scanner_signals'
                            THEN e.status || '_by_scanner'
                            ELSE e.status END AS outcome,
                       CASE WHEN e.status = 'sent' THEN extract(epoch FROM e.at - q.start) * 1000 END AS ms
                  {events}
                OFFSET 0) c
    """  # noqa: S608  # constant names; every input is a bind parameter


def _count_messages(head: str, events: str) -> str:
    """One statement counting message events into the hourly and the daily message rollups; answers how many.

    ``head``: the CTEs before ``counted`` (each ending in a comma); ``events``: as :func:`_counted` takes them.
    """
    return f"""
    WITH {head} counted AS ({_counted(events)}
    ), added AS (
        INSERT INTO report_message_counts (workspace_id, hour, {_MESSAGE_KEY}, n, latencies)
        SELECT :ws, h.* FROM ({_with_latencies("counted", "hour", "hour", "count(*)")}) h ORDER BY hour, {_MESSAGE_KEY}
        {_adding("report_message_counts")}
    ), added_daily AS (
        INSERT INTO report_message_daily (workspace_id, day, {_MESSAGE_KEY}, n, latencies)
        SELECT :ws, d.* FROM ({_with_latencies("counted", _day("hour"), "day", "count(*)")}) d
         ORDER BY day, {_MESSAGE_KEY}
        {_adding("report_message_daily")}
    )
    SELECT count(*) FROM counted
    """  # noqa: S608  # constant names; every input is a bind parameter


#: Consume up to :batch queued message events and count them. A failure reported by the provider after the send
#: is a bounce; a retry is a transient failure; an open or click with a mail scanner's signs is the scanner's;
#: ``sent`` carries its queue-to-sent latency, measured from the later of the queueing and the time the delivery
#: was held back to (``not_before``: a send_at or a quiet time). Each taken event and its message is found by its
#: key (``LIMIT 1`` keeps the lookups from being flattened into a hash join, which would read the workspace's whole
#: message history for every batch: a generic plan chose that, and its cost also set off JIT compilation).
_MESSAGES = _count_messages(
    """taken AS (
        DELETE FROM report_message_queue q
         WHERE q.workspace_id = :ws
           AND q.id IN (SELECT id FROM report_message_queue WHERE workspace_id = :ws ORDER BY id LIMIT :batch)
        RETURNING q.event_id
    ),""",
    """FROM taken t
          CROSS JOIN LATERAL (SELECT * FROM message_events e
                               WHERE e.workspace_id = :ws AND e.id = t.event_id LIMIT 1) e
          CROSS JOIN LATERAL (SELECT m.purpose_id, m.campaign FROM messages m
                               WHERE m.workspace_id = :ws AND m.id = e.message_id LIMIT 1) m
          LEFT JOIN LATERAL (
                SELECT greatest(qe.at, (qe.detail ->> 'not_before')::timestamptz) AS start FROM message_events qe
                 WHERE qe.message_id = e.message_id AND qe.delivery_id = e.delivery_id AND qe.status = 'queued'
                 ORDER BY qe.at LIMIT 1) q ON e.status = 'sent'""",
)

_CREATE_MESSAGE_STAGES = tuple(
    f"""
    CREATE TEMPORARY TABLE {stage} ({at} timestamptz, channel text, provider text, purpose_id uuid, outcome text,
                                    campaign text, n bigint, latencies jsonb) ON COMMIT DROP
    """
    for stage, at in ((_MESSAGE_STAGE, "hour"), (_MESSAGE_DAILY_STAGE, "day"))
)

#: A rebuild's count of the whole message history in one pass, per hourly key into :data:`_MESSAGE_STAGE` and per
#: daily key into :data:`_MESSAGE_DAILY_STAGE`, each with its latencies (answers how many events; the events are
#: grouped per hour, key and latency once, and both stages grouped from that): every event the queue would hold
#: (all but ``sending``, as the queueing trigger takes them), each ``sent`` with its delivery's first ``queued``
#: event, found by one grouped read instead of a probe per event. The queue is emptied in the same statement, so
#: what it sees and what it counts are one snapshot: an event committed later stays queued for the next catch-up.
_ALL_EVENTS = """FROM message_events e
          JOIN messages m ON m.workspace_id = :ws AND m.id = e.message_id
          LEFT JOIN queued q ON e.status = 'sent' AND q.message_id = e.message_id AND q.delivery_id = e.delivery_id
         WHERE e.workspace_id = :ws AND e.status <> 'sending'"""
_ALL_MESSAGES = f"""
    WITH dropped AS (DELETE FROM report_message_queue WHERE workspace_id = :ws),
    queued AS (
        SELECT DISTINCT ON (qe.message_id, qe.delivery_id) qe.message_id, qe.delivery_id,
               greatest(qe.at, (qe.detail ->> 'not_before')::timestamptz) AS start
          FROM message_events qe
         WHERE qe.workspace_id = :ws AND qe.status = 'queued'
         ORDER BY qe.message_id, qe.delivery_id, qe.at
    ), counted AS ({_counted(_ALL_EVENTS)}
    ), timed AS MATERIALIZED (
        SELECT hour, {_MESSAGE_KEY}, latency_ms, count(*) AS n FROM counted GROUP BY hour, {_MESSAGE_KEY}, latency_ms
    ), staged AS (
        INSERT INTO {_MESSAGE_STAGE} (hour, {_MESSAGE_KEY}, n, latencies)
        {_with_latencies("timed", "hour", "hour", grouped=True)}
        RETURNING n
    ), staged_daily AS (
        INSERT INTO {_MESSAGE_DAILY_STAGE} (day, {_MESSAGE_KEY}, n, latencies)
        {_with_latencies("timed", _day("hour"), "day")}
    )
    SELECT coalesce(sum(n), 0) FROM staged
"""  # noqa: S608  # constant names; every input is a bind parameter

#: The message rollups a rebuild counted: the history's staged rows and the ledger's outcomes. They never share a
#: key: a ledger outcome is ``complaint`` or ``opt_out``, a history's is a step (``ck_message_events_status_known``)
#: or one named after one (``bounced``, ``opened_by_scanner``, ``clicked_by_scanner``); so a union is one row per key.
_STAGED_MESSAGES = f"""
    SELECT hour, {_MESSAGE_KEY}, n, latencies FROM {_MESSAGE_STAGE}
    UNION ALL
    SELECT hour, {_MESSAGE_KEY}, n, NULL::jsonb FROM ({_outcomes(_STAGE)}) o
"""  # noqa: S608  # constant names
_STAGED_MESSAGES_DAILY = f"""
    SELECT day, {_MESSAGE_KEY}, n, latencies FROM {_MESSAGE_DAILY_STAGE}
    UNION ALL
    SELECT {_day("hour")} AS day, {_MESSAGE_KEY}, sum(n)::bigint, NULL::jsonb FROM ({_outcomes(_STAGE)}) o
     GROUP BY 1, {_MESSAGE_KEY}
"""  # noqa: S608  # constant names

#: What a rebuild finds each rollup of the workspace should hold, from the staged counts: (table, its key columns,
#: the SELECT of key and its values — ``n``, and a message rollup's ``latencies`` — one row per key).
_REBUILT = (
    ("report_consent_counts", f"hour, {_CONSENT_KEY}", f"SELECT hour, {_CONSENT_KEY}, n FROM {_STAGE}"),  # noqa: S608
    (
        "report_consent_daily",
        f"day, {_CONSENT_KEY}",
        (
            f"SELECT {_day('hour')} AS day, {_CONSENT_KEY}, sum(n)::bigint AS n"  # noqa: S608
            f" FROM {_STAGE} GROUP BY 1, {_CONSENT_KEY}"
        ),
    ),
    (
        "report_doi",
        "cohort_day, channel, purpose_id, confirm_s",
        f"""SELECT cohort_day, channel, purpose_id, confirm_s, sum(n)::bigint AS n
              FROM ({_doi_starts(_STAGE)}
                    UNION ALL {_ALL_DOI_CONFIRMED}) d (cohort_day, channel, purpose_id, confirm_s, n)
             GROUP BY 1, 2, 3, 4""",  # noqa: S608
    ),
    (
        "report_message_counts",
        f"hour, {_MESSAGE_KEY}",
        _STAGED_MESSAGES,
    ),
    (
        "report_message_daily",
        f"day, {_MESSAGE_KEY}",
        _STAGED_MESSAGES_DAILY,
    ),
)


def _values(table: str) -> str:
    """A rollup's columns besides its key: the count, and a message rollup's latencies."""
    return "n, latencies" if table in _MESSAGE_TABLES else "n"


def _differences(table: str, key: str, rebuilt: str) -> str:
    """``CREATE TABLE … AS`` of what differs between the workspace's rows of ``table`` and ``rebuilt``.

    A row of either side whose key and count the other side has too is left alone; the others are the differences:
    those with an ``id`` are the table's (to delete), those without are the rebuilt ones (to insert). Grouping puts
    NULLs of a key together, as the rollups' ``NULLS NOT DISTINCT`` unique keys do; each side has a row per key.
    """
    values = _values(table)
    return f"""
        CREATE TEMPORARY TABLE {_DIFF} ON COMMIT DROP AS
        SELECT {key}, {values}, max(id) AS id
          FROM (SELECT NULL::bigint AS id, {key}, {values} FROM ({rebuilt}) r
                UNION ALL
                SELECT id, {key}, {values} FROM {table} WHERE workspace_id = :ws) b
         GROUP BY {key}, {values}
        HAVING count(*) = 1
    """  # noqa: S608  # constant names; every input is a bind parameter


def _fingerprint(rows: str, key: str, values: str = "n") -> str:
    """SELECT of a fingerprint of the multiset of ``rows`` (columns ``key`` and ``values``, one row per key).

    How many rows, their total count, and the sum of a 64-bit hash of each row: equal for the same rows in any
    order. Each row is hashed by its columns' own hash functions (no text conversion), then that hash is hashed
    again: ``hash_record_extended`` combines its columns' hashes linearly (``31 * result + h(column)``), so a sum of
    its values alone depended mostly on each column's values, not on which share a row, and two rows' counts (or
    campaigns, hours, latency buckets) swapped kept the sum — a wrong rollup left as it was (hostile review
    2026-12-06). ``hashint8extended`` mixes each row's hash non-linearly before the sum. A column of another type
    than the rollup's would only make the fingerprints differ (the rows are then compared one by one).
    """
    return f"""
        SELECT count(*), sum(n), sum(hashint8extended(hash_record_extended(ROW({key}, {values}), 0), 0))
          FROM ({rows}) f
    """  # noqa: S608  # constant names; every input is a bind parameter


_LEDGER = (_LEDGER_COUNTS, _DOI_CONFIRMED)


async def lock_watermark(session: AsyncSession, workspace_id: uuid.UUID) -> int:
    """The workspace's ledger watermark (created at 0), locked until commit: one catch-up at a time.

    Every writer of the counters holds it, and so keeps them from outliving their workspace (they have no foreign key,
    migration 0048): a workspace deletion's rounds delete the watermark, waiting for the catch-up or rebuild that
    holds it, and go on until a round finds nothing; a catch-up after that creates the watermark again, and its
    foreign key holds the workspace row ``KEY SHARE`` until commit, which the deletion's last step waits for
    (``FOR UPDATE``) before it deletes the counters and the row.
    """
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


async def for_a_rebuild(session: AsyncSession) -> None:
    """Memory for the rest of the transaction to group a whole ledger in memory (hash, not sort and spill), no JIT."""
    await without_jit(session)
    await session.execute(text("SET LOCAL work_mem = '64MB'"))  # per hash node, times hash_mem_multiplier


async def without_jit(session: AsyncSession) -> None:
    """No JIT compilation for the rest of the transaction.

    The rollup statements are many small ones; a generic plan's cost estimate (a prepared statement's, whatever the
    batch holds) set off JIT compilation of about 0.5 s in each catch-up on a server built with LLVM, far more than
    the statements themselves take.
    """
    await session.execute(text("SET LOCAL jit = off"))


async def count_ledger(session: AsyncSession, workspace_id: uuid.UUID, lo: int, hi: int) -> None:
    """Add the ledger events with ``lo < seq <= hi`` to the rollups and move the watermark to ``hi``."""
    params = {"ws": workspace_id, "lo": lo, "hi": hi}
    for statement in _LEDGER:
        await session.execute(text(statement), params)
    await _move_watermark(session, workspace_id, hi)


async def _move_watermark(session: AsyncSession, workspace_id: uuid.UUID, hi: int) -> None:
    await session.execute(
        text("UPDATE report_watermarks SET ledger_seq = :hi WHERE workspace_id = :ws"), {"ws": workspace_id, "hi": hi}
    )


async def count_messages(session: AsyncSession, workspace_id: uuid.UUID, batch: int) -> int:
    """Consume up to ``batch`` queued message events of the workspace into the rollups; answers how many."""
    return int(await session.scalar(text(_MESSAGES), {"ws": workspace_id, "batch": batch}) or 0)


async def _hashed(session: AsyncSession, statement: str, params: dict[str, Any]) -> None:
    """Run ``statement`` grouping by hashing, not sorting.

    The planner estimates a grouped read of the rollups' wide keys to give as many groups as rows, so it would sort
    (and spill) every row; the groups, a few per event at most, fit in memory.
    """
    sort = await session.scalar(text("SELECT current_setting('enable_sort')"))
    await session.execute(text("SET LOCAL enable_sort = off"))
    await session.execute(text(statement), params)
    await session.execute(text("SELECT set_config('enable_sort', :value, true)"), {"value": sort})


async def rebuild(session: AsyncSession, workspace_id: uuid.UUID, hi: int) -> int:
    """Count the ledger up to ``hi`` and the whole message history again into the workspace's rollups.

    The queue is emptied and the watermark moved to ``hi``; answers how many message events were counted. Every
    count is staged first (temporary tables); then each rollup is given exactly the staged rows by deleting the
    rows that differ and inserting the missing ones, in the rollup's key order: a rebuild of right rollups writes
    nothing, and one of lost or wrong rollups writes what it must; a rollup whose fingerprint equals its count's is
    not compared row by row at all. (Writing every row again was about 70 % of a
    rebuild at a million events: per row, a unique key of ten text and nullable columns to check and extend, and a
    foreign key to check; docs/benchmarks.md.) The caller holds the watermark's lock, so no catch-up writes
    between these statements.
    """
    ws = {"ws": workspace_id}
    await _hashed(session, _STAGE_LEDGER, {**ws, "hi": hi})
    for stage in _CREATE_MESSAGE_STAGES:
        await session.execute(text(stage))
    messages = int(await session.scalar(text(_ALL_MESSAGES), ws) or 0)
    for table, key, rebuilt in _REBUILT:
        params = {**ws, "hi": hi} if table == "report_doi" else ws
        values = _values(table)
        held = f"SELECT {key}, {values} FROM {table} WHERE workspace_id = :ws"  # noqa: S608  # constant names
        stored = tuple((await session.execute(text(_fingerprint(held, key, values)), ws)).one())
        if not stored[0]:
            # nothing to compare with (lost rollups, a first count): the counted rows go in as they are
            counted = rebuilt
            if table == "report_doi":
                # its count reads the ledger itself (the confirmations): counted first by a statement PostgreSQL
                # may run in parallel, which it never does for an INSERT … SELECT (3.3 s serial against under 1 s
                # at ten million events, docs/benchmarks.md); a few thousand rows then go in
                await session.execute(text(f"CREATE TEMPORARY TABLE {_DIFF} ON COMMIT DROP AS {rebuilt}"), params)
                counted = f"SELECT {key}, n FROM {_DIFF}"  # noqa: S608  # constant names
            await session.execute(
                text(
                    f"INSERT INTO {table} (workspace_id, {key}, {values})"  # noqa: S608  # constant names
                    f" SELECT :ws, r.* FROM ({counted}) r ORDER BY {key}"
                ),
                params,
            )
            if table == "report_doi":
                await session.execute(text(f"DROP TABLE {_DIFF}"))
            continue
        if tuple((await session.execute(text(_fingerprint(rebuilt, key, values)), params)).one()) == stored:
            continue  # the rollup holds exactly the counted rows (the usual case): nothing to compare or write
        if table == "report_doi":  # a few rows per day, from a read that must sort (window functions)
            await session.execute(text(_differences(table, key, rebuilt)), params)
        else:
            await _hashed(session, _differences(table, key, rebuilt), params)
        await session.execute(
            text(
                f"DELETE FROM {table} WHERE workspace_id = :ws"  # noqa: S608  # constant names
                f" AND id IN (SELECT id FROM {_DIFF} WHERE id IS NOT NULL)"
            ),
            ws,
        )
        await session.execute(
            text(
                f"INSERT INTO {table} (workspace_id, {key}, {values})"  # noqa: S608  # constant names
                f" SELECT :ws, {key}, {values} FROM {_DIFF} WHERE id IS NULL ORDER BY {key}"
            ),
            ws,
        )
        await session.execute(text(f"DROP TABLE {_DIFF}"))
    await session.execute(text(f"DROP TABLE {_STAGE}, {_MESSAGE_STAGE}, {_MESSAGE_DAILY_STAGE}"))
    await _move_watermark(session, workspace_id, hi)
    return messages


async def queued_messages(session: AsyncSession, workspace_id: uuid.UUID) -> int:
    """How many message events of the workspace wait to be counted."""
    return int(
        await session.scalar(
            text("SELECT count(*) FROM report_message_queue WHERE workspace_id = :ws"), {"ws": workspace_id}
        )
        or 0
    )


#: The tables a rebuild rewrites.
ROLLUPS = (*_CONSENT_TABLES, "report_doi", *_MESSAGE_TABLES, "report_message_queue")


async def vacuum_rollups(connection: AsyncConnection) -> None:
    """Clear the dead rows a rebuild leaves in the rollups and give the planner their new size (autocommit).

    Every counter a rebuild writes replaces a deleted one: until autovacuum comes by, reads step over both, and the
    statistics still describe the rollups as they were (the plans of a large workspace's first reports suffer).
    """
    await connection.execute(text(f"VACUUM (ANALYZE) {', '.join(ROLLUPS)}"))


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
    #: read whole UTC days from the daily counters (buckets of a day or longer); else every hour from the hourly ones
    daily: bool = False
    campaigns: Collection[str] = ()


def _day_floor(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _days_within(start: datetime | None, end: datetime, *, daily: bool) -> tuple[datetime, datetime]:
    """The whole UTC days ``[first, last)`` within ``[start, end)`` (``start`` None: from the beginning).

    Both are ``end`` (no day) when the hourly counters are to be read throughout.
    """
    first = _day_floor(start) if start is not None else datetime(1970, 1, 1, tzinfo=UTC)
    if start is not None and first < start:
        first += timedelta(days=1)
    last = _day_floor(end)
    if not daily or first >= last:
        return end, end
    return first, last


def _rows_between(tables: tuple[str, str], columns: str, selection: Selection, *, since: bool = True) -> str:
    """SQL of the rollup rows in ``[:start, :end)`` as ``r``, their time as ``at``, read from both tables.

    The whole UTC days ``[:first_day, :last_day)`` come from the daily table, the hours before and after them from
    the hourly one: a range of whole days reads only daily rows (24 times fewer), one a few hours off midnight the
    daily rows and at most a day of hours at each end, not every hour of the range. ``since=False``: no lower bound
    (every earlier row).
    """
    hourly, daily = tables
    filters = _filters(selection)
    low = "r.hour >= :start AND " if since else ""
    return f"""(
        SELECT r.day AS at, {columns} FROM {daily} r
         WHERE r.workspace_id = :ws AND r.day >= :first_day AND r.day < :last_day{filters}
        UNION ALL
        SELECT r.hour AS at, {columns} FROM {hourly} r
         WHERE r.workspace_id = :ws AND {low}r.hour < :first_day{filters}
        UNION ALL
        SELECT r.hour AS at, {columns} FROM {hourly} r
         WHERE r.workspace_id = :ws AND r.hour >= :last_day AND r.hour < :end{filters}
    ) r"""  # noqa: S608  # constant names; every value is a bind parameter (each part one range of the key)


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
    rows = _rows_between(_CONSENT_TABLES, _CONSENT_KEY + ", n", selection)
    sql = f"""
        SELECT date_trunc(:g, r.at, 'UTC') AS bucket{dims}{extra}, r.from_state, r.to_state, r.detail,
               sum(r.n)::bigint AS n
          FROM {rows}
         GROUP BY 1{dims}{extra}, r.from_state, r.to_state, r.detail
    """  # noqa: S608  # columns from a closed list; values are bind parameters
    first, last = _days_within(start, end, daily=selection.daily)
    params = _params(selection, ws=workspace_id, g=granularity, start=start, end=end, first_day=first, last_day=last)
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
    rows = _rows_between(_CONSENT_TABLES, _CONSENT_KEY + ", n", selection, since=False)
    sql = f"""
        SELECT {_DELTA} AS total{dims}
          FROM {rows}
         WHERE (r.to_state = 'opted_in') <> (r.from_state = 'opted_in')
         GROUP BY {"1" if not dims else dims.lstrip(", ")}
    """  # noqa: S608
    if not dims:
        sql = sql.replace("GROUP BY 1", "")
    first, last = _days_within(None, before, daily=True)
    params = _params(selection, ws=workspace_id, end=before, first_day=first, last_day=last)
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
    """Double opt-in cohorts per bucket x group x seconds to confirm: every signup day [start, end) touches.

    A cohort is a whole UTC day: a range that starts or ends within a day shows that day's whole cohort in its
    bucket (as the bucket is named by the day), not a part of it (newcomer review: the day ``to`` fell in was
    left out, and its cohort turned up in the next range's bucket instead).
    """
    group_by = selection.group_by
    dims = _dimensions(group_by, ("channel", "purpose"))
    sql = f"""
        SELECT date_trunc(:g, r.cohort_day::timestamp AT TIME ZONE 'UTC', 'UTC') AS bucket{dims}, r.confirm_s,
               sum(r.n)::bigint AS n
          FROM report_doi r
         WHERE r.workspace_id = :ws AND r.cohort_day >= (:start AT TIME ZONE 'UTC')::date
           AND r.cohort_day <= ((:end AT TIME ZONE 'UTC') - interval '1 microsecond')::date{_filters(selection)}
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
    """Summed message counters per bucket x group x outcome, in [start, end), with the latency percentiles.

    ``latency_p50_ms`` and ``latency_p99_ms``: the nearest-rank percentiles of the counted latencies (the smallest
    latency with at least ``ceil(fraction x total)`` at or below it, as :func:`app.reports.service.percentile`
    computes them, in double precision as Python does), ``None`` where none was counted. Computed here, so a
    report receives a row per outcome instead of one per distinct latency (tens of thousands over 90 days).
    """
    group_by = selection.group_by
    dims = _dimensions(group_by, ("channel", "purpose", "provider", "campaign"))
    names = dims.replace(", r.", ", ")
    rows = _rows_between(_MESSAGE_TABLES, _MESSAGE_KEY + ", n, latencies", selection)
    sql = f"""
        WITH grouped AS (  -- per bucket, group and outcome: its total (latency NULL) and a row per latency
            SELECT date_trunc(:g, r.at, 'UTC') AS bucket{dims}, r.outcome, l.latency_ms,
                   sum(l.total)::bigint AS total, sum(l.n)::bigint AS n
              FROM {rows}
             CROSS JOIN LATERAL (SELECT NULL::bigint, r.n, 0::bigint
                                 UNION ALL
                                 SELECT ms::bigint, 0, c::bigint FROM jsonb_each_text(r.latencies) j (ms, c)
                                ) l (latency_ms, total, n)
             GROUP BY 1{dims}, r.outcome, l.latency_ms
        ), ranked AS (
            SELECT g.*,
                   sum(n) OVER (PARTITION BY bucket{names}, outcome ORDER BY latency_ms ROWS UNBOUNDED PRECEDING)
                       AS seen,
                   sum(n) OVER (PARTITION BY bucket{names}, outcome) AS timed
              FROM grouped g
        )
        SELECT bucket{names}, outcome, sum(total)::bigint AS n,
               min(latency_ms) FILTER (WHERE latency_ms IS NOT NULL
                                         AND seen >= greatest(1, ceil(0.5::float8 * timed))) AS latency_p50_ms,
               min(latency_ms) FILTER (WHERE latency_ms IS NOT NULL
                                         AND seen >= greatest(1, ceil(0.99::float8 * timed))) AS latency_p99_ms
          FROM ranked
         GROUP BY bucket{names}, outcome
    """  # noqa: S608
    first, last = _days_within(start, end, daily=selection.daily)
    params = _params(selection, ws=workspace_id, g=granularity, start=start, end=end, first_day=first, last_day=last)
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
    """Every rollup row of the workspace (ids left out), sorted: for comparing a rebuild with the increments.

    A message rollup's ``latencies`` as its sorted (milliseconds, count) pairs.
    """
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
        ("report_message_counts", "hour, channel, provider, purpose_id, outcome, latencies, campaign, n"),
        ("report_message_daily", "day, channel, provider, purpose_id, outcome, latencies, campaign, n"),
    ):
        sql = f"SELECT {columns} FROM {table} WHERE workspace_id = :ws"  # noqa: S608  # constant names
        rows = await session.execute(text(sql), {"ws": workspace_id})
        found[table] = sorted((tuple(map(_comparable, row)) for row in rows), key=repr)
    return found


def _comparable(value: Any) -> Any:
    """A column's value as a comparable, hashable one: a latency histogram as its sorted (milliseconds, count)."""
    if isinstance(value, dict):
        return tuple(sorted((int(ms), int(n)) for ms, n in value.items()))
    return value


_STANDING_PURPOSES = text("SELECT id, kind, validity, inactivity FROM purposes WHERE workspace_id = :ws ORDER BY key")


async def standing_purposes(session: AsyncSession, workspace_id: uuid.UUID) -> Sequence[Row[Any]]:
    """The workspace's purposes with what their eligible count needs (kind, lifecycle)."""
    return (await session.execute(_STANDING_PURPOSES, {"ws": workspace_id})).all()


async def eligible_counts(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    purpose_id: uuid.UUID,
    kind: PurposeKind,
    policy: Policy,
    *,
    push_services: tuple[str, ...] | None,
) -> dict[str, int]:
    """Addresses per channel the send gate permits for the purpose now: the audience export's rows, counted.

    ``push_services`` as for the export: a web push endpoint off the operator's push services is not counted.
    """
    raw = await (await session.connection()).get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    channels = list(Channel)
    push = await push_hosts_args(driver, workspace_id, channels, push_services)
    sql = audience_sql(kind, channels, policy=policy, push_hosts=3 if push else None)
    counted = f"SELECT a.channel, count(*) AS n FROM ({sql}) a GROUP BY 1"  # noqa: S608  # the domain's own words
    rows = await driver.fetch(counted, workspace_id, purpose_id, *push)
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
