"""Attacks on the preference centre found by the hostile review (session of 2026-12-04), each refused now.

- A public form key names a customer's external id beside the attacker's own address: that address is
  unverified (a form attached it), so `/p` mails it no link and `/p/via` from its confirmation mail mints none.
- A forwarded marketing mail's footer (`/p/via/{unsubscribe token}`) opens the page, but not the person's data:
  the download and "delete me" need a link of the person's own (mailed on request to a verified address, or
  issued by the brand).
"""

# ruff: noqa: F811  # fixtures imported from the other preference-centre tests are parameters of the tests

from __future__ import annotations

import re

from sqlalchemy import func, select

from app.emails.tokens import UnsubscribeTarget, sign_unsubscribe
from app.ledger.models import Contact
from app.lib.keys import Keys
from tests.conftest import TEST_SECRET
from tests.integration.test_preference_centre import form_token
from tests.integration.test_preference_mydata import jane  # noqa: F401  # fixture
from tests.integration.test_preference_request import (  # noqa: F401  # fixtures
    BASE,
    PREFERENCE_LINK,
    ask,
    inbox,
    settings,
)
from tests.integration.test_verified_addresses import (  # noqa: F401  # fixtures
    ATTACKER,
    CUSTOMER_PHONE,
    form_signup,
    shop,
)

KEYS = Keys(TEST_SECRET)


async def test_an_address_a_form_attached_to_a_customer_gets_no_link_by_request(client, tenant, shop, inbox):
    out = await form_signup(client, shop)
    assert out["contact_id"] == str(shop["customer"].contact_id), "the form did attach it (the premise)"
    before = len(inbox.messages)
    answer = await ask(client, tenant.id, ATTACKER)
    assert answer.status_code == 200, "the same neutral answer"
    links = [m for m in inbox.messages[before:] if PREFERENCE_LINK.search(m.get_body(("plain",)).get_content())]
    assert links == [], "no preference link for an address nobody proved is the customer's"


async def test_the_confirmation_mail_of_such_an_address_mints_no_link(client, shop, inbox, session):
    await form_signup(client, shop)
    [confirm] = [m for m in inbox.messages if m["To"] == ATTACKER]
    body = confirm.get_body(("plain",)).get_content()
    path = re.search(r"https://consent\.example\.com(/c/[A-Za-z0-9_\-]+)", body).group(1)
    page = await client.get(path)
    via = re.search(r'href="(/p/via/[^"]+)"', page.text)
    if via is not None:  # the page may offer it; following it must not open the customer's preferences
        opened = await client.post(via.group(1))
        assert opened.status_code == 403
        assert "location" not in opened.headers
    customer = await session.scalar(
        select(func.count()).select_from(Contact).where(Contact.id == shop["customer"].contact_id)
    )
    assert customer == 1


async def test_a_forwarded_mail_opens_the_page_but_not_the_persons_data(client, jane, session):
    token = sign_unsubscribe(KEYS.unsubscribe, UnsubscribeTarget(jane["email"].id, jane["newsletter"].id))
    opened = await client.post(f"/p/via/{token}")
    assert opened.status_code == 303, opened.text
    path = opened.headers["location"]
    page = await client.get(path)
    assert page.status_code == 200
    assert "/export" not in page.text, "no download or erase form on a page opened from a mail's footer"
    token_of_page = form_token(page.text)
    exported = await client.post(f"{path}/export", data={"form_token": token_of_page})
    assert exported.status_code == 403
    assert "+4915112345678" not in exported.text
    erased = await client.post(f"{path}/erase", data={"form_token": token_of_page, "confirm": "yes"})
    assert erased.status_code == 403
    left = await session.scalar(select(func.count()).select_from(Contact).where(Contact.id == jane["contact_id"]))
    assert left == 1, "nothing erased"


async def test_a_link_mailed_on_request_to_a_verified_address_opens_the_data(client, tenant, jane, inbox):
    answer = await ask(client, tenant.id, jane["email"].value)
    assert answer.status_code == 200
    [mail] = [m for m in inbox.messages if PREFERENCE_LINK.search(m.get_body(("plain",)).get_content())]
    path = PREFERENCE_LINK.findall(mail.get_body(("plain",)).get_content())[0].removeprefix(BASE)
    page = await client.get(path)
    exported = await client.post(f"{path}/export", data={"form_token": form_token(page.text)})
    assert exported.status_code == 200, exported.text


def test_the_per_ip_limit_counts_an_ipv6_network_not_each_address():
    """Hostile review: 30 requests from one /64 were 30 different clients."""
    from types import SimpleNamespace  # noqa: PLC0415

    from app.preferences.request import _client_ip  # noqa: PLC0415

    def ip(host):
        return _client_ip(SimpleNamespace(client=SimpleNamespace(host=host)))  # type: ignore[arg-type]

    assert ip("2001:db8:1:2::1") == ip("2001:db8:1:2:ffff::1e") == "2001:db8:1:2::/64"
    assert ip("2001:db8:1:3::1") != ip("2001:db8:1:2::1")
    assert ip("198.51.100.7") == "198.51.100.7"
    assert ip("::ffff:198.51.100.7") == "198.51.100.7"


def test_with_a_public_url_the_host_header_does_not_make_an_origin_ours():
    """Hostile review: a rebound DNS name sends our Host header from another site's page."""
    from types import SimpleNamespace  # noqa: PLC0415

    import msgspec  # noqa: PLC0415

    from app.preferences.controllers import same_origin  # noqa: PLC0415
    from app.settings import Settings  # noqa: PLC0415

    def post(origin, host):
        return SimpleNamespace(headers={"origin": origin, "host": host})

    configured = Settings(public_base_url="https://consent.example.com", public_base_url_configured=True)
    assert same_origin(post("https://consent.example.com", "consent.example.com"), configured)  # type: ignore[arg-type]
    assert not same_origin(post("http://rebound.example", "rebound.example"), configured)  # type: ignore[arg-type]
    development = msgspec.structs.replace(configured, public_base_url_configured=False)
    assert same_origin(post("http://127.0.0.1:8000", "127.0.0.1:8000"), development)  # type: ignore[arg-type]
