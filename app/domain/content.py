"""What a message may carry on each channel: SMS segments, WhatsApp text or template, push payload sizes.

Pure rules; the API validates content with them before anything is queued, so a send never fails later for a
reason that was visible at the start.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.domain.model import Channel

# GSM 03.38 basic character set and its extension table (each extension character costs two septets).
_GSM_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿"
    "abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = set("^{}\\[~]|€\f")
MAX_SMS_SEGMENTS = 10
WHATSAPP_TEXT_LIMIT = 4096
PUSH_PAYLOAD_LIMIT = 4096  # APNs and FCM both cap the notification payload at 4 KB
WEB_PUSH_PAYLOAD_LIMIT = 3993  # 4096-byte record minus RFC 8291 header (86) and padding/tag (17)
_TEMPLATE_SID = re.compile(r"^HX[0-9a-fA-F]{32}$")


class ContentError(ValueError):
    """The content cannot be sent on the channel; ``code`` names why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Segments:
    """How an SMS text is split: encoding and number of parts."""

    encoding: str
    units: int
    count: int


def sms_segments(text: str) -> Segments:
    """GSM-7 when every character is in the GSM alphabet (160 per part, 153 when split), else UCS-2 (70/67).

    UCS-2 counts UTF-16 code units, so an emoji costs two.
    """
    if all(ch in _GSM_BASIC or ch in _GSM_EXTENDED for ch in text):
        units = sum(2 if ch in _GSM_EXTENDED else 1 for ch in text)
        single, multi, encoding = 160, 153, "GSM-7"
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, multi, encoding = 70, 67, "UCS-2"
    count = 1 if units <= single else -(-units // multi)
    return Segments(encoding, units, count)


def check(channel: Channel, content: dict[str, Any]) -> None:
    """Raise :class:`ContentError` if ``content`` cannot be sent on ``channel``."""
    checker = _CHECKS.get(channel)
    if checker is not None:
        checker(content)


def _check_sms(content: dict[str, Any]) -> None:
    segments = sms_segments(content["text"])
    if segments.count > MAX_SMS_SEGMENTS:
        raise ContentError(
            "sms_too_long",
            f"The SMS text needs {segments.count} segments ({segments.encoding}); at most {MAX_SMS_SEGMENTS}.",
        )


def _check_whatsapp(content: dict[str, Any]) -> None:
    if bool(content.get("text")) == bool(content.get("template_sid")):
        raise ContentError("whatsapp_content", "WhatsApp content needs either 'text' or 'template_sid'.")
    if content.get("template_sid") and not _TEMPLATE_SID.match(content["template_sid"]):
        raise ContentError("whatsapp_content", "template_sid is a Twilio Content SID (HX + 32 hex digits).")
    if content.get("text") and len(content["text"]) > WHATSAPP_TEXT_LIMIT:
        raise ContentError("whatsapp_content", f"A WhatsApp text has at most {WHATSAPP_TEXT_LIMIT} characters.")


def _payload_limit(limit: int) -> Callable[[dict[str, Any]], None]:
    def check_size(content: dict[str, Any]) -> None:
        size = len(json.dumps(content, ensure_ascii=False).encode())
        if size > limit:
            raise ContentError("push_payload_too_large", f"The push payload is {size} bytes; at most {limit}.")

    return check_size


_CHECKS: dict[Channel, Callable[[dict[str, Any]], None]] = {
    Channel.SMS: _check_sms,
    Channel.WHATSAPP: _check_whatsapp,
    Channel.APP_PUSH: _payload_limit(PUSH_PAYLOAD_LIMIT),
    Channel.WEB_PUSH: _payload_limit(WEB_PUSH_PAYLOAD_LIMIT),
}
