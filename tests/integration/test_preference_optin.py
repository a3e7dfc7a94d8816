"""Opting in on the preference centre (issue 17): never skipping a channel's own proof.

A link mailed to an email address proves control of that address: there, a purpose not received can be opted in
to again with one click. Nowhere else: not from a mail's footer link (forwardable), not for another address or
channel, not on an unverified or unreachable address, and not where a suppression says do-not-contact. Other
channels are explained in words (start word and number, app or browser permission).
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select, update

from app.domain.model import Reachability, SuppressionReason
from app.ledger import repository as ledger_repository
from app.ledger.actions import suppression_rows
from app.ledger.models import ConsentEvent, ContactPoint
from app.lib.auth import Scope
from app.lib.keys import Keys
from app.preferences import service
from app.purposes import service as purposes
from app.workspaces import repository as workspace_repository
from tests.conftest import TEST_SECRET

BASE = "https://consent.example.com"
SENDER = "+4930123456789"
SAME_ORIGIN = {"Origin": BASE, "Sec-Fetch-Site": "same-origin", "User-Agent": "Jane's browser"}


@pytest.fixture
async def jane(ledger, database, tenant):
    """Jane: two email addresses and an SMS number, newsletter withdrawn on all; a German email notice."""
    newsletter = await ledger.purpose("newsletter")
    first = await ledger.point("email", "jane@example.com")
    second = await ledger.point("email", "jane.doe@example.org", contact_id=first.contact_id)
    sms = await ledger.point("sms", "+4915112345678", contact_id=first.contact_id)
    for point in (first, second):
        await ledger.apply(point, newsletter.id, "signup", "confirm", "unsubscribe")
    await ledger.apply(sms, newsletter.id, "signup", "start_word", "stop_word")
    async with database.sessionmaker() as session, session.begin():
        notice, _ = await purposes.create_notice(
            session, tenant.id, purpose_key="newsletter", channels=["email"], locale="de", text="Ja, Newsletter."
        )
        await workspace_repository.save_settings(
            session, tenant.id, {"phone": {"sms_from": SENDER, "start_words": {"NEWS": "newsletter"}}}
        )
    return {
        "contact_id": first.contact_id,
        "first": first,
        "second": second,
        "sms": sms,
        "newsletter": newsletter,
        "notice": notice,
    }


async def link_to(database, tenant, jane, point, issued_by: str = "request:email") -> str:
    """A link as the page's request form mails it to ``point`` (or, with ``issued_by``, as others issue one)."""
    async with database.sessionmaker() as session, session.begin():
        issued = await service.issue_link(
            session, tenant.id, str(jane["contact_id"]), issued_by=issued_by, point_id=point.id
        )
    return f"/p/{issued.token}"


def form_token(html: str) -> str:
    found = re.search(r'name="form_token" value="([0-9a-f]+)"', html)
    assert found is not None
    return found.group(1)


def opt_in_points(html: str) -> list[str]:
    """The addresses the page offers an opt-in button for."""
    return re.findall(r'name="action" value="opt_in">\s*<input type="hidden" name="point" value="([^"]+)"', html)


async def event_count(session) -> int:
    return await session.scalar(select(func.count()).select_from(ConsentEvent))


async def eligibility(client, tenant, contact_id, channel="email", purpose="newsletter"):
    reader = await tenant.key(Scope.ELIGIBILITY_READ)
    query = {"contact": str(contact_id), "channel": channel, "purpose": purpose}
    return (await client.get("/v1/eligibility", params=query, headers=reader)).json()


async def post_opt_in(client, path, point, purpose) -> tuple[str, object]:
    page = await client.get(path)
    data = {"action": "opt_in", "form_token": form_token(page.text), "point": str(point.id), "purpose": str(purpose.id)}
    return page.text, await client.post(path, data=data, headers=SAME_ORIGIN)


async def test_a_link_mailed_to_an_address_opts_it_in_again_with_the_person_and_notice(
    client, database, tenant, jane, session
):
    assert (await eligibility(client, tenant, jane["contact_id"]))["eligible"] is False
    path = await link_to(database, tenant, jane, jane["first"])
    page, answer = await post_opt_in(client, path, jane["first"], jane["newsletter"])
    assert opt_in_points(page) == [str(jane["first"].id)], "only the address the link was mailed to"
    assert "Newsletter per E-Mail wieder anmelden" in page
    assert answer.status_code == 200, answer.text
    assert "Erledigt: Sie erhalten Newsletter per E-Mail an j***@example.com wieder." in answer.text
    assert (await eligibility(client, tenant, jane["contact_id"]))["eligible"] is True
    event = await session.scalar(
        select(ConsentEvent).where(ConsentEvent.workspace_id == tenant.id).order_by(ConsentEvent.seq.desc()).limit(1)
    )
    assert (event.trigger, event.from_state, event.to_state) == ("preference_opt_in", "opted_out", "opted_in")
    assert (event.contact_point_id, event.purpose_id) == (jane["first"].id, jane["newsletter"].id)
    assert event.actor_type == "subject"
    assert event.legal_basis == "consent"
    assert event.notice_id == jane["notice"].id, "the text the person opted in to"
    evidence = event.personal["evidence"]
    assert evidence["method"] == "opt_in"
    assert evidence["source"] == "preference_centre"
    assert evidence["user_agent"] == "Jane's browser"
    assert evidence["ip"]
    link = await session.scalar(select(service.PreferenceLink).where(service.PreferenceLink.id.isnot(None)))
    assert evidence["preference_link_id"] == str(link.id)
    assert str(jane["first"].id) not in opt_in_points(answer.text), "received now: the button is gone"
    count = await event_count(session)
    _, again = await post_opt_in(client, path, jane["first"], jane["newsletter"])
    assert again.status_code == 200
    assert "Sie erhalten dies bereits" in again.text
    assert await event_count(session) == count, "a repeated click records nothing new"


async def test_a_footer_link_offers_no_opt_in_and_a_forged_one_is_refused(client, database, tenant, jane, session):
    path = await link_to(database, tenant, jane, jane["first"], issued_by=service.FROM_A_MAIL)
    before = await event_count(session)
    page, answer = await post_opt_in(client, path, jane["first"], jane["newsletter"])
    assert opt_in_points(page) == []
    assert "wieder anmelden" not in page
    assert "schickt einen Bestätigungslink an die Adresse" in page, "its own proof: a signup with a confirmation"
    assert answer.status_code == 403
    assert await event_count(session) == before
    assert (await eligibility(client, tenant, jane["contact_id"]))["eligible"] is False


async def test_a_link_for_one_address_cannot_opt_in_another(client, database, tenant, jane, session):
    path = await link_to(database, tenant, jane, jane["first"])
    before = await event_count(session)
    _, answer = await post_opt_in(client, path, jane["second"], jane["newsletter"])
    assert answer.status_code == 403
    assert "Es hat sich nichts geändert" in answer.text
    _, by_sms = await post_opt_in(client, path, jane["sms"], jane["newsletter"])
    assert by_sms.status_code == 403, "another channel needs its own proof"
    assert await event_count(session) == before


@pytest.mark.parametrize("flaw", ["unverified", "undeliverable", "sms_link", "no_point"])
async def test_no_opt_in_where_the_link_proves_no_usable_address(client, database, tenant, jane, session, flaw):
    point = jane["sms"] if flaw == "sms_link" else jane["first"]
    if flaw == "no_point":
        async with database.sessionmaker() as db, db.begin():
            issued = await service.issue_link(db, tenant.id, str(jane["contact_id"]), issued_by="api_key:test")
        path = f"/p/{issued.token}"
    else:
        path = await link_to(database, tenant, jane, point)
    changed = {
        "unverified": {"verified_at": None, "verified_via": None},
        "undeliverable": {"reachability": Reachability.UNDELIVERABLE},
    }
    if flaw in changed:
        async with database.sessionmaker() as db, db.begin():
            await db.execute(update(ContactPoint).where(ContactPoint.id == point.id).values(**changed[flaw]))
    before = await event_count(session)
    page, answer = await post_opt_in(client, path, jane["first"], jane["newsletter"])
    assert opt_in_points(page) == []
    assert answer.status_code == 403
    assert await event_count(session) == before


async def test_a_suppressed_address_is_not_lifted_here(client, database, tenant, jane, session):
    async with database.sessionmaker() as db, db.begin():
        rows = suppression_rows(Keys(TEST_SECRET), tenant.id, [jane["first"]], SuppressionReason.OBJECTION_ART21)
        await ledger_repository.add_suppressions(db, rows)
    path = await link_to(database, tenant, jane, jane["first"])
    before = await event_count(session)
    page, answer = await post_opt_in(client, path, jane["first"], jane["newsletter"])
    assert opt_in_points(page) == []
    assert "steht auf der Sperrliste" in page
    assert answer.status_code == 403
    assert "Diese Seite kann das nicht aufheben" in answer.text
    assert await event_count(session) == before
    assert (await eligibility(client, tenant, jane["contact_id"]))["eligible"] is False


async def test_other_channels_explain_their_own_proof(client, database, tenant, jane):
    path = await link_to(database, tenant, jane, jane["first"])
    page = (await client.get(path)).text
    # a start word opts a number in without a new signup only with keyword-only opt-in (the Twilio webhook's rule):
    # without it the page sends the person to a signup, never to a text that would be answered "no signup"
    assert "NEWS" not in page
    assert "melden Sie sich mit dieser Nummer auf der Website von" in page
    async with database.sessionmaker() as db, db.begin():
        phone = {"sms_from": SENDER, "start_words": {"NEWS": "newsletter"}, "signup_url": "https://acme.example/sms"}
        await workspace_repository.save_settings(db, tenant.id, {"phone": phone})
    assert "melden Sie sich mit dieser Nummer dafür an: https://acme.example/sms" in (await client.get(path)).text
    async with database.sessionmaker() as db, db.begin():
        phone = {"sms_from": SENDER, "start_words": {"NEWS": "newsletter"}, "keyword_only_opt_in": True}
        await workspace_repository.save_settings(db, tenant.id, {"phone": phone})
    page = (await client.get(path)).text
    assert f"senden Sie von dieser Nummer NEWS per SMS an {SENDER}" in page
    english = (await client.get(path, params={"lang": "en"})).text
    assert f"text NEWS to {SENDER}" in english
    async with database.sessionmaker() as db, db.begin():
        phone = {"sms_from": SENDER, "keyword_only_opt_in": True, "default_purpose": "newsletter"}
        await workspace_repository.save_settings(db, tenant.id, {"phone": phone})
    assert f"text START to {SENDER}" in (await client.get(path, params={"lang": "en"})).text
    assert 'value="opt_in">\n<input type="hidden" name="point" value="' + str(jane["sms"].id) not in page
    async with database.sessionmaker() as db, db.begin():
        await workspace_repository.save_settings(db, tenant.id, {})
    unconfigured = (await client.get(path)).text
    assert "per SMS an" not in unconfigured, "no number configured: no instruction naming none"


async def test_opting_in_after_nothing_at_all_is_received_and_shown_so(client, database, tenant, jane):
    path = await link_to(database, tenant, jane, jane["first"])
    page = await client.get(path)
    everything = {"action": "withdraw_all", "form_token": form_token(page.text)}
    assert (await client.post(path, data=everything, headers=SAME_ORIGIN)).status_code == 200
    _, answer = await post_opt_in(client, path, jane["first"], jane["newsletter"])
    assert answer.status_code == 200, answer.text
    assert (await eligibility(client, tenant, jane["contact_id"]))["eligible"] is True
    first = answer.text.split("j***@example.com</span></h2>", 1)[1].split("</section>", 1)[0]
    assert "Sie erhalten dies." in first, "the fresh opt-in is the later word, as the send gate says"
    assert "Newsletter per E-Mail abbestellen" in first


async def test_the_consent_text_is_shown_beside_the_button_and_the_version_read_is_recorded(
    client, database, tenant, jane, session
):
    async with database.sessionmaker() as db, db.begin():
        english, _ = await purposes.create_notice(
            db, tenant.id, purpose_key="newsletter", channels=["email"], locale="en", text="Yes, <b>news</b> weekly."
        )
    path = await link_to(database, tenant, jane, jane["first"])
    german = (await client.get(path)).text
    consent_text = f'<p class="consent-text" id="consent-{jane["first"].id}-{jane["newsletter"].id}" lang="de">'
    assert consent_text + "Ja, Newsletter.</p>" in german
    assert f'aria-describedby="consent-{jane["first"].id}-{jane["newsletter"].id}"' in german
    page = (await client.get(path, params={"lang": "en"})).text
    assert "Yes, &lt;b&gt;news&lt;/b&gt; weekly." in page, "the page's language, and a tenant's text is only text"
    data = {
        "action": "opt_in",
        "form_token": form_token(page),
        "point": str(jane["first"].id),
        "purpose": str(jane["newsletter"].id),
        "notice": re.findall(r'name="notice" value="([^"]+)"', page)[0],
    }
    answer = await client.post(path, params={"lang": "en"}, data=data, headers=SAME_ORIGIN)
    assert answer.status_code == 200, answer.text
    event = await session.scalar(
        select(ConsentEvent).where(ConsentEvent.workspace_id == tenant.id).order_by(ConsentEvent.seq.desc()).limit(1)
    )
    assert (event.trigger, event.notice_id) == ("preference_opt_in", english.id), "the text the person read"


@pytest.mark.parametrize("notice", ["not-a-uuid", "other_purpose"])
async def test_a_form_naming_a_notice_not_of_this_purpose_is_refused(client, database, tenant, jane, session, notice):
    if notice == "other_purpose":
        async with database.sessionmaker() as db, db.begin():
            await purposes.create_purpose(db, tenant.id, "offers", "Offers", "marketing")
            other, _ = await purposes.create_notice(
                db, tenant.id, purpose_key="offers", channels=["email"], locale="de", text="Ja, Angebote."
            )
        notice = str(other.id)
    path = await link_to(database, tenant, jane, jane["first"])
    page = (await client.get(path)).text
    before = await event_count(session)
    data = {
        "action": "opt_in",
        "form_token": form_token(page),
        "point": str(jane["first"].id),
        "purpose": str(jane["newsletter"].id),
        "notice": notice,
    }
    answer = await client.post(path, data=data, headers=SAME_ORIGIN)
    assert answer.status_code == 403
    assert await event_count(session) == before


async def test_no_consent_text_no_button_and_a_forged_opt_in_is_refused(client, database, tenant, jane, session):
    """Hostile review: an opt-in without a text the person read is no informed consent."""
    async with database.sessionmaker() as db, db.begin():
        offers = await purposes.create_purpose(db, tenant.id, "offers", "Offers", "marketing")
    path = await link_to(database, tenant, jane, jane["first"])
    page = (await client.get(path)).text
    assert "Offers per E-Mail anmelden" not in page, "no notice for email: no button"
    assert "Newsletter per E-Mail wieder anmelden" in page, "withdrawn, with a notice: again"
    before = await event_count(session)
    data = {
        "action": "opt_in",
        "form_token": form_token(page),
        "point": str(jane["first"].id),
        "purpose": str(offers.id),
    }
    answer = await client.post(path, data=data, headers=SAME_ORIGIN)
    assert answer.status_code == 400
    assert await event_count(session) == before
