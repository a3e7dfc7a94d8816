"""The channel registry: one spec per channel, and what each channel composes, builds and makes of feedback."""

from __future__ import annotations

import ast
import inspect
import uuid
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from app.channels import registry
from app.channels.adapters import Adapters
from app.channels.base import Effect, Report, Sending
from app.domain.model import Channel, PurposeKind, Reachability, Trigger
from app.lib.keys import Keys
from app.messages import dispatcher
from app.settings import MailSettings, Settings, TwilioDefaults
from app.workspaces.service import PRINT_HOUSE_TOKEN, VAPID_KEY, sealing_context
from app.workspaces.settings import (
    EmailSettings,
    PhoneSettings,
    PrintHouseSettings,
    WebPushSettings,
    WorkspaceSettings,
)
from app.workspaces.settings import TwilioSettings as WorkspaceTwilio
from channel_providers.base import Outbound, Outcome
from channel_providers.email import EmailAdapter, OutboxSender
from channel_providers.files import FileDropAdapter, PrintBatchAdapter, PrintHouseAdapter
from channel_providers.twilio import TwilioAdapter
from channel_providers.webpush import WebPushAdapter

SECRET = b"r" * 32
WORKSPACE = uuid.UUID("01900000-0000-7000-8000-000000000001")
ACCOUNT = "AC" + "12" * 16


def service(tmp_path: Path, **changes) -> Settings:
    return Settings(
        data_dir=tmp_path,
        secret_key=SECRET,
        mail=MailSettings(mail_from="Service <service@consent.example>"),
        **changes,
    )


def sending(
    channel: Channel, tmp_path: Path, *, settings=None, kind=PurposeKind.MARKETING, locale=None, **service_changes
):
    return Sending(
        channel=channel,
        delivery_id=uuid.UUID("01900000-0000-7000-8000-0000000000d1"),
        workspace_id=WORKSPACE,
        settings=settings or WorkspaceSettings(),
        service=service(tmp_path, **service_changes),
        keys=Keys(SECRET),
        point_id=uuid.UUID("01900000-0000-7000-8000-0000000000a1"),
        address="the-address",
        details={"p256dh": "k", "auth": "a"},
        content={"text": "Hallo"},
        purpose_id=uuid.UUID("01900000-0000-7000-8000-0000000000b1"),
        purpose_kind=kind,
        locale=locale,
    )


def test_every_channel_has_exactly_one_spec():
    counts = Counter(spec.channel for spec in registry.SPECS)
    assert counts == dict.fromkeys(Channel, 1)
    assert all(registry.spec(channel).channel is channel for channel in Channel)
    assert registry.spec("sms") is registry.spec(Channel.SMS), "the stored value finds the spec too"


@pytest.mark.parametrize("channel", list(Channel))
def test_every_request_carries_the_delivery_address_content_and_details(channel, tmp_path):
    outbound = registry.spec(channel).compose(sending(channel, tmp_path))
    assert outbound.id == "01900000-0000-7000-8000-0000000000d1"
    assert outbound.channel == channel.value
    assert outbound.to == "the-address"
    assert outbound.content == {"text": "Hallo"}
    assert outbound.details == {"p256dh": "k", "auth": "a"}


def test_marketing_mail_comes_from_the_workspace_sender_with_unsubscribe_urls_in_the_contacts_language(tmp_path):
    settings = WorkspaceSettings(locale="de", email=EmailSettings(from_address="Acme <news@acme.example>"))
    outbound = registry.spec(Channel.EMAIL).compose(
        sending(Channel.EMAIL, tmp_path, settings=settings, locale="en-GB", public_base_url="https://c.example")
    )
    assert outbound.sender == "Acme <news@acme.example>"
    unsubscribe = outbound.extras["unsubscribe"]
    assert unsubscribe.url.startswith("https://c.example/u/")
    assert unsubscribe.url == f"{unsubscribe.page_url}/one-click"
    assert unsubscribe.locale == "en"


def test_mail_without_a_workspace_sender_uses_the_services_in_the_workspace_language(tmp_path):
    outbound = registry.spec(Channel.EMAIL).compose(
        sending(Channel.EMAIL, tmp_path, settings=WorkspaceSettings(locale="de"))
    )
    assert outbound.sender == "Service <service@consent.example>"
    assert outbound.extras["unsubscribe"].locale == "de"


def test_transactional_mail_has_no_unsubscribe(tmp_path):
    outbound = registry.spec(Channel.EMAIL).compose(sending(Channel.EMAIL, tmp_path, kind=PurposeKind.TRANSACTIONAL))
    assert "unsubscribe" not in outbound.extras


@pytest.mark.parametrize(("channel", "sender"), [(Channel.SMS, "+4930111"), (Channel.WHATSAPP, "+4930222")])
def test_sms_and_whatsapp_come_from_their_own_sender_with_twilios_status_callback(channel, sender, tmp_path):
    settings = WorkspaceSettings(phone=PhoneSettings(sms_from="+4930111", whatsapp_from="+4930222"))
    known = registry.spec(channel).compose(
        sending(
            channel, tmp_path, settings=settings, public_base_url="https://c.example", public_base_url_configured=True
        )
    )
    assert known.sender == sender
    assert known.extras == {
        "status_callback": f"https://c.example/webhooks/twilio/{WORKSPACE}/status"
        "?delivery=01900000-0000-7000-8000-0000000000d1"
    }, "the delivery is named, so that a report can settle an unknown outcome"
    unknown = registry.spec(channel).compose(sending(channel, tmp_path, settings=settings))
    assert unknown.extras == {}, "no callback to a URL the world may not reach"


def test_web_push_is_signed_with_the_workspaces_vapid_key(tmp_path):
    sealed = Keys(SECRET).seal("private-key", sealing_context(WORKSPACE, VAPID_KEY))
    settings = WorkspaceSettings(
        web_push=WebPushSettings(subject="mailto:push@acme.example", vapid_private_key_sealed=sealed)
    )
    outbound = registry.spec(Channel.WEB_PUSH).compose(sending(Channel.WEB_PUSH, tmp_path, settings=settings))
    assert outbound.extras == {"vapid_private_key": "private-key", "vapid_subject": "mailto:push@acme.example"}
    assert outbound.sender is None


@pytest.mark.parametrize("channel", [Channel.APP_PUSH, Channel.PRINT])
def test_app_push_and_print_send_the_content_alone(channel, tmp_path):
    outbound = registry.spec(channel).compose(sending(channel, tmp_path))
    assert (outbound.sender, outbound.extras) == (None, {})


# Twilio: 21610 is the person's STOP at Twilio; the codes of a number that cannot receive (``GONE``) leave consent
_TWILIO = {
    Outcome.BLOCKED: Effect(Reachability.PROVIDER_BLOCKED, withdraw=Trigger.PROVIDER_BLOCK),
    Outcome.GONE: Effect(Reachability.UNDELIVERABLE),
}
EXPECTED_FEEDBACK = {
    Channel.EMAIL: {Outcome.PERMANENT: Effect(Reachability.UNDELIVERABLE)},
    Channel.SMS: _TWILIO,
    Channel.WHATSAPP: _TWILIO,
    Channel.APP_PUSH: {Outcome.GONE: Effect(Reachability.EXPIRED, withdraw=Trigger.PROVIDER_GONE)},
    Channel.WEB_PUSH: {Outcome.GONE: Effect(Reachability.EXPIRED, withdraw=Trigger.PROVIDER_GONE)},
    Channel.PRINT: {},
}


@pytest.mark.parametrize("channel", list(Channel))
def test_what_a_failed_send_says_about_the_address(channel):
    assert dict(registry.spec(channel).feedback) == EXPECTED_FEEDBACK[channel]


@pytest.mark.parametrize("channel", [Channel.SMS, Channel.WHATSAPP])
def test_twilio_delivery_reports_settle_sms_and_whatsapp(channel):
    assert dict(registry.spec(channel).reports) == {
        "delivered": Report.DELIVERED,
        "read": Report.DELIVERED,
        "undelivered": Report.FAILED,
        "failed": Report.FAILED,
    }


def test_only_twilios_channels_take_delivery_reports():
    assert {spec.channel for spec in registry.SPECS if spec.reports} == {Channel.SMS, Channel.WHATSAPP}
    assert sorted(registry.REPORT_STATUSES) == ["delivered", "failed", "read", "undelivered"]
    assert "sent" not in registry.REPORT_STATUSES, "an intermediate status settles nothing"


async def test_without_accounts_every_channel_writes_to_the_outbox(tmp_path):
    adapters = Adapters(service(tmp_path), Keys(SECRET), OutboxSender(tmp_path / "mail"))
    try:
        built = {c: registry.spec(c).adapter(adapters, WORKSPACE, WorkspaceSettings()) for c in Channel}
    finally:
        await adapters.aclose()
    assert isinstance(built[Channel.EMAIL], EmailAdapter)
    for channel in (Channel.SMS, Channel.WHATSAPP, Channel.APP_PUSH, Channel.WEB_PUSH):
        assert isinstance(built[channel], FileDropAdapter)
        assert built[channel].folder == tmp_path / "outbox" / str(WORKSPACE) / channel.value, "the workspace's own"
    assert isinstance(built[Channel.PRINT], PrintBatchAdapter)
    assert built[Channel.PRINT].folder == tmp_path / "outbox" / str(WORKSPACE) / "print"


async def test_two_workspaces_never_share_an_outbox_or_a_print_batch(tmp_path):
    adapters = Adapters(service(tmp_path), Keys(SECRET), OutboxSender(tmp_path / "mail"))
    other = uuid.uuid4()
    try:
        for channel in (Channel.SMS, Channel.PRINT):
            mine = registry.spec(channel).adapter(adapters, WORKSPACE, WorkspaceSettings())
            theirs = registry.spec(channel).adapter(adapters, other, WorkspaceSettings())
            assert mine.folder != theirs.folder  # type: ignore[attr-defined]
    finally:
        await adapters.aclose()


async def test_in_production_a_channel_without_a_provider_fails_and_says_why(tmp_path):
    settings = msgspec.structs.replace(service(tmp_path), dev_outbox=False)
    adapters = Adapters(settings, Keys(SECRET), OutboxSender(tmp_path / "mail"))
    try:
        for channel in (Channel.SMS, Channel.WHATSAPP, Channel.APP_PUSH, Channel.WEB_PUSH):
            result = (
                await registry.spec(channel)
                .adapter(adapters, WORKSPACE, WorkspaceSettings())
                .send(Outbound(id="d-1", channel=channel.value, to="x", content={}, details={}))
            )
            assert (result.outcome, result.error_code) == (Outcome.PERMANENT, "provider_not_configured")
            assert channel.value in result.detail
        assert not (tmp_path / "outbox").exists(), "nothing written, nothing reported as sent"
        # the print batch is a production mechanism (a print house collects it), not a dev stand-in
        assert isinstance(
            registry.spec(Channel.PRINT).adapter(adapters, WORKSPACE, WorkspaceSettings()), PrintBatchAdapter
        )
    finally:
        await adapters.aclose()


async def test_sms_and_whatsapp_share_one_twilio_client_per_account(tmp_path):
    settings = service(tmp_path, twilio=TwilioDefaults(account_sid=ACCOUNT, auth_token="t" * 32))
    adapters = Adapters(settings, Keys(SECRET), OutboxSender(tmp_path / "mail"))
    own = Keys(SECRET).seal("o" * 32, sealing_context(WORKSPACE))
    workspace = WorkspaceSettings(twilio=WorkspaceTwilio(account_sid="AC" + "34" * 16, auth_token_sealed=own))
    try:
        sms = registry.spec(Channel.SMS).adapter(adapters, WORKSPACE, WorkspaceSettings())
        whatsapp = registry.spec(Channel.WHATSAPP).adapter(adapters, WORKSPACE, WorkspaceSettings())
        separate = registry.spec(Channel.SMS).adapter(adapters, WORKSPACE, workspace)
    finally:
        await adapters.aclose()
    assert isinstance(sms, TwilioAdapter)
    assert whatsapp is sms
    assert isinstance(separate, TwilioAdapter)
    assert separate is not sms, "a workspace with its own account has its own client"


async def test_web_push_and_the_print_house_once_configured(tmp_path):
    adapters = Adapters(service(tmp_path), Keys(SECRET), OutboxSender(tmp_path / "mail"))
    token = Keys(SECRET).seal("print-secret", sealing_context(WORKSPACE, PRINT_HOUSE_TOKEN))
    settings = WorkspaceSettings(
        web_push=WebPushSettings(subject="mailto:push@acme.example"),
        print_house=PrintHouseSettings(url="https://print.example/jobs", token_sealed=token),
    )
    try:
        push = registry.spec(Channel.WEB_PUSH).adapter(adapters, WORKSPACE, settings)
        house = registry.spec(Channel.PRINT).adapter(adapters, WORKSPACE, settings)
    finally:
        await adapters.aclose()
    assert isinstance(push, WebPushAdapter)
    assert isinstance(house, PrintHouseAdapter)
    assert (house.url, house.token) == ("https://print.example/jobs", "print-secret")


def test_the_dispatcher_names_no_channel():
    tree = ast.parse(inspect.getsource(dispatcher))
    members = [
        n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and getattr(n.value, "id", "") == "Channel"
    ]
    values = {c.value for c in Channel}
    literals = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in values]
    matches = [n for n in ast.walk(tree) if isinstance(n, ast.Match)]
    assert (members, literals, matches) == ([], [], []), "per-channel behaviour belongs in app/channels"
