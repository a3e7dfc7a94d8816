"""The set-based consent import against the same rules applied line by line (:mod:`tests.import_oracle`).

Random files (hypothesis) go into two fresh workspaces, one through :func:`import_consents` (batches written with a
few statements each), one line by line through the ledger's general path. Both must give the same report and the
same ledger: the same events in the same order, field for field (ids and the recording time aside, which differ
by nature), the same projections, contacts and addresses; and both chains verify. Some addresses may be on the
do-not-contact list of both workspaces before the import (an opt-in for them is skipped).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from app.domain.identifiers import email_suppression_form
from app.domain.model import ActorType, SuppressionReason
from app.imports import consents
from app.ledger import repository as ledger_repository
from app.ledger.actions import identifier_suppression_rows
from app.ledger.audit import verify_chain
from app.ledger.service import Actor
from app.lib.keys import Keys
from app.purposes import service as purposes
from app.workspaces import service as workspace_service
from tests.conftest import TEST_SECRET
from tests.import_oracle import import_line_by_line

TEXTS = ["Ja, Newsletter per E-Mail. Abmeldung jederzeit.", "Ja, Angebote per SMS. STOP zum Abmelden."]
POSTAL = [
    {"name": "Anna Roe", "street": "Hauptstraße 5", "postcode": "10115", "city": "Berlin"},
    {"name": "Max Roe", "street": "Schulstr. 1", "postcode": "10115", "city": "Berlin"},
]
ACTOR = Actor(ActorType.SYSTEM, "test:import")

ADDRESSES = {
    "email": ["jane@example.com", "Jane@EXAMPLE.com", "max@example.org", "not an address"],
    "sms": ["+4915112345678", "0151 12345678", "+4917612345678"],
    "whatsapp": ["+4915112345678", "whatsapp:+4917612345678"],
}


@st.composite
def line_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly lines that can be recorded, sharing contacts, addresses and times; now and then a faulty one."""
    channel = draw(st.sampled_from(["email", "email", "sms", "whatsapp", "print"]))
    line: dict[str, Any] = {
        "contact": draw(st.sampled_from(["crm-1", "crm-2", "crm-3", "crm-1"])),
        "channel": channel,
        "captured_at": draw(
            st.sampled_from(["2024-01-01T10:00:00Z", "2024-02-01T10:00:00+01:00", "2024-03-01T10:00:00Z"])
        ),
        "source": draw(st.sampled_from(["old-esp", "crm"])),
    }
    if channel == "print":
        line |= {"postal_address": draw(st.sampled_from(POSTAL)), "state": "objected"}
    else:
        state = draw(st.sampled_from(["opted_in", "opted_in", "opted_out", "declined"]))
        line |= {"address": draw(st.sampled_from(ADDRESSES[channel])), "purpose": "newsletter", "state": state}
        if state == "opted_in":
            line["notice_text"] = draw(st.sampled_from(TEXTS))
    line |= draw(
        st.fixed_dictionaries(
            {},
            optional={
                "locale": st.sampled_from(["de", "en"]),
                "timezone": st.just("Europe/Berlin"),
                "evidence": st.fixed_dictionaries({"ip": st.sampled_from(["198.51.100.7", "203.0.113.9"])}),
            },
        )
    )
    fault = draw(st.sampled_from([None] * 8 + ["contact", "purpose", "channel", "notice", "timezone"]))
    if fault == "contact":
        line["contact"] = draw(st.sampled_from(["a/b", str(uuid.UUID(int=7))]))
    elif fault == "purpose":
        line["purpose"] = draw(st.sampled_from(["orders", "missing"]))
    elif fault == "channel":
        line["channel"] = "app_push"
    elif fault == "notice":
        line.pop("notice_text", None)
    elif fault == "timezone":
        line["timezone"] = "Mars/Olympus"
    return line


#: Addresses (normalised) that may be suppressed before the import, as an unsubscribe or complaint leaves them.
SUPPRESSIBLE = [("email", "jane@example.com"), ("email", "max@example.org"), ("sms", "+4915112345678")]


async def workspace(database, suppressed: list[tuple[str, str]] = []) -> uuid.UUID:  # noqa: B006  # read only
    async with database.sessionmaker() as db, db.begin():
        created = await workspace_service.create_workspace(db, "Import")
        await purposes.create_purpose(db, created.id, "newsletter", "News", "marketing")
        await purposes.create_purpose(db, created.id, "orders", "Orders", "transactional")
        for channel, value in suppressed:
            identifier = email_suppression_form(value) if channel == "email" else value
            rows = identifier_suppression_rows(
                Keys(TEST_SECRET), created.id, channel, identifier, SuppressionReason.UNSUBSCRIBE
            )
            await ledger_repository.add_suppressions(db, rows)
    return created.id


async def lines_of(body: bytes):
    async def chunks():
        yield body

    async for item in consents.ndjson_lines(chunks()):
        yield item


LEDGER = """
SELECT e.seq, c.external_id, e.channel, cp.value, p.key AS purpose, e.trigger, e.from_state, e.to_state,
       e.legal_basis, n.text AS notice, n.version AS notice_version, e.actor_type, e.actor_id, e.occurred_at,
       e.personal -> 'evidence' AS evidence, length(e.hash) AS hash_length
  FROM consent_events e
  JOIN contacts c ON c.id = e.contact_id
  JOIN contact_points cp ON cp.id = e.contact_point_id
  LEFT JOIN purposes p ON p.id = e.purpose_id
  LEFT JOIN notices n ON n.id = e.notice_id
 WHERE e.workspace_id = :workspace_id
 ORDER BY e.seq
"""
PROJECTIONS = """
SELECT c.external_id, s.channel, cp.value, p.key AS purpose, s.state, s.legal_basis, n.text AS notice, s.since,
       s.version, e.seq AS last_event_seq
  FROM consents s
  JOIN contacts c ON c.id = s.contact_id
  JOIN contact_points cp ON cp.id = s.contact_point_id
  LEFT JOIN purposes p ON p.id = s.purpose_id
  LEFT JOIN notices n ON n.id = s.notice_id
  LEFT JOIN consent_events e ON e.id = s.last_event_id
 WHERE s.workspace_id = :workspace_id
 ORDER BY 1, 2, 3, 4
"""
POINTS = """
SELECT c.external_id, c.locale, c.timezone, cp.channel, cp.value, cp.details, cp.suppression_keys,
       cp.contact_external_id, cp.verified_via, cp.verified_at IS NOT NULL AS verified, cp.reachability
  FROM contact_points cp JOIN contacts c ON c.id = cp.contact_id
 WHERE cp.workspace_id = :workspace_id
 ORDER BY 1, 4, 5
"""
NOTICES = """
SELECT p.key, n.locale, n.channels, n.version, n.text
  FROM notices n JOIN purposes p ON p.id = n.purpose_id
 WHERE n.workspace_id = :workspace_id
 ORDER BY 1, 2, 4, 3
"""


async def rows(session, sql: str, workspace_id: uuid.UUID) -> list[dict[str, Any]]:
    result = await session.execute(text(sql), {"workspace_id": workspace_id})
    return [dict(row._mapping) for row in result]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lines=st.lists(line_dicts(), min_size=2, max_size=30),
    batch=st.sampled_from([1, 3, 2_000]),
    repeat=st.booleans(),
    suppressed=st.lists(st.sampled_from(SUPPRESSIBLE), unique=True, max_size=2),
)
async def test_the_set_based_import_records_what_the_line_by_line_rules_record(
    database, lines, batch, repeat, suppressed
):
    body = "\n".join(json.dumps(line) for line in lines).encode()
    keys = Keys(TEST_SECRET)
    batched, one_by_one = await workspace(database, suppressed), await workspace(database, suppressed)
    saved, consents.BATCH = consents.BATCH, batch
    try:
        async with database.sessionmaker() as db:
            reports = [await consents.import_consents(db, keys, batched, lines_of(body), actor=ACTOR)]
            expected = [await import_line_by_line(db, keys, one_by_one, lines_of(body), actor=ACTOR)]
            if repeat:  # the same file again: both record nothing, for the same reasons
                reports.append(await consents.import_consents(db, keys, batched, lines_of(body), actor=ACTOR))
                expected.append(await import_line_by_line(db, keys, one_by_one, lines_of(body), actor=ACTOR))
    finally:
        consents.BATCH = saved

    assert msgspec.to_builtins(reports) == msgspec.to_builtins(expected)
    async with database.sessionmaker() as db, db.begin():
        for sql in (LEDGER, PROJECTIONS, POINTS, NOTICES):
            assert await rows(db, sql, batched) == await rows(db, sql, one_by_one)
        for workspace_id in (batched, one_by_one):
            verified = await verify_chain(db, workspace_id)
            assert verified.valid, verified
