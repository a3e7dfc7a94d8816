"""The consent import's rules applied one line at a time: the reference the set-based import is compared with.

Each line in a transaction of its own, through the ledger's general path (:func:`apply_changes` on loaded rows,
:func:`add_point`, :func:`repository.add_contact`): what the import did before it wrote a batch with a few
statements (issue 21). Lines that name a number as reassigned are not modelled (they go their own way first).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.gate import is_suppressed
from app.domain.identifiers import valid_external_id
from app.domain.model import PurposeKind, State, SuppressionScope
from app.imports import consents
from app.imports.consents import ImportLine, ImportReport, LineRejected, RowProblem
from app.ledger import repository
from app.ledger.service import Actor, add_point, apply_changes
from app.lib.ids import parse_uuid
from app.lib.keys import Keys
from app.lib.orm import utcnow
from app.workspaces.service import settings_of


async def import_line_by_line(
    session: AsyncSession,
    keys: Keys,
    workspace_id: uuid.UUID,
    lines: AsyncIterator[tuple[int, ImportLine | LineRejected]],
    *,
    actor: Actor,
) -> ImportReport:
    """The report :func:`app.imports.consents.import_consents` gives, one line and one transaction at a time."""
    report = ImportReport()
    async with session.begin():
        settings = await settings_of(session, workspace_id)
    context = consents._Context(workspace_id, settings, keys, actor, utcnow())  # the same checks
    async for number, line in lines:
        report.lines += 1
        async with session.begin():
            problem = await _one(session, context, report, number, line)
        if problem is not None:
            report.add(problem)
    return report


async def _one(  # noqa: C901, PLR0911  # the rules, in the order they apply
    session: AsyncSession,
    context: consents._Context,
    report: ImportReport,
    number: int,
    line: ImportLine | LineRejected,
) -> RowProblem | None:
    if isinstance(line, LineRejected):
        return RowProblem(number, "rejected", line.code, line.message)
    try:
        item = await consents._prepare(session, context, number, line)
    except LineRejected as refused:
        return RowProblem(number, "rejected", refused.code, refused.message)
    workspace_id = context.workspace_id
    if item.target is State.OPTED_IN:
        purpose_id = item.purpose.id if item.purpose else None
        held = await repository.suppressions_with_keys(session, workspace_id, item.keys)
        scopes = {s for _, s, named in held if s is not SuppressionScope.PURPOSE or named == purpose_id}
        if is_suppressed(scopes, PurposeKind.MARKETING):
            return RowProblem(number, "skipped", "suppressed", consents.SUPPRESSED)
    contact = await repository.find_contact(session, workspace_id, line.contact)
    if contact is not None and contact.merged_into is not None:
        contact = await repository.get_contact(session, contact.merged_into)
    point = await repository.find_contact_point(session, workspace_id, item.channel.value, item.value)
    if point is not None:
        if contact is None or point.contact_id != contact.id:
            return RowProblem(
                number, "rejected", "address_of_another_contact", "This address belongs to another contact."
            )
    else:
        if contact is None:
            if parse_uuid(line.contact) is not None:
                return RowProblem(
                    number,
                    "rejected",
                    "contact_not_found",
                    "No contact with this id (an unknown external id is created).",
                )
            if not valid_external_id(line.contact):
                return RowProblem(
                    number,
                    "rejected",
                    "invalid_external_id",
                    "An external id has no '/' or control characters and is not '.' or '..' (it names the contact "
                    "in URLs).",
                )
            contact = await repository.add_contact(session, workspace_id, line.contact, line.locale, line.timezone)
            report.contacts_created += 1
        point = await add_point(
            session,
            context.keys,
            workspace_id,
            contact_id=contact.id,
            channel=item.channel.value,
            value=item.value,
            details=item.details,
        )
    change = item.change(point)
    [applied] = await apply_changes(session, workspace_id, [change], context.actor, skip_not_allowed=True)
    if applied.event_id is None:
        return consents._not_recorded(number, change, applied)
    report.recorded += 1
    return None
