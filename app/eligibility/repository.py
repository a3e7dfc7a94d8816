"""All SQL of eligibility. Facts for the gate in one round trip; the audience filter in SQL, built from the gate."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.gate import CUSTOMER_CHANNELS, CUSTOMER_REPLACES, ELIGIBLE, STATE_REASON, ConsentFact, PointFacts
from app.domain.model import WITHDRAWN_STATES, Channel, PurposeKind, Reachability, State, SuppressionScope
from app.domain.validity import End, Policy, Span, policy_of
from app.lib.copystream import copy_rows, csv_cell
from app.lib.outbound import PLAIN_PUSH_ENDPOINT, listed, split_patterns
from app.workspaces.settings import WorkspaceSettings

#: The workspace time zone when its settings name none (the settings' default, omitted from the stored JSON).
DEFAULT_TIMEZONE = WorkspaceSettings().timezone

#: Message steps that count as engagement on an address for a purpose's ``inactivity`` (``opened`` and ``clicked``
#: where the messages package records them; a step it does not know matches nothing).
ENGAGEMENT_STEPS = ("delivered", "opened", "clicked")
#: The campaign label of re-permission messages (:mod:`app.lifecycle`): their own steps are no engagement.
REPERMISSION_CAMPAIGN = "repermission"


def engaged_sql(point: str, workspace: str) -> str:
    """The latest engagement on the address ``point`` (an SQL expression; ``workspace`` its workspace id)."""
    steps = ", ".join(f"'{step}'" for step in ENGAGEMENT_STEPS)
    # an event of the delivery to the address, or one of its message on its channel that names no delivery (an
    # open or click recorded for the message)
    # not the re-permission message itself (its delivery must not renew what only its button may: hostile review),
    # nor a step with a mail scanner's signs (a scanner's click is nobody's engagement)
    return f"""(SELECT max(e.at) FROM deliveries d
                 JOIN messages m ON m.id = d.message_id
                 JOIN message_events e ON e.message_id = d.message_id
                                      AND (e.delivery_id = d.id OR (e.delivery_id IS NULL AND e.channel = d.channel))
                WHERE d.contact_point_id = {point} AND d.workspace_id = {workspace} AND e.status IN ({steps})
                  AND m.campaign IS DISTINCT FROM '{REPERMISSION_CAMPAIGN}'
                  AND NOT coalesce(e.detail ? 'scanner_signals', FALSE))"""  # noqa: S608


def interval_sql(span: Span | str) -> str:
    """An SQL interval: a parsed span as a literal, or a stored span (``'P24M'``, an SQL text expression) cast.

    PostgreSQL reads the stored ISO 8601 text the way :func:`app.domain.validity.parse_span` does: years as
    12 months, weeks as 7 days.
    """
    if isinstance(span, Span):
        return f"interval '{int(span.months)} months {int(span.days)} days'"
    return f"CAST({span} AS interval)"


def span_end_sql(start: str, span: Span | str, timezone: str) -> str:
    """``start`` + ``span`` on the wall clock of ``timezone`` in SQL: the one place an end instant is computed.

    ``timestamptz AT TIME ZONE`` gives the wall clock, ``+ interval`` adds months (clamped at the month's end) then
    days, and ``AT TIME ZONE`` back reads a skipped or repeated wall-clock time the later way
    (:mod:`app.domain.validity` states the rules). ``span``: a parsed span, or an SQL expression of a stored one
    (NULL: no end); ``start`` and ``timezone`` are SQL expressions.

    Every end, the audience export's, eligibility's, the sweep's and the import's, is this expression, computed by
    the database with the database's time-zone data: where the application's own tz database differs from the
    server's (another release, other rules near a clock change), nothing can disagree.
    """
    return f"((({start}) AT TIME ZONE {timezone}) + {interval_sql(span)}) AT TIME ZONE {timezone}"


def span_start_sql(end: str, span: Span, timezone: str) -> str:
    """``end`` minus ``span`` on the wall clock of ``timezone``: from when a re-permission may be asked.

    Days first, then months; clamped and read as :func:`span_end_sql` does.
    """
    return (
        f"((({end}) AT TIME ZONE {timezone}) - interval '{int(span.days)} days'"
        f" - interval '{int(span.months)} months') AT TIME ZONE {timezone}"
    )


def ends_sql(
    since: str, *, engaged: str, validity: Span | str | None, inactivity: Span | str | None, timezone: str
) -> tuple[str, str]:
    """(validity end, inactivity end) of a consent given at ``since``, as SQL expressions (NULL: the rule is unset).

    Inactivity counts from the latest engagement on the address (``engaged``, NULL: none), or from ``since`` where
    there was none since (a consent given yesterday is not inactive because of an old message).
    The consent ends at the earlier of the two (:func:`end_sql`; on a tie, ``validity`` is named).
    """
    by_validity = "NULL::timestamptz" if validity is None else span_end_sql(since, validity, timezone)
    by_inactivity = (
        "NULL::timestamptz"
        if inactivity is None
        else span_end_sql(f"greatest({since}, {engaged})", inactivity, timezone)
    )
    return by_validity, by_inactivity


def end_sql(
    since: str, *, engaged: str, validity: Span | str | None, inactivity: Span | str | None, timezone: str
) -> str:
    """The instant a consent given at ``since`` ends (SQL; NULL: never): the earlier of :func:`ends_sql`."""
    by_validity, by_inactivity = ends_sql(
        since, engaged=engaged, validity=validity, inactivity=inactivity, timezone=timezone
    )
    return f"least({by_validity}, {by_inactivity})"  # least() passes over NULL


def earlier_end(by_validity: datetime | None, by_inactivity: datetime | None) -> End | None:
    """The end of a consent from its two ends as the database computed them (:func:`ends_sql`)."""
    if by_validity is not None and (by_inactivity is None or by_validity <= by_inactivity):
        return End(by_validity, "validity")
    return End(by_inactivity, "inactivity") if by_inactivity is not None else None


def span_bounds(span: Span) -> tuple[int, int]:
    """Whole days a span lasts at least and at most, whatever the calendar and the clock changes.

    A month is 28 to 31 days (a clamped day only shortens it); a change of UTC offset moves the end by less than two
    days either way (the largest on record, Samoa skipping 30 December 2011, was one day).
    """
    return span.months * 28 + span.days - 2, span.months * 31 + span.days + 2


def lapsed_sql(policy: Policy, *, since: str, point: str, workspace: str, timezone: str, now: str) -> str:
    """Whether a consent given at ``since`` on the address ``point`` has ended by ``now`` under ``policy`` (SQL).

    The exact instant (:func:`span_end_sql`, the same expression every reader of an end uses) is computed only where
    cheap bounds cannot tell: a consent given more
    than the longest reading of the span ago has ended, one given less than the shortest has not (and needs no
    look-up of its engagement). Every end lies within those readings of its own start, so the bounds never change
    the answer.
    """
    ends: list[str] = []
    at = f"CAST({now} AS timestamptz)"  # a bind parameter's type is not guessed from an interval beside it
    if policy.validity is not None:
        shortest, longest = span_bounds(policy.validity)
        exact = f"{span_end_sql(since, policy.validity, timezone)} <= {now}"
        ends.append(
            f"({since} <= {at} - interval '{longest} days'"
            f" OR ({since} < {at} - interval '{shortest} days' AND {exact}))"
        )
    if policy.inactivity is not None:
        shortest, _ = span_bounds(policy.inactivity)
        active = f"greatest({since}, {engaged_sql(point, workspace)})"
        exact = f"{span_end_sql(active, policy.inactivity, timezone)} <= {now}"
        ends.append(f"({since} < {at} - interval '{shortest} days' AND {exact})")
    return f"({' OR '.join(ends)})" if ends else "FALSE"


@functools.lru_cache(maxsize=1024)
def lifecycle_policy(validity: str | None, inactivity: str | None) -> Policy:
    """A purpose's validity and inactivity, parsed once per distinct pair."""
    return policy_of(validity, inactivity)


def _ends_column(consent: str, *, engaged: str, validity: str, inactivity: str, timezone: str) -> str:
    """The end of the consent row ``consent`` (``pc``/``cc``) where it is opted in and its purpose's consents end.

    ``validity`` and ``inactivity``: SQL expressions of the purpose's stored spans; ``engaged``: the address's
    latest engagement. The database computes it (:func:`span_end_sql`): eligibility and the export read the same
    instant.
    """
    end = end_sql(f"{consent}.since", engaged=engaged, validity=validity, inactivity=inactivity, timezone=timezone)
    return (
        f"CASE WHEN {consent}.state = '{State.OPTED_IN.value}' AND {consent}.since IS NOT NULL"
        f" AND ({validity} IS NOT NULL OR {inactivity} IS NOT NULL) THEN {end} END"
    )


def with_end(consent: ConsentFact | None, ends_at: datetime | None) -> ConsentFact | None:
    """``consent`` with the end the database computed for it (:func:`_ends_column`), where it has one."""
    if consent is None or ends_at is None or consent.state is not State.OPTED_IN:
        return consent
    return dataclasses.replace(consent, ends_at=ends_at)


#: The ends of the purpose consent (``pc``) and the channel consent (``cc``) where the query names the purpose's
#: lifecycle ``pol`` and the engagement ``eg``.
_POL_PC_ENDS = _ends_column(
    "pc", engaged="eg.at", validity="pol.validity", inactivity="pol.inactivity", timezone="pol.tz"
)
_POL_CC_ENDS = _ends_column(
    "cc", engaged="eg.at", validity="pol.validity", inactivity="pol.inactivity", timezone="pol.tz"
)

#: The consent states the existing-customer basis stands in for, as SQL literals (:data:`CUSTOMER_REPLACES`).
_CUSTOMER_STATES = ", ".join(sorted(f"'{s.value}'" for s in CUSTOMER_REPLACES))
_WITHDRAWN = ", ".join(sorted(f"'{s.value}'" for s in WITHDRAWN_STATES))


def _customer_join(point: str, purpose: str) -> str:
    """UWG §7(3) facts of the address ``point`` for the purpose ``purpose`` (SQL expressions, never input).

    ``cu.event_id``: the ledger event of the newest purchase made with the email address in a category the purpose
    names; ``cu.withdrawn``: a withdrawal or objection was ever recorded for the address, on any purpose (the issue:
    "any objection or unsubscribe ends it"; one probe of ``ix_consent_events_withdrawals``, only for an address
    with such a purchase).
    """
    return f"""
      LEFT JOIN LATERAL (
          SELECT pu.event_id,
                 EXISTS (SELECT 1 FROM consent_events e
                          WHERE e.contact_point_id = pu.contact_point_id AND e.to_state IN ({_WITHDRAWN})) AS withdrawn
            FROM purchases pu
           WHERE {point}.channel = '{Channel.EMAIL.value}' AND pu.contact_point_id = {point}.id
             AND pu.category = ANY((SELECT similar_products_of FROM purposes WHERE id = {purpose})::text[])
           ORDER BY pu.purchased_at DESC, pu.id DESC
           LIMIT 1) cu ON TRUE"""  # noqa: S608  # enum values and SQL expressions of this module only


def _suppressions_sql(source: str, workspace: str, purpose: str, carry: str = "") -> str:
    """``(scope, until)`` of the suppressions under the keys ``k.key`` of ``source`` that concern the purpose.

    Those of ``suppressions`` and the Robinson keys (``robinson_keys``, migration 0042: print, all marketing, no
    end), each joined by itself as ``suppressions`` was before: one index probe per key into a ``(workspace_id,
    key, …)`` B-tree, one probe more per key for the Robinson keys. (One join against a ``UNION ALL`` of both
    tables instead made the single check about half as fast in the benchmark: docs/benchmarks.md.)
    ``carry``: columns of ``source`` to keep, each followed by a comma.
    """
    return f"""
        SELECT {carry}s.scope, s.until FROM {source}
          JOIN suppressions s ON s.workspace_id = {workspace} AND s.key = k.key
         WHERE s.scope <> 'purpose' OR s.purpose_id = {purpose}
        UNION ALL
        SELECT {carry}'{SuppressionScope.ALL_MARKETING.value}'::text, NULL::timestamptz FROM {source}
          JOIN robinson_keys r ON r.workspace_id = {workspace} AND r.key = k.key"""  # noqa: S608  # our own SQL only


_PTS_KEYS = "pts CROSS JOIN LATERAL unnest(pts.suppression_keys) AS k(key)"


def gate_facts_sql(points: str, *, workspace: str, default_tz: str, carry: str = "") -> str:
    """The send gate's facts of the addresses ``points`` selects, each with its ``digest`` (one SQL statement).

    ``points``: a SELECT of contact points with the columns ``id, workspace_id, contact_id, channel, value,
    reachability, suppression_keys, verified_at`` and ``purpose_id`` (the purpose decided for; an address may come
    once per purpose), plus the columns ``carry`` names (each as ``pts.<name>, ``) handed through.
    ``workspace``: an SQL expression of the addresses' workspace (a bind parameter where there is one, else
    ``pts.workspace_id``); ``default_tz``: of the time zone of a workspace whose settings name none.

    ``digest`` is an md5 of every fact :func:`app.domain.gate.decide_point` reads (consent states, since, events
    and ends of the purpose and the channel, suppression scopes in force, pause, reachability, verification, the
    contact's and the workspace's time zones, the workspace's send windows, the existing-customer purchase and
    withdrawal), timestamps as epochs so no session setting changes it; for a transactional purpose only what its
    decision reads (reachability, verification, an "everything" suppression: a marketing STOP, a pause, a send
    window or a time zone changes nothing a transactional decision depends on, so it costs no decision again;
    hostile review 2026-12-06, R4). The dispatcher's in-flight marks recompute
    it with this same SQL in their own statement and mark a delivery only while it is unchanged
    (:func:`app.messages.repository.mark_and_settle_sent`).
    """
    inner = (
        f"""
    WITH pts AS ({points}), sup AS (
        -- one hash join for the whole set (a per-row lookup rebuilds its hash for every row); a pause (a row with
        -- an end) is no scope but an end the gate compares with the moment it decides for
        SELECT s.id, s.purpose_id, array_agg(DISTINCT s.scope) FILTER (WHERE s.until IS NULL) AS scopes,
               max(s.until) AS paused_until
          FROM ({_suppressions_sql(_PTS_KEYS, workspace, "pts.purpose_id", "pts.id, pts.purpose_id, ")}) s
         GROUP BY s.id, s.purpose_id
    )
    SELECT {carry}pts.id, pts.contact_id, pts.channel, pts.value, pts.reachability, pts.verified_at, c.timezone,
           pc.state AS p_state, pc.since AS p_since, pc.last_event_id AS p_event,
           cc.state AS c_state, cc.since AS c_since, cc.last_event_id AS c_event,
           coalesce(sup.scopes, '{{}}') AS scopes, sup.paused_until,
           {_POL_PC_ENDS}
               AS p_ends,
           {_POL_CC_ENDS}
               AS c_ends,
           cu.event_id AS customer_event, coalesce(cu.withdrawn, FALSE) AS customer_withdrawn,
           pol.tz AS workspace_tz, pol.windows, pol.kind AS purpose_kind
      FROM pts
      JOIN contacts c ON c.id = pts.contact_id
      -- the purpose's lifecycle (app.domain.validity), the workspace's time zone it is counted in, its send windows
      LEFT JOIN LATERAL (SELECT p.kind, p.validity, p.inactivity,
                                coalesce(w.settings->>'timezone', {default_tz}) AS tz,
                                w.settings->'send_windows' AS windows
                           FROM purposes p JOIN workspaces w ON w.id = p.workspace_id
                          WHERE p.id = pts.purpose_id AND p.workspace_id = {workspace}) pol ON TRUE
      LEFT JOIN sup ON sup.id = pts.id AND sup.purpose_id = pts.purpose_id"""  # noqa: S608  # our own SQL only
        + _customer_join("pts", "pts.purpose_id")
        + """
      -- per-address index lookups (see _BATCH_FACTS)
      LEFT JOIN LATERAL (SELECT state, since, last_event_id FROM consents
                          WHERE contact_point_id = pts.id AND purpose_id = pts.purpose_id LIMIT 1) pc ON TRUE
      LEFT JOIN LATERAL (SELECT state, since, last_event_id FROM consents
                          WHERE contact_point_id = pts.id AND purpose_id IS NULL LIMIT 1) cc ON TRUE
      -- the latest engagement, looked up once and only where the purpose has an inactivity
      LEFT JOIN LATERAL (SELECT CASE WHEN pol.inactivity IS NOT NULL THEN """
        + engaged_sql("pts.id", workspace)
        + """ END AS at) eg ON TRUE"""
    )
    epoch = "extract(epoch FROM f.{})".format
    facts = ", ".join(
        [
            "f.id",
            "f.channel",
            "f.value",
            "f.reachability",
            "f.verified_at IS NOT NULL",
            "f.timezone",
            "f.p_state",
            epoch("p_since"),
            "f.p_event",
            "f.c_state",
            epoch("c_since"),
            "f.c_event",
            "f.scopes",
            epoch("paused_until"),
            epoch("p_ends"),
            epoch("c_ends"),
            "f.customer_event",
            "f.customer_withdrawn",
            "f.workspace_tz",
            "f.windows",
        ]
    )
    # a transactional decision reads only these (app.domain.gate._transactional and the "everything" suppression)
    transactional = "f.id, f.reachability, f.verified_at IS NOT NULL, 'all' = ANY(f.scopes)"
    digest = (
        f"CASE WHEN f.purpose_kind = 'transactional' THEN md5(row('transactional', {transactional})::text)"
        f" ELSE md5(row({facts})::text) END"
    )
    return f"SELECT f.*, {digest} AS digest FROM ({inner}) f"  # noqa: S608  # our own SQL only


_FACTS = text(
    gate_facts_sql(  # noqa: S608  # our own SQL; every input is a bind parameter
        """SELECT cp.id, cp.workspace_id, cp.contact_id, cp.channel, cp.value, cp.reachability, cp.suppression_keys,
                  cp.verified_at, CAST(:purpose_id AS uuid) AS purpose_id
             FROM contact_points cp
            WHERE cp.workspace_id = :workspace_id AND cp.contact_id = ANY(:contact_ids)
              AND cp.channel = ANY(:channels)""",
        workspace=":workspace_id",
        default_tz=":default_tz",
    )
    + " ORDER BY f.contact_id, f.channel, f.id"
)


def _consent(state: str | None, since: Any, event: uuid.UUID | None) -> ConsentFact | None:
    return None if state is None else ConsentFact(State(state), since, event)


async def point_facts(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    contact_ids: Sequence[uuid.UUID],
    channels: Sequence[str],
    purpose_id: uuid.UUID,
) -> list[tuple[uuid.UUID, PointFacts]]:
    """(contact id, facts) for every contact point of the contacts on the channels."""
    return [
        (contact_id, facts)
        for contact_id, facts, _ in await gate_facts(session, workspace_id, contact_ids, channels, purpose_id)
    ]


async def gate_facts(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    contact_ids: Sequence[uuid.UUID],
    channels: Sequence[str],
    purpose_id: uuid.UUID,
) -> list[tuple[uuid.UUID, PointFacts, str]]:
    """(contact id, facts, digest) for every contact point of the contacts on the channels.

    The digest (:func:`gate_facts_sql`) is what the dispatcher's in-flight mark compares the facts of its moment
    with.
    """
    rows = await session.execute(
        _FACTS,
        {
            "workspace_id": workspace_id,
            "contact_ids": list(contact_ids),
            "channels": list(channels),
            "purpose_id": purpose_id,
            "default_tz": DEFAULT_TIMEZONE,
        },
    )
    return [
        (
            row.contact_id,
            PointFacts(
                id=row.id,
                channel=Channel(row.channel),
                value=row.value,
                reachability=Reachability(row.reachability),
                purpose_consent=with_end(_consent(row.p_state, row.p_since, row.p_event), row.p_ends),
                channel_consent=with_end(_consent(row.c_state, row.c_since, row.c_event), row.c_ends),
                suppression_scopes=frozenset(SuppressionScope(s) for s in row.scopes),
                timezone=row.timezone,
                verified=row.verified_at is not None,
                paused_until=row.paused_until,
                customer_event_id=row.customer_event,
                customer_withdrawn=row.customer_withdrawn,
            ),
            row.digest,
        )
        for row in rows
    ]


#: ``work_mem`` of the audience export's transaction (see :func:`copy_audience`).
AUDIENCE_WORK_MEM = "64MB"

#: The columns of an audience row, in order (the CSV header and the NDJSON keys).
AUDIENCE_COLUMNS = (
    "contact_id",
    "external_id",
    "contact_point_id",
    "channel",
    "address",
    "reason",
    "evidence_event_id",
)


def _literals(values: Sequence[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)  # enum values from the domain, never input


def blocked_sql(kind: PurposeKind, channels: Sequence[Channel]) -> str:
    """Ids of the workspace's addresses on ``channels`` that a suppression blocks for the purpose ($1, $2).

    From the suppressions' side: one GIN probe per suppression (unnesting the keys of every address instead
    took 4.5 s at 1M contacts).
    """
    blocking = [SuppressionScope.ALL.value]
    if kind is PurposeKind.MARKETING:
        blocking.append(SuppressionScope.ALL_MARKETING.value)
    # $2 stays in the statement for every kind, so both statements of the export take the same parameters
    purpose_scoped = f"OR ({kind is PurposeKind.MARKETING} AND s.scope = 'purpose' AND s.purpose_id = $2)"
    # the Robinson keys (migration 0042) stop marketing on print: joined by key, so that the planner goes from
    # whichever side is smaller (a list of millions against the workspace's print addresses, or the other way)
    robinson = (
        f"""
        UNION
        SELECT p.id
          FROM contact_points p CROSS JOIN LATERAL unnest(p.suppression_keys) AS k(key)
          JOIN robinson_keys r ON r.workspace_id = $1 AND r.key = k.key
         WHERE p.workspace_id = $1 AND p.channel = '{Channel.PRINT.value}'"""  # noqa: S608  # an enum value only
        if kind is PurposeKind.MARKETING and Channel.PRINT in channels
        else ""
    )
    return f"""
        SELECT DISTINCT p.id
          FROM suppressions s JOIN contact_points p ON p.suppression_keys @> ARRAY[s.key]
         WHERE s.workspace_id = $1 AND p.workspace_id = $1 AND p.channel IN ({_literals([c.value for c in channels])})
           AND (s.scope IN ({_literals(blocking)}) {purpose_scoped})
           AND (s.until IS NULL OR s.until > now())  -- a pause blocks until its end (never scope 'all')
        {robinson}
    """  # noqa: S608


#: The workspace's reachable web push endpoints not spelled plainly ($1): none but what was stored before
#: subscriptions had to be (:func:`app.lib.outbound.plain_push_endpoint`) or by hand, so the list stays small.
_UNPLAIN_ENDPOINTS = f"""
    SELECT value FROM contact_points
     WHERE workspace_id = $1 AND channel = '{Channel.WEB_PUSH.value}' AND value !~ '{PLAIN_PUSH_ENDPOINT}'
       AND reachability = '{Reachability.REACHABLE.value}'
"""  # noqa: S608  # constants of this module only


def _like(text: str) -> str:
    """``text`` as a LIKE pattern matching itself only (its percent signs, underscores, backslashes as such)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def push_hosts_args(
    driver: Any, workspace_id: uuid.UUID, channels: Sequence[Channel], push_services: tuple[str, ...] | None
) -> tuple[Any, ...]:
    """The parameters of :func:`audience_sql`'s ``push_hosts`` filter, or none (no list, or no web push asked).

    The operator's push services as LIKE patterns (a name as itself, ``*.example.com`` as ``%.example.com``), and
    the endpoints not spelled plainly, split by what :func:`app.lib.outbound.listed` says of them: the export then
    lists exactly the endpoints :func:`app.eligibility.service.routable` leaves reachable.
    """
    if push_services is None or Channel.WEB_PUSH not in channels:
        return ()
    names, suffixes = split_patterns(push_services)
    patterns = [_like(n) for n in names] + [f"%{_like(e)}" for e in suffixes]
    allowed: list[str] = []
    refused: list[str] = []
    for row in await driver.fetch(_UNPLAIN_ENDPOINTS, workspace_id):
        (allowed if listed(row["value"], push_services) else refused).append(row["value"])
    return patterns, allowed, refused


#: The host of a plainly spelled endpoint (:data:`~app.lib.outbound.PLAIN_PUSH_ENDPOINT`) as ``host_allowed``
#: compares it: after the eight characters of ``https://``, up to the path and the port, in lower case (of ASCII
#: letters only, as Python's for such a host, whatever the database's collation), without trailing dots. Cut out by
#: ``split_part`` (the host taken out by the regular expression, or one expression for the whole list, cost the
#: export 2-3 times as much as this).
_PLAIN_HOST = "rtrim(lower(split_part(split_part(substr(cp.value, 9), '/', 1), ':', 1) COLLATE \"C\"), '.')"


def push_hosts_sql(first: int) -> str:
    """Whether a web push endpoint's host is on the operator's push services; other channels pass.

    Parameters from ``$first`` (:func:`push_hosts_args`): the LIKE patterns of the push services, the endpoints
    not spelled plainly that are allowed, those that are not. Every other endpoint is spelled plainly, and its
    host is :data:`_PLAIN_HOST`.
    """
    patterns, allowed, refused = (f"${first + i}::text[]" for i in range(3))
    return (
        f"(cp.channel <> '{Channel.WEB_PUSH.value}' OR cp.value = ANY({allowed}) "
        f"OR ({_PLAIN_HOST} LIKE ANY({patterns}) AND cp.value <> ALL({refused})))"
    )


def audience_sql(
    kind: PurposeKind,
    channels: Sequence[Channel],
    *,
    blocked_given: bool = False,
    policy: Policy | None = None,
    push_hosts: int | None = None,
) -> str:
    """The send gate as a SQL filter over contact points (the send window is a send-time check, not applied).

    Built from the gate's own tables: which states permit, which reachability passes, which suppression
    scopes block; transactional purposes take verified addresses only; marketing email also takes the existing
    customers the gate permits (UWG §7(3), :func:`app.domain.gate.is_existing_customer`). A test compares its
    result with :func:`app.domain.gate.decide_point` on the same data.
    With ``policy`` (the purpose's validity and inactivity), an opted-in consent past its end is left out, as
    the gate answers it ``expired`` (:func:`lapsed_sql`, the same instant as :mod:`app.domain.validity`), and
    there the existing-customer basis may stand in, as for a recorded expiry.
    Parameters: $1 workspace, $2 purpose and, with ``blocked_given``, $3 the ids :func:`blocked_sql` found
    (as a literal array PostgreSQL hashes once; else they are found by a subquery in the same statement).
    With ``push_hosts`` (the number of its first parameter), a web push endpoint off the operator's push services
    is left out, as routing counts it undeliverable (:func:`push_hosts_sql`).
    The rows come in no particular order: sorting a million rows would hold the first byte back until the
    last row is read.
    """
    permitting = sorted(s.value for s, reason in STATE_REASON.items() if reason in ELIGIBLE)
    effective = (
        "CASE WHEN cc.since IS NOT NULL AND (pc.since IS NULL OR cc.since > pc.since) THEN cc.state ELSE pc.state END"
    )
    # an opted-in consent past its end (validity, inactivity): the gate answers it expired before any sweep
    lapsed = "FALSE"
    if kind is PurposeKind.MARKETING and policy is not None and policy.ends:
        since = (
            "CASE WHEN cc.since IS NOT NULL AND (pc.since IS NULL OR cc.since > pc.since) "
            "THEN cc.since ELSE pc.since END"
        )
        # the workspace's time zone, read once for the statement (an InitPlan)
        zone = f"(SELECT coalesce(settings->>'timezone', '{DEFAULT_TIMEZONE}') FROM workspaces WHERE id = $1)"  # noqa: S608
        ended = lapsed_sql(policy, since=since, point="cp.id", workspace="$1", timezone=zone, now="now()")
        lapsed = f"({effective} = '{State.OPTED_IN.value}' AND {ended})"
    # UWG §7(3) existing customers (marketing by email only): see _customer_join and app.domain.gate; the basis
    # stands in where consent gives none, an ended one included
    customers = [c.value for c in channels if c in CUSTOMER_CHANNELS] if kind is PurposeKind.MARKETING else []
    customer = (
        f"(cp.channel IN ({_literals(customers)}) AND cu.event_id IS NOT NULL "
        f"AND (coalesce({effective}, 'none') IN ({_CUSTOMER_STATES}) OR {lapsed}))"
        if customers
        else "FALSE"
    )
    if kind is PurposeKind.TRANSACTIONAL:
        permission = "cp.verified_at IS NOT NULL"  # an address a form attached is not the contact's until verified
    else:
        permission = (
            f"CASE WHEN cp.channel = 'print' THEN coalesce({effective}, 'none') <> '{State.OBJECTED.value}' "
            f"ELSE (coalesce({effective}, 'none') IN ({_literals(permitting)}) AND NOT {lapsed}) OR {customer} END"
        )
    reason = (
        "'transactional'"
        if kind is PurposeKind.TRANSACTIONAL
        else f"CASE WHEN cp.channel = 'print' THEN 'legitimate_interest' WHEN {customer} THEN 'existing_customer' "
        "ELSE 'opted_in' END"
    )
    customer_evidence = f"WHEN {customer} THEN cu.event_id\n                " if customers else ""
    # one hash join of the workspace's customers in the purpose's categories (never withdrawn), not a probe per row
    customer_join = (
        f"""
      LEFT JOIN (SELECT DISTINCT ON (pu.contact_point_id) pu.contact_point_id, pu.event_id
                   FROM purchases pu
                  WHERE pu.workspace_id = $1
                    AND pu.category = ANY((SELECT similar_products_of FROM purposes WHERE id = $2)::text[])
                    AND NOT EXISTS (SELECT 1 FROM consent_events e
                                     WHERE e.contact_point_id = pu.contact_point_id AND e.to_state IN ({_WITHDRAWN}))
                  ORDER BY pu.contact_point_id, pu.purchased_at DESC, pu.id DESC) cu ON cu.contact_point_id = cp.id"""  # noqa: S608  # enum values and SQL expressions of this module only
        if customers
        else ""
    )
    if blocked_given:
        # a constant array: hashed once, tested in the scan of every worker (a subquery's size is guessed,
        # 97M rows for 17,000 at 1M contacts, and the guess put a 1.2M-row hash and the last join on one core)
        not_blocked = "cp.id <> ALL($3::uuid[])"
    else:
        # an anti-join, hashed whatever the estimate (NOT IN falls back to a rescan per row)
        not_blocked = f"NOT EXISTS (SELECT 1 FROM ({blocked_sql(kind, channels)}) b WHERE b.id = cp.id)"  # noqa: S608
    in_channels = _literals([c.value for c in channels])
    on_push_services = (
        f"\n       AND {push_hosts_sql(push_hosts)}" if push_hosts is not None and Channel.WEB_PUSH in channels else ""
    )
    # Only enum values of the domain are interpolated; every input is a bind parameter.
    return f"""
    SELECT cp.contact_id, cp.contact_external_id AS external_id, cp.id AS contact_point_id, cp.channel,
           cp.value AS address,
           {reason} AS reason,
           CASE {customer_evidence}WHEN cc.since IS NOT NULL AND (pc.since IS NULL OR cc.since > pc.since)
                THEN cc.last_event_id ELSE pc.last_event_id END AS evidence_event_id
      FROM contact_points cp  -- the contact's external id is kept on its points: no join with contacts
      -- a consent's channel is its address's: the channel test only lets fewer rows into the joins
      LEFT JOIN consents pc ON pc.contact_point_id = cp.id AND pc.workspace_id = $1 AND pc.purpose_id = $2
                           AND pc.channel IN ({in_channels})
      LEFT JOIN consents cc ON cc.contact_point_id = cp.id AND cc.workspace_id = $1 AND cc.purpose_id IS NULL
                           AND cc.channel IN ({in_channels}){customer_join}
     WHERE cp.workspace_id = $1 AND cp.channel IN ({in_channels})
       AND cp.reachability = '{Reachability.REACHABLE.value}'
       AND {permission}
       AND {not_blocked}{on_push_services}
    """  # noqa: S608


#: How each audience column becomes JSON: free text through ``to_json`` (which escapes it); ids and the
#: domain's own words (no character that needs escaping) between quotes, which costs less per row.
#: Each entry: (quote, value): the quote goes into the constant text around the value.
_JSON_VALUE = {
    "contact_id": ('"', "a.contact_id"),
    "external_id": ("", "coalesce(to_json(a.external_id)::text, 'null')"),
    "contact_point_id": ('"', "a.contact_point_id"),
    "channel": ('"', "a.channel"),
    "address": ("", "to_json(a.address)::text"),
    "reason": ('"', "a.reason"),
    "evidence_event_id": ("", "coalesce('\"' || a.evidence_event_id || '\"', 'null')"),
}


def as_ndjson(sql: str) -> str:
    """``sql`` (audience rows) with each row as one JSON object, built by PostgreSQL (keys as AUDIENCE_COLUMNS).

    Every string that may hold anything is escaped by ``to_json`` (quotes, backslashes, control characters),
    so a line never holds a raw newline and :func:`copy_audience` can pass the lines on untouched. The line is
    one ``concat()`` of constant pieces and values: a chain of ``||`` allocates a new string at every step
    (1M contacts: 0.5-1 s of CPU more).
    """
    args: list[str] = []
    constant = "{"
    for column in AUDIENCE_COLUMNS:
        quote, value = _JSON_VALUE[column]
        constant += f'"{column}":{quote}'
        args += [f"'{constant}'", value]
        constant = f"{quote},"
    args.append(f"'{constant[:-1]}}}'")
    return f"SELECT concat({', '.join(args)}) FROM ({sql}) a"  # noqa: S608


#: The audience columns whose text comes from tenants or people (the others are ids or words of our own).
_FREE_TEXT = frozenset({"external_id", "address"})


def as_csv_rows(sql: str) -> str:
    """``sql`` (audience rows) for the CSV export: the free-text columns neutralised against formula injection."""
    columns = [f"{csv_cell(f'a.{c}')} AS {c}" if c in _FREE_TEXT else f"a.{c}" for c in AUDIENCE_COLUMNS]
    return f"SELECT {', '.join(columns)} FROM ({sql}) a"  # noqa: S608


def _snapshot(driver: Any) -> Any:
    """One repeatable-read, read-only snapshot for the export's two statements.

    A connection already inside a transaction (the tests' own) keeps the one it is in.
    """
    if driver.is_in_transaction():
        return contextlib.nullcontext()
    return driver.transaction(isolation="repeatable_read", readonly=True)


#: Up to this many blocked addresses go into the export's statement as a constant; more are found by a
#: subquery (a statement of a few MB at most).
AUDIENCE_INLINE_BLOCKED = 100_000


async def copy_audience(
    driver: Any,
    workspace_id: uuid.UUID,
    purpose_id: uuid.UUID,
    kind: PurposeKind,
    channels: Sequence[Channel],
    *,
    as_csv: bool,
    sink: Callable[[bytes], Awaitable[None]],
    push_services: tuple[str, ...] | None,
    policy: Policy | None = None,
) -> None:
    """Every eligible contact point as NDJSON lines or CSV (with a header), written by ``COPY … TO STDOUT``.

    ``push_services``: the operator's web push services (``CONSENT_WEB_PUSH_SERVICES``; ``None``: any host): an
    endpoint off them is left out, as routing and eligibility count it undeliverable.

    PostgreSQL encodes the rows; ``sink`` gets its output in the pieces it arrives in and is awaited before
    more is read, so a slow reader slows the query down instead of filling memory.
    """
    async with _snapshot(driver):
        # The export hash-joins millions of rows: at the default 4 MB the joins spill to disk (1M contacts:
        # 23.9 s at 4 MB, 12.0 s at 64 MB, no gain above). Scoped to this transaction.
        await driver.execute(f"SET LOCAL work_mem = '{AUDIENCE_WORK_MEM}'")
        limit = AUDIENCE_INLINE_BLOCKED
        blocked = await driver.fetch(f"{blocked_sql(kind, channels)} LIMIT {limit + 1}", workspace_id, purpose_id)
        inline = len(blocked) <= limit
        args: tuple[Any, ...] = (
            (workspace_id, purpose_id, [row["id"] for row in blocked]) if inline else (workspace_id, purpose_id)
        )
        push = await push_hosts_args(driver, workspace_id, channels, push_services)
        sql = audience_sql(
            kind, channels, blocked_given=inline, policy=policy, push_hosts=len(args) + 1 if push else None
        )
        args += push
        await copy_rows(driver, as_csv_rows(sql), as_ndjson(sql), *args, as_csv=as_csv, sink=sink)


#: The workspace's time zone in :data:`_SINGLE` ($6: the default).
_SINGLE_TZ = "coalesce(w.settings->>'timezone', $6)"

_SINGLE = (
    f"""
WITH p AS (SELECT id, kind, validity, inactivity FROM purposes WHERE workspace_id = $1 AND key = $2),
     c AS ((SELECT id, timezone, merged_into, 0 AS rank FROM contacts WHERE id = $4 AND workspace_id = $1)
           UNION ALL
           (SELECT id, timezone, merged_into, 1 AS rank FROM contacts WHERE workspace_id = $1 AND external_id = $3)
           ORDER BY rank LIMIT 1)
SELECT w.settings::text AS settings, p.id AS purpose_id, p.kind, c.id AS contact_id, c.timezone, c.merged_into,
       {_ends_column("pc", engaged="eg.at", validity="p.validity", inactivity="p.inactivity", timezone=_SINGLE_TZ)}
           AS p_ends,
       {_ends_column("cc", engaged="eg.at", validity="p.validity", inactivity="p.inactivity", timezone=_SINGLE_TZ)}
           AS c_ends,
       cp.id, cp.value, cp.reachability, cp.verified_at,
       pc.state AS p_state, pc.since AS p_since, pc.last_event_id AS p_event,
       cc.state AS c_state, cc.since AS c_since, cc.last_event_id AS c_event,
       ARRAY(SELECT DISTINCT s.scope
               FROM ({_suppressions_sql("unnest(cp.suppression_keys) AS k(key)", "cp.workspace_id", "p.id")}) s
              WHERE s.until IS NULL) AS scopes,
       (SELECT max(s.until) FROM unnest(cp.suppression_keys) AS k(key)
          JOIN suppressions s ON s.workspace_id = cp.workspace_id AND s.key = k.key
         WHERE (s.scope <> 'purpose' OR s.purpose_id = p.id) AND s.until IS NOT NULL) AS paused_until,
       cu.event_id AS customer_event, coalesce(cu.withdrawn, FALSE) AS customer_withdrawn
  FROM workspaces w
  LEFT JOIN p ON TRUE
  LEFT JOIN c ON TRUE
  LEFT JOIN contact_points cp ON cp.contact_id = c.id AND cp.channel = $5
  LEFT JOIN consents pc ON pc.contact_point_id = cp.id AND pc.purpose_id = p.id
  LEFT JOIN consents cc ON cc.contact_point_id = cp.id AND cc.purpose_id IS NULL
  LEFT JOIN LATERAL (SELECT CASE WHEN p.inactivity IS NOT NULL AND cp.id IS NOT NULL
                                 THEN {engaged_sql("cp.id", "$1")} END AS at) eg ON TRUE"""  # noqa: S608  # joined with enum values only; every input is a bind parameter
    + _customer_join("cp", "p.id")
    + """
 WHERE w.id = $1
 ORDER BY cp.id
"""
)


@dataclasses.dataclass(frozen=True, slots=True)
class SingleFacts:
    """What one check reads in its round trip (``None``: no such purpose or contact)."""

    settings: str
    purpose_id: uuid.UUID | None
    kind: str | None
    contact_id: uuid.UUID | None
    merged_into: uuid.UUID | None
    facts: list[PointFacts]


async def single_facts(
    driver: Any, workspace_id: uuid.UUID, purpose_key: str, contact_ref: str, channel: Channel
) -> SingleFacts:
    """One round trip for a single check: the settings, the purpose, the contact (merged into?), the facts."""
    try:
        contact_uuid: uuid.UUID | None = uuid.UUID(contact_ref)
    except ValueError:
        contact_uuid = None
    rows = await driver.fetch(
        _SINGLE, workspace_id, purpose_key, contact_ref, contact_uuid, channel.value, DEFAULT_TIMEZONE
    )
    first = rows[0]
    facts = [
        PointFacts(
            id=row["id"],
            channel=channel,
            value=row["value"],
            reachability=Reachability(row["reachability"]),
            purpose_consent=with_end(_consent(row["p_state"], row["p_since"], row["p_event"]), row["p_ends"]),
            channel_consent=with_end(_consent(row["c_state"], row["c_since"], row["c_event"]), row["c_ends"]),
            suppression_scopes=frozenset(SuppressionScope(s) for s in row["scopes"]),
            timezone=row["timezone"],
            verified=row["verified_at"] is not None,
            paused_until=row["paused_until"],
            customer_event_id=row["customer_event"],
            customer_withdrawn=row["customer_withdrawn"],
        )
        for row in rows
        if row["id"] is not None
    ]
    return SingleFacts(
        first["settings"], first["purpose_id"], first["kind"], first["contact_id"], first["merged_into"], facts
    )


_BATCH_CONTEXT = """
SELECT w.settings::text AS settings, p.id AS purpose_id, p.key AS purpose_key, p.kind
  FROM workspaces w LEFT JOIN purposes p ON p.workspace_id = w.id AND p.key = $2
 WHERE w.id = $1
"""

_BATCH_FACTS = (
    f"""
WITH wanted AS (
    -- One index probe per reference and per contact: each LATERAL ... OFFSET 0 is a subquery the planner cannot
    -- flatten into a join. As joins, a plan for 10,000 references hashed all 1M addresses of the workspace
    -- (1.1-1.5 s instead of 0.2 s), depending on statistics. An OR of both lookups would scan the table.
    SELECT c.id AS contact_id, c.external_id, c.timezone, c.merged_into
      FROM unnest($2::uuid[]) AS r(id)
      CROSS JOIN LATERAL (SELECT id, external_id, timezone, merged_into FROM contacts
                           WHERE workspace_id = $1 AND id = r.id OFFSET 0) c
    UNION
    SELECT c.id, c.external_id, c.timezone, c.merged_into
      FROM unnest($3::text[]) AS r(ref)
      CROSS JOIN LATERAL (SELECT id, external_id, timezone, merged_into FROM contacts
                           WHERE workspace_id = $1 AND external_id = r.ref OFFSET 0) c
), pts AS (
    SELECT cp.id, cp.contact_id, cp.channel, cp.value, cp.reachability, cp.suppression_keys, cp.verified_at
      FROM wanted w
      CROSS JOIN LATERAL (SELECT id, contact_id, channel, value, reachability, suppression_keys, verified_at
                            FROM contact_points
                           WHERE contact_id = w.contact_id AND workspace_id = $1 AND channel = ANY($4::text[])
                          OFFSET 0) cp
), sup AS (
    SELECT s.id, array_agg(DISTINCT s.scope) FILTER (WHERE s.until IS NULL) AS scopes,
           max(s.until) AS paused_until
      FROM ({_suppressions_sql(_PTS_KEYS, "$1", "$5", "pts.id, ")}) s
     GROUP BY s.id
), pol AS (
    -- the purpose's lifecycle and the workspace's time zone, read once ($6: the default zone)
    SELECT p.validity, p.inactivity, coalesce(ws.settings->>'timezone', $6) AS tz
      FROM workspaces ws LEFT JOIN purposes p ON p.id = $5 AND p.workspace_id = ws.id
     WHERE ws.id = $1
)
SELECT w.contact_id, w.external_id, w.timezone, w.merged_into,
       pts.id, pts.channel, pts.value, pts.reachability, pts.verified_at,
       pc.state AS p_state, pc.since AS p_since, pc.last_event_id AS p_event,
       cc.state AS c_state, cc.since AS c_since, cc.last_event_id AS c_event,
       sup.scopes, sup.paused_until,
       cu.event_id AS customer_event, coalesce(cu.withdrawn, FALSE) AS customer_withdrawn,
       {_POL_PC_ENDS}
           AS p_ends,
       {_POL_CC_ENDS}
           AS c_ends
  FROM wanted w
  CROSS JOIN pol
  LEFT JOIN pts ON pts.contact_id = w.contact_id
  LEFT JOIN sup ON sup.id = pts.id
  -- the latest engagement, only where the purpose has an inactivity (no look-up without one)
  LEFT JOIN LATERAL (SELECT CASE WHEN pts.id IS NOT NULL AND pol.inactivity IS NOT NULL
                                 THEN {engaged_sql("pts.id", "$1")} END AS at) eg ON TRUE"""  # noqa: S608  # joined with enum values only; every input is a bind parameter
    + _customer_join("pts", "$5")
    + """
  -- per-address index lookups (LIMIT keeps the planner from flattening them into a hash join that reads every
  -- consent of the workspace; the rows are unique anyway)
  LEFT JOIN LATERAL (SELECT state, since, last_event_id FROM consents
                      WHERE contact_point_id = pts.id AND purpose_id = $5 LIMIT 1) pc ON TRUE
  LEFT JOIN LATERAL (SELECT state, since, last_event_id FROM consents
                      WHERE contact_point_id = pts.id AND purpose_id IS NULL LIMIT 1) cc ON TRUE
 ORDER BY pts.id
"""
)

_STATES = {state.value: state for state in State}
_REACHABILITY = {value.value: value for value in Reachability}
_SCOPES = {scope.value: scope for scope in SuppressionScope}
_CHANNELS = {channel.value: channel for channel in Channel}
_NO_SCOPES: frozenset[SuppressionScope] = frozenset()


async def batch_context(driver: Any, workspace_id: uuid.UUID, purpose_key: str) -> Any:
    """The workspace's settings JSON and the purpose (id, key, kind; NULL when unknown) in one round trip."""
    return await driver.fetchrow(_BATCH_CONTEXT, workspace_id, purpose_key)


async def batch_facts(
    driver: Any,
    workspace_id: uuid.UUID,
    refs: Sequence[str],
    channels: Sequence[str],
    purpose_id: uuid.UUID,
) -> tuple[dict[str, uuid.UUID], dict[tuple[uuid.UUID, Channel], list[PointFacts]], dict[uuid.UUID, uuid.UUID]]:
    """Contact references resolved, every address's facts, and merged contacts' survivors, in one round trip.

    On the driver connection; the third map holds each contact merged into another, with the survivor's id.
    """
    ids: list[uuid.UUID] = []
    for ref in refs:
        try:
            ids.append(uuid.UUID(ref))
        except ValueError:
            continue
    rows = await driver.fetch(_BATCH_FACTS, workspace_id, ids, list(refs), list(channels), purpose_id, DEFAULT_TIMEZONE)
    by_id: dict[str, uuid.UUID] = {}
    by_external: dict[str, uuid.UUID] = {}
    facts: dict[tuple[uuid.UUID, Channel], list[PointFacts]] = {}
    merged: dict[uuid.UUID, uuid.UUID] = {}
    for row in rows:
        contact_id = row["contact_id"]
        by_id[str(contact_id)] = contact_id
        if row["merged_into"] is not None:
            merged[contact_id] = row["merged_into"]
        if row["external_id"] is not None:
            by_external[row["external_id"]] = contact_id
        if row["id"] is None:
            continue
        channel = _CHANNELS[row["channel"]]
        p_state, c_state, scopes = row["p_state"], row["c_state"], row["scopes"]
        facts.setdefault((contact_id, channel), []).append(
            PointFacts(
                id=row["id"],
                channel=channel,
                value=row["value"],
                reachability=_REACHABILITY[row["reachability"]],
                purpose_consent=None
                if p_state is None
                else with_end(ConsentFact(_STATES[p_state], row["p_since"], row["p_event"]), row["p_ends"]),
                channel_consent=None
                if c_state is None
                else with_end(ConsentFact(_STATES[c_state], row["c_since"], row["c_event"]), row["c_ends"]),
                suppression_scopes=frozenset(_SCOPES[s] for s in scopes) if scopes else _NO_SCOPES,
                timezone=row["timezone"],
                verified=row["verified_at"] is not None,
                paused_until=row["paused_until"],
                customer_event_id=row["customer_event"],
                customer_withdrawn=row["customer_withdrawn"],
            )
        )
    resolved = {ref: by_id.get(ref) or by_external[ref] for ref in refs if ref in by_id or ref in by_external}
    return resolved, facts, merged


_IMPORTED_ENDS_BY = ends_sql(
    "i.given", engaged="eg.at", validity="i.validity", inactivity="i.inactivity", timezone="CAST(:tz AS text)"
)
_IMPORTED_ENDS = text(
    f"""
    SELECT eg.at AS engaged_at, {_IMPORTED_ENDS_BY[0]} AS by_validity, {_IMPORTED_ENDS_BY[1]} AS by_inactivity
      FROM unnest(CAST(:points AS uuid[]), CAST(:given AS timestamptz[]), CAST(:validity AS text[]),
                  CAST(:inactivity AS text[])) WITH ORDINALITY AS i(point, given, validity, inactivity, n)
      LEFT JOIN LATERAL (SELECT CASE WHEN i.inactivity IS NOT NULL THEN {engaged_sql("i.point", ":workspace_id")}
                                END AS at) eg ON TRUE
     ORDER BY i.n
    """  # noqa: S608  # our own column names; every input is a bind parameter
)


@dataclasses.dataclass(frozen=True, slots=True)
class ConsentEnd:
    """When a consent ends (``None``: never) and the latest engagement on its address it was counted from."""

    end: End | None
    engaged_at: datetime | None


async def consent_ends(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    consents: Sequence[tuple[uuid.UUID, datetime, str | None, str | None]],
    timezone: str,
) -> list[ConsentEnd]:
    """The end of each consent (address, given at, the purpose's stored validity and inactivity), in one statement.

    Computed by the database (:func:`span_end_sql`) as every other end, in the order given.
    """
    if not consents:
        return []
    points, given, validity, inactivity = (list(column) for column in zip(*consents, strict=True))
    params = {
        "workspace_id": workspace_id,
        "points": points,
        "given": given,
        "validity": validity,
        "inactivity": inactivity,
        "tz": timezone,
    }
    rows = await session.execute(_IMPORTED_ENDS, params)
    return [ConsentEnd(earlier_end(row.by_validity, row.by_inactivity), row.engaged_at) for row in rows]
