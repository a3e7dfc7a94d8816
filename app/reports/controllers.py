"""``/v1/reports/consents`` and ``/v1/reports/messages`` (scope `audit:read`): JSON, or CSV with `Accept: text/csv`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromQuery, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.model import Channel
from app.lib.auth import Principal, Scope
from app.lib.copystream import wants_csv
from app.lib.errors import InvalidInput
from app.lib.openapi import errors
from app.lib.orm import utcnow
from app.reports import service
from app.reports.schemas import ReportOut, ReportRowOut, to_csv
from app.workspaces import repository as workspaces

Granularity = Literal["hour", "day", "week", "month"]
From = Annotated[
    datetime | None,
    QueryParameter(name="from", description="Start, a whole hour with a time zone (default: `to` - 30 days)."),
]
To = Annotated[
    datetime | None,
    QueryParameter(
        description="End (exclusive), a whole hour (default: the end of today; of this hour for hourly buckets)."
    ),
]
GroupBy = Annotated[str | None, QueryParameter(max_length=200, description="Comma-separated dimensions.")]
Channels = Annotated[list[Channel] | None, QueryParameter(max_items=6, description="Only these channels.")]
Purposes = Annotated[
    list[Annotated[str, QueryParameter(max_length=63)]] | None,
    QueryParameter(max_items=50, description="Only these purposes (keys)."),
]
Campaigns = Annotated[
    list[Annotated[str, QueryParameter(max_length=100)]] | None,
    QueryParameter(max_items=50, description="Only these campaign labels (`campaign` of `POST /v1/messages`)."),
]
Build = Callable[[AsyncSession, Any, service.ReportQuery], Awaitable[list[service.SeriesRow]]]
_PARAMETERS = frozenset({"from", "to", "granularity", "group_by", "channel", "purpose", "campaign"})


class ReportController(Controller):
    """Reports (scope `audit:read`); every metric is defined in docs/reporting.md."""

    path = "/reports"
    tags = ["reports"]  # noqa: RUF012
    opt = {"scope": Scope.AUDIT_READ}  # noqa: RUF012

    @get("/consents", operation_id="reportConsents", responses=errors(401, 403, 422))
    async def consents(  # the report's query parameters
        self,
        *,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        db: NamedDependency[AsyncSession],
        start: From = None,
        to: To = None,
        granularity: FromQuery[Granularity] = "day",
        group_by: GroupBy = None,
        channel: Channels = None,
        purpose: Purposes = None,
        campaign: Campaigns = None,
    ) -> Response[ReportOut]:
        """Consent flow per bucket, from the rollups after a catch-up with the ledger.

        Signups, confirmations, opt-ins, opt-outs (by `trigger`), lapses, objections, push permissions, the
        standing opted-in total and the double opt-in cohort figures.

        `group_by`: any of `channel`, `purpose`, `source`, `trigger`, `campaign` (the campaign of the message an
        opt-out is attributed to). The standing total and the cohort figures are given when the report is grouped
        by channel and purpose at most and not filtered by campaign (cohorts: day buckets or longer).
        """
        return await _answer(
            request=request, principal=principal, db=db, build=service.consent_report,
            metrics=service.CONSENT_METRICS, groups=service.CONSENT_GROUPS,
            start=start, end=to, granularity=granularity, group_by=group_by, channels=channel, purposes=purpose,
            campaigns=campaign,
        )  # fmt: skip

    @get("/messages", operation_id="reportMessages", responses=errors(401, 403, 422))
    async def messages(
        self,
        *,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        db: NamedDependency[AsyncSession],
        start: From = None,
        to: To = None,
        granularity: FromQuery[Granularity] = "day",
        group_by: GroupBy = None,
        channel: Channels = None,
        purpose: Purposes = None,
        campaign: Campaigns = None,
    ) -> Response[ReportOut]:
        """Messaging per bucket, from the rollups after a catch-up with the message history.

        Accepted, sent, delivered, failed, bounced, complaints, blocked at send, no eligible channel, queue-to-sent
        latency (p50, p99), and the opt-outs a message caused (its unsubscribe link, a STOP within 7 days of it).
        `group_by`: any of `channel`, `purpose`, `provider`, `campaign`.
        """
        return await _answer(
            request=request, principal=principal, db=db, build=service.message_report,
            metrics=service.MESSAGE_METRICS, groups=service.MESSAGE_GROUPS,
            start=start, end=to, granularity=granularity, group_by=group_by, channels=channel, purposes=purpose,
            campaigns=campaign,
        )  # fmt: skip


async def _answer(
    *,
    request: Request[Any, Any, Any],
    principal: Principal,
    db: AsyncSession,
    build: Build,
    metrics: Sequence[str],
    groups: Sequence[str],
    start: datetime | None,
    end: datetime | None,
    granularity: str,
    group_by: str | None,
    channels: list[Channel] | None,
    purposes: list[str] | None,
    campaigns: list[str] | None,
) -> Response[ReportOut]:
    unknown = sorted(set(request.query_params) - _PARAMETERS)
    if unknown:  # a misspelled parameter answered the default report as if it were right (newcomer review)
        raise InvalidInput(
            f"Unknown parameter {', '.join(repr(name[:40]) for name in unknown[:5])}; the parameters are "
            f"{', '.join(sorted(_PARAMETERS))}.",
            code="unknown_parameter",
        )
    repeated = [
        name for name in ("from", "to", "granularity", "group_by") if len(request.query_params.getall(name, [])) > 1
    ]
    if repeated:  # the last one answered, the others dropped without a word (newcomer review)
        raise InvalidInput(
            f"'{repeated[0]}' is given more than once; give it once"
            + (" (dimensions comma-separated: group_by=campaign,provider)." if repeated[0] == "group_by" else "."),
            code="repeated_parameter",
        )
    query = service.parse_query(
        start=start,
        end=end,
        granularity=granularity,
        group_by=group_by,
        channels=[c.value for c in channels or ()],
        purposes=purposes or (),
        allowed_groups=groups,
        now=utcnow(),
        campaigns=campaigns or (),
    )
    async with db.begin():
        series = await build(db, principal.workspace_id, query)
    report = ReportOut(
        from_=query.start,
        to=query.end,
        granularity=query.granularity,
        group_by=list(query.group_by),
        metrics=list(metrics),
        series=[ReportRowOut(bucket=r.bucket, group=r.group, metrics=r.metrics) for r in series],
    )
    if "source" in query.group_by:
        async with db.begin():
            report.source_names = await _source_names(db, principal.workspace_id, report.series)
    headers = {"Cache-Control": "no-store"}
    if wants_csv(request.headers.get("accept", "")):
        csv_body: Any = to_csv(report)
        return Response(csv_body, media_type="text/csv", headers=headers)
    return Response(report, headers=headers)


async def _source_names(db: AsyncSession, workspace_id: Any, series: Sequence[ReportRowOut]) -> dict[str, str]:
    """``api_key:<id>`` source values → the key's name (the workspace's own keys only)."""
    wanted = {row.group.get("source") for row in series}
    names = {f"api_key:{key.id}": key.name for key in await workspaces.list_api_keys(db, workspace_id)}
    return {source: names[source] for source in wanted if source in names}
