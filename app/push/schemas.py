"""API types of app push installations and web push subscriptions."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

import msgspec

from app.domain.model import Reachability, State
from app.ledger.schemas import ContactRef, Evidence

PurposeKey = Annotated[str, msgspec.Meta(min_length=1, max_length=63)]


class AppInstallationIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What the app (or its backend) reports at install, at each start, and when the permission changes.

    The OS permission alone is not consent: for `granted` and `provisional` the notice the app showed is
    required (`notice_id`, or `notice_ids` with one per purpose). The list of purposes is the whole state:
    a purpose opted in before and missing now is withdrawn.
    """

    contact: ContactRef | None = None
    platform: Literal["ios", "android", "web"]
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=4096, description="FCM or APNs device token.")]
    permission: Literal["granted", "denied", "provisional"]
    purposes: Annotated[list[PurposeKey], msgspec.Meta(max_length=50)] = msgspec.field(default_factory=list)
    notice_id: uuid.UUID | None = None
    notice_ids: Annotated[list[uuid.UUID], msgspec.Meta(max_length=50)] = msgspec.field(default_factory=list)
    app_version: Annotated[str, msgspec.Meta(max_length=50)] | None = None
    os_version: Annotated[str, msgspec.Meta(max_length=50)] | None = None
    evidence: Evidence = msgspec.field(default_factory=Evidence)


class PushKeys(msgspec.Struct, forbid_unknown_fields=True):
    """The subscription's keys, base64url as the browser gives them."""

    p256dh: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    auth: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


class PushSubscriptionJSON(msgspec.Struct, forbid_unknown_fields=True, rename={"expiration_time": "expirationTime"}):
    """The browser's ``PushSubscription.toJSON()``."""

    endpoint: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
    keys: PushKeys
    expiration_time: int | float | None = None


class WebSubscriptionIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A subscription made after the person allowed notifications with the site's button."""

    contact: ContactRef | None = None
    subscription: PushSubscriptionJSON
    purposes: Annotated[list[PurposeKey], msgspec.Meta(min_length=1, max_length=50)]
    notice_id: uuid.UUID | None = None
    notice_ids: Annotated[list[uuid.UUID], msgspec.Meta(max_length=50)] = msgspec.field(default_factory=list)
    evidence: Evidence = msgspec.field(default_factory=Evidence)


class WebSubscriptionDelete(msgspec.Struct, forbid_unknown_fields=True):
    """The subscription the browser gave up."""

    endpoint: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]


class PurposeState(msgspec.Struct, kw_only=True):
    """One purpose's consent on the address."""

    purpose: str | None
    state: State


class PushPointOut(msgspec.Struct, kw_only=True):
    """The installation or subscription as recorded."""

    contact_id: uuid.UUID
    contact_point_id: uuid.UUID
    reachability: Reachability
    consents: list[PurposeState]


class VapidKeyOut(msgspec.Struct, kw_only=True):
    """The workspace's VAPID public key: the `applicationServerKey` of `pushManager.subscribe()`."""

    public_key: str
