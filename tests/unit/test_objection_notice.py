"""UWG §7(3) No. 4: every mail to an existing customer carries the objection notice, or it is not sent.

The email channel composes it (de/en, with the unsubscribe page as the place to object) for deliveries on the basis
``uwg_7_3``; every other channel has no way to carry it, so the dispatcher blocks such a delivery there.
"""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import pytest

from app.channels import registry
from app.channels.base import Sending
from app.domain.gate import Reason
from app.domain.model import Channel, LegalBasis, PurposeKind
from app.lib.keys import Keys
from app.messages.dispatcher import OBJECTION_NOTICE_MISSING, notice_refusal
from app.settings import MailSettings, Settings
from app.workspaces.settings import WorkspaceSettings
from channel_providers.email import OBJECTION_NOTICE, Unsubscribe, compose

PAGE = "https://consent.example.com/u/tok"
NOTICE = {
    "de": "Sie können der Verwendung Ihrer E-Mail-Adresse für Werbung jederzeit widersprechen",
    "en": (
        "You can object to this use of your address at any time; it costs you nothing but the basic transmission rate"
    ),
}


def sending(tmp_path: Path, *, basis: LegalBasis | None, channel=Channel.EMAIL, locale="de") -> Sending:
    return Sending(
        channel=channel,
        delivery_id=uuid.UUID("01900000-0000-7000-8000-0000000000d1"),
        workspace_id=uuid.UUID("01900000-0000-7000-8000-000000000001"),
        settings=WorkspaceSettings(),
        service=Settings(data_dir=tmp_path, secret_key=b"r" * 32, mail=MailSettings(mail_from="S <s@consent.example>")),
        keys=Keys(b"r" * 32),
        point_id=uuid.UUID("01900000-0000-7000-8000-0000000000a1"),
        address="jane@example.com",
        details={},
        content={"subject": "Neu", "text": "Hallo"},
        purpose_id=uuid.UUID("01900000-0000-7000-8000-0000000000b1"),
        purpose_kind=PurposeKind.MARKETING,
        locale=locale,
        legal_basis=basis,
    )


@pytest.mark.parametrize("lang", ["de", "en"])
def test_the_notice_is_in_every_body_part_with_the_place_to_object(lang):
    unsubscribe = Unsubscribe(url=f"{PAGE}/one-click", page_url=PAGE, locale=lang, objection_notice=True)
    message = compose(
        sender="a@acme.example",
        to="jane@example.com",
        subject="Neu",
        text="Hallo",
        html="<html><body><p>Hallo</p></body></html>",
        unsubscribe=unsubscribe,
    )
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert NOTICE[lang] in text
    assert f"{NOTICE[lang].split(';')[0]}" in html
    assert OBJECTION_NOTICE[lang][0].format(url=PAGE) in text  # the notice names where to object
    assert f'href="{PAGE}"' in html


def test_mail_on_consent_carries_no_notice():
    message = compose(
        sender="a@acme.example",
        to="jane@example.com",
        subject="Neu",
        text="Hallo",
        unsubscribe=Unsubscribe(url=f"{PAGE}/one-click", page_url=PAGE, locale="en"),
    )
    assert NOTICE["en"] not in message.get_body(("plain",)).get_content()


def test_the_email_channel_composes_the_notice_for_the_existing_customer_basis_only(tmp_path):
    spec = registry.spec(Channel.EMAIL)
    assert spec.carries_objection_notice is not None
    on_basis = spec.compose(sending(tmp_path, basis=LegalBasis.UWG_7_3))
    assert spec.carries_objection_notice(on_basis)
    assert on_basis.extras["unsubscribe"].locale == "de"
    assert not spec.carries_objection_notice(spec.compose(sending(tmp_path, basis=None)))
    # a notice with nowhere to object is no notice
    broken = dataclasses.replace(
        on_basis, extras={"unsubscribe": dataclasses.replace(on_basis.extras["unsubscribe"], page_url="")}
    )
    assert not spec.carries_objection_notice(broken)


@pytest.mark.parametrize("channel", [c for c in Channel if c is not Channel.EMAIL])
def test_no_other_channel_can_carry_it(channel):
    assert registry.spec(channel).carries_objection_notice is None


def test_the_dispatcher_refuses_a_customers_delivery_without_the_notice_and_nothing_else(tmp_path):
    email, sms = registry.spec(Channel.EMAIL), registry.spec(Channel.SMS)
    with_notice = email.compose(sending(tmp_path, basis=LegalBasis.UWG_7_3))
    without = email.compose(sending(tmp_path, basis=None))
    text = sms.compose(sending(tmp_path, basis=LegalBasis.UWG_7_3, channel=Channel.SMS))
    assert notice_refusal(email, Reason.EXISTING_CUSTOMER, with_notice) is None
    assert notice_refusal(email, Reason.EXISTING_CUSTOMER, without) == OBJECTION_NOTICE_MISSING
    assert notice_refusal(sms, Reason.EXISTING_CUSTOMER, text) == OBJECTION_NOTICE_MISSING
    assert notice_refusal(email, Reason.OPTED_IN, without) is None  # consent needs no such notice
    assert notice_refusal(sms, Reason.OPTED_IN, text) is None
