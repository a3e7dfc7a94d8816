"""Every channel's spec, looked up by channel. Adding a channel: its module, and one line in :data:`SPECS`."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from app.channels.app_push import SPEC as APP_PUSH
from app.channels.base import ChannelSpec
from app.channels.email import SPEC as EMAIL
from app.channels.print import SPEC as PRINT
from app.channels.sms import SPEC as SMS
from app.channels.web_push import SPEC as WEB_PUSH
from app.channels.whatsapp import SPEC as WHATSAPP
from app.domain.model import Channel

#: One spec per channel (a test checks that every :class:`Channel` has exactly one).
SPECS: tuple[ChannelSpec, ...] = (EMAIL, SMS, WHATSAPP, APP_PUSH, WEB_PUSH, PRINT)

_BY_CHANNEL: Mapping[Channel, ChannelSpec] = MappingProxyType({spec.channel: spec for spec in SPECS})

#: Every provider delivery-report status some channel acts on (any other report is ignored without a lookup).
REPORT_STATUSES: frozenset[str] = frozenset(status for spec in SPECS for status in spec.reports)


def spec(channel: Channel | str) -> ChannelSpec:
    """The spec of ``channel`` (a :class:`Channel` or its value, as stored)."""
    return _BY_CHANNEL[Channel(channel)]
