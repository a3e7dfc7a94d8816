"""API types of workspaces and API keys."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from app.domain.model import Channel
from app.lib import outbound
from app.lib.auth import Scope
from app.lib.errors import InvalidInput
from app.workspaces.settings import (
    MAX_PREFERENCE_ORIGINS,
    ORIGIN_PATTERN,
    WEB_ORIGIN_DESCRIPTION,
    BrandingSettings,
    EmailSettings,
    PhoneSettings,
    RateLimit,
    SendWindow,
    default_windows,
)
from channel_providers.fcm import GOOGLE_TOKEN_URI

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, description="A label people recognise.")]


class ApiKeyCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A new API key for the caller's workspace."""

    name: Name
    scopes: Annotated[list[Scope], msgspec.Meta(min_length=1, max_length=6)]


class ApiKeyOut(msgspec.Struct, kw_only=True):
    """An API key as listed (never the secret)."""

    id: uuid.UUID
    name: str
    scopes: list[Scope]
    display_prefix: str
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut, kw_only=True):
    """A freshly created API key: the secret is shown this once and cannot be recovered."""

    secret: str


class WorkspaceOut(msgspec.Struct, kw_only=True):
    """A workspace."""

    id: uuid.UUID
    name: str
    created_at: datetime


class TwilioSettingsIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Twilio credentials of the workspace. ``auth_token`` is write-only: omit it to keep the stored one."""

    account_sid: Annotated[str, msgspec.Meta(pattern=r"^AC[0-9a-fA-F]{32}$")] | None = None
    auth_token: Annotated[str, msgspec.Meta(max_length=200, description="Empty string clears it.")] | None = None
    auth_token_set: bool | None = None
    """Read-only; accepted and ignored so that the answer of ``GET`` can be sent back as is."""


class TwilioSettingsOut(msgspec.Struct, kw_only=True):
    """Twilio credentials as shown: never the token itself."""

    account_sid: str | None
    auth_token_set: bool


class EmailSettingsIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The email channel's settings. ``webhook_secret`` is write-only: omit it to keep the stored one."""

    from_address: Annotated[str, msgspec.Meta(max_length=320, description="Overrides MAIL_FROM.")] | None = None
    reply_to: Annotated[str, msgspec.Meta(max_length=320)] | None = None
    confirmation_ttl_hours: Annotated[int, msgspec.Meta(ge=1, le=720)] = 72
    address_limit: RateLimit = msgspec.field(default_factory=lambda: EmailSettings().address_limit)
    ip_limit: RateLimit = msgspec.field(default_factory=lambda: EmailSettings().ip_limit)
    scanner_seconds: Annotated[int, msgspec.Meta(ge=0, le=3600)] = 10
    signup_url: Annotated[str, msgspec.Meta(max_length=2000, pattern="^https?://")] | None = None
    webhook_secret: (
        Annotated[
            str,
            msgspec.Meta(
                max_length=200,
                description="Key of the HMAC on bounce/complaint webhooks (>= 32 characters); empty clears it.",
            ),
        ]
        | None
    ) = None
    webhook_secret_set: bool | None = msgspec.field(default=None)
    """Read-only; accepted and ignored so that the answer of ``GET`` can be sent back as is."""


class EmailSettingsOut(msgspec.Struct, kw_only=True):
    """The email channel's settings as shown: never the webhook secret itself."""

    from_address: str | None
    reply_to: str | None
    confirmation_ttl_hours: int
    address_limit: RateLimit
    ip_limit: RateLimit
    scanner_seconds: int
    signup_url: str | None
    webhook_secret_set: bool


class WebPushSettingsIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Web push identity.

    ``vapid_private_key`` is write-only (base64url raw key or PEM); omit it to keep the current key (generated on
    first use of ``GET /v1/push/web/vapid-public-key``).
    """

    subject: Annotated[str, msgspec.Meta(max_length=320, pattern="^(mailto:|https://)")] | None = None
    vapid_private_key: Annotated[str, msgspec.Meta(max_length=1000)] | None = None
    vapid_public_key: str | None = None
    """Read-only; accepted and ignored so that the answer of ``GET`` can be sent back as is."""
    vapid_private_key_set: bool | None = None
    """Read-only; accepted and ignored."""


class WebPushSettingsOut(msgspec.Struct, kw_only=True):
    """Web push identity as shown: the public key, never the private one."""

    subject: str | None
    vapid_public_key: str | None
    vapid_private_key_set: bool


class AppPushSettingsIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """App push: ``fcm_service_account`` is the Firebase service account key file's JSON (write-only)."""

    fcm_service_account: Annotated[str, msgspec.Meta(max_length=20_000)] | None = None
    fcm_project_id: str | None = None
    """Read-only; accepted and ignored."""
    fcm_service_account_set: bool | None = None
    """Read-only; accepted and ignored."""
    apns_team_id: Annotated[str, msgspec.Meta(pattern=r"^[A-Z0-9]{10}$")] | None = None
    apns_key_id: Annotated[str, msgspec.Meta(pattern=r"^[A-Z0-9]{10}$")] | None = None
    apns_topic: Annotated[str, msgspec.Meta(max_length=200, description="The app's bundle id.")] | None = None
    apns_sandbox: bool = False
    apns_private_key: Annotated[str, msgspec.Meta(max_length=5000, description="The .p8 key (write-only).")] | None = (
        None
    )
    apns_private_key_set: bool | None = None
    """Read-only; accepted and ignored."""


class AppPushSettingsOut(msgspec.Struct, kw_only=True):
    """App push as shown: the project, never the key."""

    fcm_project_id: str | None
    fcm_service_account_set: bool
    apns_team_id: str | None
    apns_key_id: str | None
    apns_topic: str | None
    apns_sandbox: bool
    apns_private_key_set: bool


class PrintHouseSettingsIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The print house's job endpoint; ``token`` is write-only (omit to keep, empty string to clear).

    ``url`` is https to a public host, without user name or password: a host that is or resolves to a private,
    loopback or other non-public address is refused (``422 print_house_url_not_allowed``; plain http and private
    hosts only where the operator allows the private network, ``CONSENT_WEBHOOKS_ALLOW_PRIVATE``).
    """

    url: Annotated[str, msgspec.Meta(max_length=2000, pattern=r"^https?://")] | None = None
    token: Annotated[str, msgspec.Meta(max_length=2000)] | None = None
    token_set: bool | None = None
    """Read-only; accepted and ignored."""


class PrintHouseSettingsOut(msgspec.Struct, kw_only=True):
    """The print house as shown: never the token."""

    url: str | None
    token_set: bool


#: ``preference_origins`` as given: checked in ``__post_init__`` to answer in words (then stored as
#: :data:`PreferenceOrigins`).
GivenOrigins = Annotated[
    list[Annotated[str, msgspec.Meta(max_length=300, description=WEB_ORIGIN_DESCRIPTION)]],
    msgspec.Meta(max_length=MAX_PREFERENCE_ORIGINS),
]


class WorkspaceSettingsIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The whole settings object (unset fields take their defaults)."""

    brand: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    branding: BrandingSettings = msgspec.field(default_factory=BrandingSettings)
    """The hosted pages' logo (https) and colours (``#rrggbb``; the primary one at least 4.5:1 against white)."""
    locale: Annotated[str, msgspec.Meta(pattern=r"^[a-z]{2,3}$")] = "de"
    default_region: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}$")] = "DE"
    timezone: Annotated[str, msgspec.Meta(max_length=64)] = "Europe/Berlin"
    phone: PhoneSettings = msgspec.field(default_factory=PhoneSettings)
    twilio: TwilioSettingsIn = msgspec.field(default_factory=TwilioSettingsIn)
    email: EmailSettingsIn = msgspec.field(default_factory=EmailSettingsIn)
    web_push: WebPushSettingsIn = msgspec.field(default_factory=WebPushSettingsIn)
    app_push: AppPushSettingsIn = msgspec.field(default_factory=AppPushSettingsIn)
    print_house: PrintHouseSettingsIn = msgspec.field(default_factory=PrintHouseSettingsIn)
    send_windows: dict[Channel, SendWindow] = msgspec.field(default_factory=default_windows)
    erasure_review: bool = False
    """Whether a "delete me" on the preference centre waits for an ``admin`` key (``/v1/erasure-requests``, due
    within one month) instead of being executed at once."""
    preference_origins: GivenOrigins = msgspec.field(default_factory=list)
    """The brand's https origins (at most 20) whose pages may call ``/p/{token}/preferences`` from the browser."""
    tracking_purpose: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    """The key of the purpose standing for tracking consent: only its consenting contacts get tracked links, the
    open pixel and push event tokens (TTDSG §25); unset, nobody is tracked and opens and clicks stay unknown."""
    tracking_pixel: bool = False
    """Whether tracked HTML mail carries a 1x1 open pixel."""

    def __post_init__(self) -> None:
        """Say in words what an origin is (msgspec would answer with the whole regular expression)."""
        for origin in self.preference_origins:
            if not re.fullmatch(ORIGIN_PATTERN, origin):
                raise ValueError(
                    f"preference_origins: {origin[:100]!r} is not an https origin: scheme and host name, an optional "
                    "port, nothing after it (no path, not even a trailing slash), e.g. https://shop.example"
                )


class WorkspaceSettingsOut(msgspec.Struct, kw_only=True):
    """The settings in force."""

    brand: str | None
    branding: BrandingSettings
    locale: str
    default_region: str
    timezone: str
    phone: PhoneSettings
    twilio: TwilioSettingsOut
    email: EmailSettingsOut
    web_push: WebPushSettingsOut
    app_push: AppPushSettingsOut
    print_house: PrintHouseSettingsOut
    send_windows: dict[Channel, SendWindow]
    erasure_review: bool
    preference_origins: list[str]
    tracking_purpose: str | None = None
    tracking_pixel: bool = False


_RESOLVE_SECONDS = 3.0


async def check_outbound_urls(settings: WorkspaceSettingsIn, *, allow_private: bool) -> None:
    """Refuse the URLs the service would request that the outbound guard would refuse.

    The print house URL (form and every address of its host; a name that does not resolve now is taken, the guard
    checks again at every send), and the FCM service account's ``token_uri``: Google's only, unless the operator
    allows the private network.
    """
    _check_fcm_token_uri(settings.app_push.fcm_service_account, allow_private=allow_private)
    url = settings.print_house.url
    if not url:
        return
    try:
        async with asyncio.timeout(_RESOLVE_SECONDS):
            await outbound.check_destination(url, allow_private=allow_private)
    except (outbound.HostUnresolved, TimeoutError):
        return
    except outbound.OutboundRefused as exc:
        raise InvalidInput(f"print_house.url is not allowed: {exc}", code="print_house_url_not_allowed") from None


def _check_fcm_token_uri(account: str | None, *, allow_private: bool) -> None:
    if not account or allow_private:
        return
    try:
        token_uri = json.loads(account).get("token_uri")
    except (ValueError, AttributeError):
        return  # not a service account: the settings service says so
    if token_uri is not None and token_uri != GOOGLE_TOKEN_URI:
        raise InvalidInput(
            f"app_push.fcm_service_account's token_uri must be {GOOGLE_TOKEN_URI}.", code="fcm_token_uri_not_allowed"
        )


class WorkspaceCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A new workspace (operator): its name, optionally its settings and the operator's mail domains."""

    name: Name
    settings: WorkspaceSettingsIn | None = None
    """As ``PUT /v1/workspace/settings`` takes them (the same checks); omitted: the defaults."""
    mail_domains: (
        Annotated[
            list[Annotated[str, msgspec.Meta(min_length=1, max_length=253)]],
            msgspec.Meta(max_length=100, description="Domains email.from_address may use (the operator's list)."),
        ]
        | None
    ) = None
    admin_key_name: Name = "admin"


class OperatorWorkspaceOut(msgspec.Struct, kw_only=True):
    """A workspace as the operator sees it: no settings, no data."""

    id: uuid.UUID
    name: str
    created_at: datetime
    state: Annotated[str, msgspec.Meta(description="`active`, or `tombstone`: deleted, its suppressions kept")]
    mail_domains: list[str] | None
    exported_at: datetime | None
    deleted_at: datetime | None


class WorkspaceCreated(OperatorWorkspaceOut, kw_only=True):
    """A new workspace and its first admin key (the secret is in this answer only)."""

    admin_key: ApiKeyCreated


class WorkspaceDeletedOut(msgspec.Struct, kw_only=True):
    """What a workspace deletion did (answered again by every later DELETE of the same id)."""

    workspace_id: uuid.UUID
    state: Annotated[str, msgspec.Meta(description="`deleted` (nothing left but this record) or `tombstone`")]
    deleted_at: datetime
    exported_at: datetime | None
    forced: bool
    deleted: dict[str, int]
    """Rows deleted per table (by this request; empty when repeated)."""
    kept: dict[str, int]
    """Rows kept per table: the tombstone's suppressions and the purposes they name."""
    outbox_files: int = 0
    """Files of the workspace removed from the outbox folder (dev outbox, print batches)."""
