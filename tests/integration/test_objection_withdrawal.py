"""Withdrawing an objection lifts its own block, and only its own; the answer says what still stops print.

2026-12-06 (docs/security.md): the withdrawal answered print `none` while the objection's suppression kept the
address out of every mailing. A version that lifted the objection's suppression by its label was found (hostile
review) to lift an erasure's block and a running pause recorded on the same key: one suppression row stands for a
key whatever wrote it. Suppressions now record their sources (`reasons`, migration 0047): the withdrawal takes the
objection's away and what anything else wrote stays.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import text

from app.domain.model import SuppressionReason
from app.ledger.actions import identifier_suppression_rows
from app.ledger.repository import add_suppressions
from app.lib.auth import Scope
from app.lib.keys import Keys
from tests.conftest import TEST_SECRET

ADDRESS = {"street": "Hauptstr. 12 A", "postcode": "10115", "city": "Berlin"}
PROOF = {"document_ref": "letter 2026-12-01"}


@pytest.fixture
async def letters(ledger):
    return await ledger.purpose("letters")


async def person(client, tenant, external_id: str, name: str | None = "Erika Musterfrau") -> None:
    address = {**ADDRESS, "name": name} if name else ADDRESS
    created = await client.post(
        "/v1/contacts",
        json={"external_id": external_id, "postal_address": address},
        headers=await tenant.key(Scope.CONSENTS_WRITE),
    )
    assert created.status_code == 201, created.text


async def object_(client, tenant, kind: str, *, contact: str | None = None, address: Any = None) -> None:
    body: dict[str, Any] = {"scope": "print", "kind": kind, "evidence": {"note": f"{kind} objection"}}
    if contact:
        body["contact"] = contact
    if address:
        body["postal_address"] = address
    response = await client.post("/v1/objections", json=body, headers=await tenant.key(Scope.CONSENTS_WRITE))
    assert response.status_code == 201, response.text


async def withdraw(client, tenant, contact: str, headers: dict[str, str] | None = None) -> Any:
    return await client.post(
        "/v1/objections/withdrawals",
        json={"contact": contact, "evidence": PROOF},
        headers={**(await tenant.key(Scope.CONSENTS_WRITE)), **(headers or {})},
    )


async def decision(client, tenant, contact: str, channel: str) -> dict[str, Any]:
    response = await client.get(
        "/v1/eligibility",
        params={"contact": contact, "channel": channel, "purpose": "letters"},
        headers=await tenant.key(Scope.ELIGIBILITY_READ),
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def print_decision(client, tenant, contact: str) -> dict[str, Any]:
    return await decision(client, tenant, contact, "print")


async def suppression_reasons(session, tenant) -> list[str]:
    rows = await session.execute(
        text("SELECT reason FROM suppressions WHERE workspace_id = :ws ORDER BY reason"), {"ws": tenant.id}
    )
    return list(rows.scalars())


@pytest.mark.parametrize("kind", ["personal", "art21"])
async def test_withdrawing_the_objection_lets_print_through_again(client, tenant, letters, kind, session):
    await person(client, tenant, "crm-1")
    await object_(client, tenant, kind, contact="crm-1")
    assert (await print_decision(client, tenant, "crm-1"))["reason"] == "objected"

    lifted = await withdraw(client, tenant, "crm-1")

    assert lifted.status_code == 200, lifted.text
    answer = lifted.json()
    assert [(c["channel"], c["state"]) for c in answer["changes"]] == [("print", "none")]
    assert answer["still_blocked_by"] == [], "nothing else stops print"
    assert (await print_decision(client, tenant, "crm-1"))["eligible"] is True, "the objection no longer binds"
    assert await suppression_reasons(session, tenant) == [], "the objection's own suppression is lifted"
    events = (await client.get("/v1/contacts/crm-1/events", headers=await tenant.key(Scope.AUDIT_READ))).json()
    assert [(e["trigger"], e["to_state"]) for e in events][-1] == ("objection_withdrawn", "none")
    assert events[-1]["evidence"] == PROOF, "the withdrawal is in the ledger with the person's proof"


async def test_a_suppression_older_than_the_recorded_sources_stays_and_the_answer_says_so(
    client, tenant, letters, session
):
    """A row written before migration 0047 holds `unrecorded` beside its label: others may have written its key."""
    await person(client, tenant, "crm-1")
    await object_(client, tenant, "personal", contact="crm-1")
    await session.execute(  # as migration 0047 leaves a row that existed before it
        text("UPDATE suppressions SET reasons = '{objection_art21,unrecorded}' WHERE workspace_id = :ws"),
        {"ws": tenant.id},
    )

    lifted = await withdraw(client, tenant, "crm-1")

    assert lifted.status_code == 200, lifted.text
    assert lifted.json()["still_blocked_by"] == ["unrecorded"]
    decision = await print_decision(client, tenant, "crm-1")
    assert (decision["eligible"], decision["reason"]) == (False, "suppressed")
    rows = await session.execute(
        text("SELECT reason, reasons FROM suppressions WHERE workspace_id = :ws"), {"ws": tenant.id}
    )
    assert rows.all() == [("objection_art21", ["unrecorded"])], "the row stays, with the first writer's label"


async def test_a_robinson_entry_is_named_among_what_still_blocks(client, tenant, letters):
    await person(client, tenant, "crm-1")
    listed = await client.post(
        "/v1/imports/robinson",
        content="Name;Straße;Hausnummer;PLZ;Ort\nErika Musterfrau;Hauptstraße;12a;10115;Berlin\n".encode(),
        headers={**(await tenant.key(Scope.CONSENTS_WRITE)), "Content-Type": "text/csv"},
    )
    assert listed.status_code == 200, listed.text
    await object_(client, tenant, "personal", contact="crm-1")

    lifted = await withdraw(client, tenant, "crm-1")

    assert lifted.status_code == 200, lifted.text
    assert lifted.json()["still_blocked_by"] == ["robinson"], "the person leaves the list with its operator"
    decision = await print_decision(client, tenant, "crm-1")
    assert (decision["eligible"], decision["reason"]) == (False, "suppressed")


async def test_a_household_sticker_is_named_among_what_still_blocks(client, tenant, letters):
    await object_(client, tenant, "sticker", address=ADDRESS)  # the carrier saw it: no person named
    await person(client, tenant, "crm-1")
    await object_(client, tenant, "personal", contact="crm-1")

    lifted = await withdraw(client, tenant, "crm-1")

    assert lifted.json()["still_blocked_by"] == ["objection_sticker"], "the household's sticker is not hers to lift"
    assert (await print_decision(client, tenant, "crm-1"))["reason"] == "suppressed"


async def test_an_erasures_block_stays_after_a_returning_contacts_withdrawal(client, tenant, letters, admin, session):
    """Object, then erase (CHANNEL_RULES X1): the erasure's block sits on the objection's row. The address comes
    back from the CRM, objects and withdraws: the erasure must still stop print (it did not, when the withdrawal
    lifted objection rows by their label)."""
    await person(client, tenant, "crm-1")
    await object_(client, tenant, "personal", contact="crm-1")
    erased = await client.delete("/v1/contacts/crm-1", headers=admin)
    assert erased.status_code in (200, 204), erased.text
    await person(client, tenant, "crm-2")
    await object_(client, tenant, "personal", contact="crm-2")

    lifted = await withdraw(client, tenant, "crm-2")

    assert lifted.status_code == 200, lifted.text
    assert lifted.json()["still_blocked_by"] == ["erasure"]
    assert (await print_decision(client, tenant, "crm-2"))["eligible"] is False, "the erasure's block stays"
    rows = await session.execute(
        text("SELECT reason, reasons FROM suppressions WHERE workspace_id = :ws"), {"ws": tenant.id}
    )
    assert rows.all() == [("erasure", ["erasure"])], "relabelled: the objection that wrote it first is lifted"


async def _pause_print(client, tenant, session, contact_ref: str) -> None:
    """The person pauses print for 12 weeks on their preference page."""
    contact_id = await session.scalar(
        text("SELECT id FROM contacts WHERE workspace_id = :ws AND external_id = :ext"),
        {"ws": tenant.id, "ext": contact_ref},
    )
    point_id = await session.scalar(
        text("SELECT id FROM contact_points WHERE contact_id = :c AND channel = 'print'"), {"c": contact_id}
    )
    link = await client.post(
        f"/v1/contacts/{contact_id}/preference-link", headers=await tenant.key(Scope.CONSENTS_WRITE)
    )
    assert link.status_code == 201, link.text
    path = "/" + link.json()["url"].split("/", 3)[3]
    token = re.search(r'name="form_token" value="([0-9a-f]+)"', (await client.get(path)).text)
    assert token is not None
    form = {"action": "pause", "form_token": token.group(1), "point": str(point_id), "weeks": "12"}
    paused = await client.post(path, params={"lang": "en"}, data=form)
    assert paused.status_code == 200, paused.text


@pytest.mark.parametrize("pause_first", [True, False], ids=["pause-then-objection", "objection-then-pause"])
async def test_a_running_pause_still_stops_print_after_the_withdrawal_until_it_ends(
    client, tenant, letters, session, pause_first
):
    await person(client, tenant, "crm-1")
    if pause_first:
        await _pause_print(client, tenant, session, "crm-1")
    await object_(client, tenant, "personal", contact="crm-1")
    if not pause_first:
        await _pause_print(client, tenant, session, "crm-1")

    lifted = await withdraw(client, tenant, "crm-1")

    assert lifted.status_code == 200, lifted.text
    assert lifted.json()["still_blocked_by"] == ["paused"]
    assert (await print_decision(client, tenant, "crm-1"))["eligible"] is False, "the pause still stops print"
    [(reason, weeks)] = (
        await session.execute(
            text(
                "SELECT reason, round(extract(epoch FROM until - now()) / 604800) FROM suppressions"
                " WHERE workspace_id = :ws"
            ),
            {"ws": tenant.id},
        )
    ).all()
    assert (reason, weeks) == ("paused", 12), "the pause's own row, with the end the person chose"
    await session.execute(  # twelve weeks later
        text("UPDATE suppressions SET until = now() - interval '1 second' WHERE workspace_id = :ws"), {"ws": tenant.id}
    )
    assert (await print_decision(client, tenant, "crm-1"))["eligible"] is True, "and print comes when it ends"


async def test_a_repeated_withdrawal_records_nothing_more(client, tenant, letters, session):
    await person(client, tenant, "crm-1")
    await object_(client, tenant, "personal", contact="crm-1")
    first = await withdraw(client, tenant, "crm-1", {"Idempotency-Key": "lift-1"})
    assert first.status_code == 200, first.text

    again = await withdraw(client, tenant, "crm-1", {"Idempotency-Key": "lift-1"})
    assert (again.status_code, again.json()) == (200, first.json()), "the same key answers the first answer"
    unkeyed = await withdraw(client, tenant, "crm-1")
    assert unkeyed.status_code == 409, "nothing is objected any more"
    assert unkeyed.json()["code"] == "transition_not_allowed"
    events = (await client.get("/v1/contacts/crm-1/events", headers=await tenant.key(Scope.AUDIT_READ))).json()
    assert [e["trigger"] for e in events].count("objection_withdrawn") == 1


async def test_a_sticker_is_labelled_a_sticker_and_a_personal_objection_art21(client, tenant, letters, session):
    await object_(client, tenant, "sticker", address={**ADDRESS, "name": "Hans Sticker"})
    assert await suppression_reasons(session, tenant) == ["objection_sticker"] * 2, "the address and the household"
    await object_(client, tenant, "personal", address={**ADDRESS, "name": "Otto Objector"})
    assert await suppression_reasons(session, tenant) == ["objection_art21", "objection_sticker", "objection_sticker"]


async def test_the_preference_page_does_not_say_post_may_come_while_a_sticker_blocks_it(client, tenant, letters):
    """Eligibility answered `suppressed` while the person's page said "may send you advertising by post" and offered
    to object again (newcomer review of 2026-12-06): here a sticker still blocks after the withdrawal."""
    await object_(client, tenant, "sticker", address=ADDRESS)
    await person(client, tenant, "crm-1")
    await object_(client, tenant, "personal", contact="crm-1")
    assert (await withdraw(client, tenant, "crm-1")).status_code == 200
    link = await client.post("/v1/contacts/crm-1/preference-link", headers=await tenant.key(Scope.CONSENTS_WRITE))
    assert link.status_code == 201, link.text
    view = (await client.get("/" + link.json()["url"].split("/", 3)[3] + "/preferences")).json()
    [address] = [a for a in view["addresses"] if a["channel"] == "print"]
    assert address["print_state"] == "postal_blocked"
    assert view["print_objected"] is False


async def test_all_marketing_objection_withdrawn_lets_each_channel_back_only_where_nothing_else_blocks(
    client, tenant, letters, ledger, session
):
    """Scope `all_marketing` suppressed the email and SMS addresses too: the withdrawal lifts the objection there;
    a fresh opt-in brings email back, while a STOP's suppression on the number stays."""
    await person(client, tenant, "crm-1")
    contact_id = await session.scalar(
        text("SELECT id FROM contacts WHERE workspace_id = :ws AND external_id = 'crm-1'"), {"ws": tenant.id}
    )
    email = await ledger.point("email", "erika@example.com", contact_id=contact_id)
    sms = await ledger.point("sms", "+4915112345678", contact_id=contact_id)
    opt_in = {email: ("signup", "confirm"), sms: ("start_word",)}
    for point, triggers in opt_in.items():
        await ledger.apply(point, letters.id, *triggers)
    body = {"contact": "crm-1", "scope": "all_marketing", "kind": "personal", "evidence": {"note": "letter"}}
    objected = await client.post("/v1/objections", json=body, headers=await tenant.key(Scope.CONSENTS_WRITE))
    assert objected.status_code == 201, objected.text
    # a STOP from the number, as the Twilio webhook records one for a number it cannot tie to a contact
    stop = identifier_suppression_rows(
        Keys(TEST_SECRET), tenant.id, "sms", "+4915112345678", SuppressionReason.UNSUBSCRIBE
    )
    await add_suppressions(session, stop)

    lifted = await withdraw(client, tenant, "crm-1")

    assert lifted.status_code == 200, lifted.text
    assert lifted.json()["still_blocked_by"] == []
    for point, triggers in opt_in.items():  # the objection withdrew the channels: a fresh opt-in brings them back
        await ledger.apply(point, None, *triggers)
    decisions = {
        channel: (await decision(client, tenant, "crm-1", channel))["eligible"] for channel in ("email", "sms", "print")
    }
    assert decisions == {"email": True, "sms": False, "print": True}, "the STOP on the number stays"
    rows = await session.execute(
        text("SELECT channel, reason, reasons FROM suppressions WHERE workspace_id = :ws"), {"ws": tenant.id}
    )
    assert rows.all() == [("sms", "unsubscribe", ["unsubscribe"])]


async def test_a_housemates_sticker_shows_print_blocked_and_keeps_the_persons_own_objection(client, tenant, letters):
    """Erika never objected; a sticker recorded for the house (no name) stops print to her address. Her page said she
    had objected and took away the button to object herself (hostile review of 2026-12-06)."""
    await person(client, tenant, "crm-1")
    await object_(client, tenant, "sticker", address=ADDRESS)
    link = await client.post("/v1/contacts/crm-1/preference-link", headers=await tenant.key(Scope.CONSENTS_WRITE))
    page = "/" + link.json()["url"].split("/", 3)[3]
    [address] = [a for a in (await client.get(page + "/preferences")).json()["addresses"] if a["channel"] == "print"]
    assert address["print_state"] == "postal_blocked"
    html = (await client.get(page, params={"lang": "en"})).text
    assert "sends no advertising by post to this address" in html
    assert 'name="action" value="object_print"' in html, "she can still record her own objection"
    objected = await client.post(
        page + "/preferences", json={"action": "object_print"}, headers={"Origin": "https://consent.example.com"}
    )
    assert objected.status_code == 200, objected.text
    [address] = [a for a in objected.json()["addresses"] if a["channel"] == "print"]
    assert address["print_state"] == "objected"


# --- a key another contact holds (hostile review of branch `sources`, 2026-12-06) --------------------------------
#
# `reasons` does not say who wrote a source. Two contacts' addresses can have one suppression key: email is keyed
# lower-cased as a whole, while the address keeps its local part's case (`Erika@` and `erika@` are two addresses).
# The withdrawal lifted `objection_art21` under every key of every address of the contact: one contact's withdrawal
# of a print objection deleted another contact's objection to all marketing on the shared mailbox.


async def contact_id_of(session, tenant, external_id: str) -> Any:
    return await session.scalar(
        text("SELECT id FROM contacts WHERE workspace_id = :ws AND external_id = :ext"),
        {"ws": tenant.id, "ext": external_id},
    )


async def object_to_all(client, tenant, contact: str) -> None:
    body = {"contact": contact, "scope": "all_marketing", "kind": "personal", "evidence": {"note": "letter"}}
    objected = await client.post("/v1/objections", json=body, headers=await tenant.key(Scope.CONSENTS_WRITE))
    assert objected.status_code == 201, objected.text


async def with_email(client, tenant, ledger, session, letters, external_id: str, name: str, email: str) -> Any:
    """A contact with a postal address and an opted-in email address (answered)."""
    await person(client, tenant, external_id, name)
    point = await ledger.point("email", email, contact_id=await contact_id_of(session, tenant, external_id))
    await ledger.apply(point, letters.id, "signup", "confirm")
    return point


async def email_rows(session, tenant) -> list[tuple[str, list[str]]]:
    rows = await session.execute(
        text("SELECT reason, reasons FROM suppressions WHERE workspace_id = :ws AND channel = 'email'"),
        {"ws": tenant.id},
    )
    return [tuple(row) for row in rows.all()]


async def test_a_print_objections_withdrawal_leaves_another_contacts_objection_on_a_shared_mailbox(
    client, tenant, letters, ledger, session
):
    """B objects to all marketing on erika@; A (Erika@, the same key) objects to print only and withdraws that."""
    await with_email(client, tenant, ledger, session, letters, "crm-b", "Bernd Beispiel", "erika@example.com")
    await object_to_all(client, tenant, "crm-b")
    await with_email(client, tenant, ledger, session, letters, "crm-a", "Erika Musterfrau", "Erika@example.com")
    assert (await decision(client, tenant, "crm-a", "email"))["eligible"] is False, "B's objection stops the mailbox"
    await object_(client, tenant, "personal", contact="crm-a")

    lifted = await withdraw(client, tenant, "crm-a")

    assert lifted.status_code == 200, lifted.text
    assert (await print_decision(client, tenant, "crm-a"))["eligible"] is True, "A's own print objection is lifted"
    assert await email_rows(session, tenant) == [("objection_art21", ["objection_art21"])], "B's stays"
    assert (await decision(client, tenant, "crm-a", "email"))["eligible"] is False
    assert (await decision(client, tenant, "crm-b", "email"))["eligible"] is False
    assert (lifted.json()["still_blocked_by"], lifted.json()["shared_with_another_contact"]) == ([], [])


async def test_an_objection_to_all_marketing_withdrawn_keeps_a_key_another_contact_holds_and_says_so(
    client, tenant, letters, ledger, session
):
    """Both object to all marketing: A's withdrawal cannot tell whose objection the shared key's row holds."""
    await with_email(client, tenant, ledger, session, letters, "crm-b", "Bernd Beispiel", "erika@example.com")
    await object_to_all(client, tenant, "crm-b")
    point = await with_email(client, tenant, ledger, session, letters, "crm-a", "Erika Musterfrau", "Erika@example.com")
    await object_to_all(client, tenant, "crm-a")

    lifted = await withdraw(client, tenant, "crm-a")

    assert lifted.status_code == 200, lifted.text
    assert await email_rows(session, tenant) == [("objection_art21", ["objection_art21"])], "B's may be the one there"
    assert (await print_decision(client, tenant, "crm-a"))["eligible"] is True
    assert lifted.json()["still_blocked_by"] == []
    assert lifted.json()["shared_with_another_contact"] == ["email"], "the answer says what stays, and why"
    await ledger.apply(point, None, "signup", "confirm")  # a fresh opt-in does not lift B's objection
    assert (await decision(client, tenant, "crm-a", "email"))["reason"] == "suppressed"


async def test_a_print_objections_withdrawal_lifts_print_only(client, tenant, letters, ledger, session):
    """An Art. 21 source on the contact's email key that the print objection did not write (here added as a writer
    the ledger does not tie to the contact would) stays: the withdrawal lifts the channels its objection covered."""
    await with_email(client, tenant, ledger, session, letters, "crm-a", "Erika Musterfrau", "erika@example.com")
    await add_suppressions(
        session,
        identifier_suppression_rows(
            Keys(TEST_SECRET), tenant.id, "email", "erika@example.com", SuppressionReason.OBJECTION_ART21
        ),
    )
    await object_(client, tenant, "personal", contact="crm-a")

    lifted = await withdraw(client, tenant, "crm-a")

    assert lifted.status_code == 200, lifted.text
    assert (await print_decision(client, tenant, "crm-a"))["eligible"] is True
    assert await email_rows(session, tenant) == [("objection_art21", ["objection_art21"])], "not the print's to lift"


async def test_a_key_shared_with_an_erased_contact_stays_blocked_by_its_erasure(
    client, tenant, letters, ledger, session, admin
):
    """The erased contact has no address left to hold the key; its erasure's source does (CHANNEL_RULES X1)."""
    await with_email(client, tenant, ledger, session, letters, "crm-b", "Bernd Beispiel", "erika@example.com")
    await object_to_all(client, tenant, "crm-b")
    erased = await client.delete("/v1/contacts/crm-b", headers=admin)
    assert erased.status_code in (200, 204), erased.text
    await with_email(client, tenant, ledger, session, letters, "crm-a", "Erika Musterfrau", "Erika@example.com")
    await object_to_all(client, tenant, "crm-a")

    lifted = await withdraw(client, tenant, "crm-a")

    assert lifted.status_code == 200, lifted.text
    assert lifted.json()["shared_with_another_contact"] == []
    assert await email_rows(session, tenant) == [("erasure", ["erasure"])], "the objection's source only goes"
    assert (await decision(client, tenant, "crm-a", "email"))["eligible"] is False


async def test_after_a_merge_the_survivors_withdrawal_lifts_the_duplicates_objection_on_the_moved_address(
    client, tenant, letters, ledger, session, admin
):
    """The duplicate objected to all marketing; its address is the survivor's now and its history the survivor's:
    the person's withdrawal lifts it (no other contact holds the key: the duplicate's stub has no address)."""
    await with_email(client, tenant, ledger, session, letters, "crm-old", "Erika Musterfrau", "erika@example.com")
    await object_to_all(client, tenant, "crm-old")
    await person(client, tenant, "crm-a", "Erika Musterfrau-Neu")
    merged = await client.post("/v1/contacts/crm-a/merge", json={"duplicate": "crm-old"}, headers=admin)
    assert merged.status_code == 200, merged.text

    lifted = await withdraw(client, tenant, "crm-a")

    assert lifted.status_code == 200, lifted.text
    assert (lifted.json()["still_blocked_by"], lifted.json()["shared_with_another_contact"]) == ([], [])
    assert await email_rows(session, tenant) == [], "the duplicate's objection was the person's own"
    assert (await print_decision(client, tenant, "crm-a"))["eligible"] is True


# --- a row an instance older than 0047 wrote during a rolling deploy (hostile review of branch `sources`) -----------

#: main's add_suppressions conflict branch, as an instance not yet upgraded runs it after 0047: a pause becomes the
#: permanent row, its `reasons` ({paused}) untouched
OLD_WRITER = (
    "UPDATE suppressions SET reason = 'objection_art21', until = NULL WHERE workspace_id = :ws AND until IS NOT NULL"
)


@pytest.mark.parametrize("joined", [False, True], ids=["old-objection", "old-row-then-new-objection"])
async def test_a_pause_an_old_writer_made_permanent_stays_as_an_unrecorded_source(
    client, tenant, letters, session, joined
):
    """The old writer's row is `reason=objection_art21, reasons={paused}` without an end; a current objection joins it
    (`{paused, objection_art21}`), and the withdrawal relabelled it `paused` without an end: 500 (the check
    `until_iff_paused`). Its `paused` is no pause: an unknown source, which keeps blocking and is named so."""
    await person(client, tenant, "crm-1")
    await _pause_print(client, tenant, session, "crm-1")
    await session.execute(text(OLD_WRITER), {"ws": tenant.id})  # an old instance's objection on the pause
    await object_(client, tenant, "personal", contact="crm-1")  # the ledger's objection; the row gains its source
    if not joined:  # the old instance recorded that objection itself: its row kept {paused}
        await session.execute(
            text("UPDATE suppressions SET reasons = '{paused}' WHERE workspace_id = :ws"), {"ws": tenant.id}
        )

    lifted = await withdraw(client, tenant, "crm-1")

    assert lifted.status_code == 200, lifted.text
    assert lifted.json()["still_blocked_by"] == ["unrecorded"]
    assert (await print_decision(client, tenant, "crm-1"))["reason"] == "suppressed"
    rows = await session.execute(
        text("SELECT reason, reasons, until FROM suppressions WHERE workspace_id = :ws"), {"ws": tenant.id}
    )
    assert rows.all() == [("objection_art21", ["unrecorded"] if joined else ["paused"], None)]


async def test_ending_a_pause_kept_under_an_objection_is_recorded_and_print_comes_after_the_withdrawal(
    client, tenant, letters, session
):
    """Object, pause 12 weeks (kept in `paused_until` under the objection's row), end the pause: it was ended, but
    no `pause_ended` was recorded (hostile review of branch `sources`): the ledger did not say the person ended it."""
    await person(client, tenant, "crm-1")
    await object_(client, tenant, "personal", contact="crm-1")
    await _pause_print(client, tenant, session, "crm-1")
    contact_id = await contact_id_of(session, tenant, "crm-1")
    link = await client.post(
        f"/v1/contacts/{contact_id}/preference-link", headers=await tenant.key(Scope.CONSENTS_WRITE)
    )
    path = "/" + link.json()["url"].split("/", 3)[3]
    token = re.search(r'name="form_token" value="([0-9a-f]+)"', (await client.get(path)).text)
    assert token is not None
    point_id = await session.scalar(
        text("SELECT id FROM contact_points WHERE contact_id = :c AND channel = 'print'"), {"c": contact_id}
    )
    ended = await client.post(
        path, params={"lang": "en"}, data={"action": "end_pause", "form_token": token.group(1), "point": str(point_id)}
    )
    assert ended.status_code == 200, ended.text

    events = (await client.get("/v1/contacts/crm-1/events", headers=await tenant.key(Scope.AUDIT_READ))).json()
    assert [e["trigger"] for e in events][-2:] == ["pause", "pause_ended"]
    assert (await withdraw(client, tenant, "crm-1")).json()["still_blocked_by"] == []
    assert (await print_decision(client, tenant, "crm-1"))["eligible"] is True, "the pause ended: nothing is left"
