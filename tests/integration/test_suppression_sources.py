"""Every writer of a suppression adds its reason to the row's ``reasons`` (migration 0047), once.

The STOP of a number the phone library refuses (``unsubscribe``), a spam complaint (``complaint``), an erasure and
an objection write through :func:`app.ledger.repository.add_suppressions`; a pause through ``pause_keys``.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import text

from app.domain.model import Channel, SuppressionReason
from app.ledger.actions import identifier_suppression_rows
from app.ledger.repository import add_suppressions, end_pauses, lift_reason, pause_keys
from app.lib.keys import Keys
from app.lib.orm import utcnow
from tests.conftest import TEST_SECRET

ADDRESS = "erika@example.com"


def rows_for(tenant, reason: SuppressionReason):
    return identifier_suppression_rows(Keys(TEST_SECRET), tenant.id, Channel.EMAIL, ADDRESS, reason)


async def stored(session, tenant) -> list[tuple[str, list[str], str]]:
    found = await session.execute(
        text("SELECT reason, reasons, ctid::text FROM suppressions WHERE workspace_id = :ws"), {"ws": tenant.id}
    )
    return [tuple(row) for row in found.all()]


async def test_writers_on_one_key_accumulate_their_reasons_once(session, tenant):
    await add_suppressions(session, rows_for(tenant, SuppressionReason.COMPLAINT))
    [(_, _, version)] = await stored(session, tenant)

    await add_suppressions(session, rows_for(tenant, SuppressionReason.COMPLAINT))  # the same complaint again
    assert await stored(session, tenant) == [("complaint", ["complaint"], version)], "no new row version"

    await add_suppressions(session, rows_for(tenant, SuppressionReason.UNSUBSCRIBE))  # a STOP-like unsubscribe
    await add_suppressions(session, rows_for(tenant, SuppressionReason.ERASURE))
    await add_suppressions(session, rows_for(tenant, SuppressionReason.UNSUBSCRIBE))
    [(reason, reasons, _)] = await stored(session, tenant)
    assert (reason, reasons) == ("complaint", ["complaint", "unsubscribe", "erasure"]), "the first writer's label"


async def test_a_pause_made_permanent_keeps_its_end_aside_and_runs_on_when_the_permanent_reason_goes(session, tenant):
    until = utcnow() + timedelta(weeks=4)
    rows = rows_for(tenant, SuppressionReason.PAUSED)
    await pause_keys(session, rows, until)
    await add_suppressions(session, rows_for(tenant, SuppressionReason.OBJECTION_ART21))
    kept = "SELECT reason, reasons, until, paused_until FROM suppressions WHERE workspace_id = :ws"
    assert (await session.execute(text(kept), {"ws": tenant.id})).all() == [
        ("objection_art21", ["objection_art21"], None, until)
    ], "the permanent reason only, the pause's end aside"

    await lift_reason(session, tenant.id, [row["key"] for row in rows], SuppressionReason.OBJECTION_ART21)
    assert (await session.execute(text(kept), {"ws": tenant.id})).all() == [("paused", ["paused"], until, None)]

    await add_suppressions(session, rows_for(tenant, SuppressionReason.OBJECTION_ART21))
    await end_pauses(session, tenant.id, [row["key"] for row in rows])  # the person ends the pause early
    await lift_reason(session, tenant.id, [row["key"] for row in rows], SuppressionReason.OBJECTION_ART21)
    assert (await session.execute(text(kept), {"ws": tenant.id})).all() == [], "nothing is left to stop mail"
