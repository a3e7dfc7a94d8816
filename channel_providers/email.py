"""Email: composing mail (with RFC 2369/8058 unsubscribe headers for marketing) and sending it.

Two senders behind one Protocol:

- :class:`SmtpSender` hands the message to the configured relay with aiosmtplib (plain, STARTTLS or implicit
  TLS; optional login). A 5xx reply is a permanent failure, anything else that goes wrong is transient; a
  connection lost during ``DATA`` may have been accepted (marketing is then not sent again).
- :class:`OutboxSender` writes ``.eml`` files to a local folder: the default when no ``SMTP_HOST`` is set, so
  the service runs with no mail account.

Vendor exceptions never leave this module: every send answers a :class:`MailResult`.
"""

from __future__ import annotations

import asyncio
import email.policy
import enum
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, make_msgid, parseaddr
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import aiosmtplib
import structlog

from channel_providers.base import Outbound, Outcome, SendResult

log = structlog.get_logger(__name__)

_PERMANENT = 500  # SMTP reply codes from 500 up are permanent (RFC 5321 §4.2.1)


class MailOutcome(enum.StrEnum):
    """What the relay did with one message (the delivery's outcome, for the dispatcher, is :class:`Outcome`)."""

    ACCEPTED = "accepted"
    PERMANENT_FAILURE = "permanent_failure"
    """The relay refused for good (5xx): the address or the message will not be accepted as is."""
    TRANSIENT_FAILURE = "transient_failure"
    """Connection, timeout or a 4xx reply: trying again later may work."""


@dataclass(frozen=True, slots=True)
class MailResult:
    """The relay's answer to one message."""

    outcome: MailOutcome
    message_id: str
    response: str
    """The relay's reply (or the reason the message did not get there), for the proof and the logs."""
    maybe_accepted: bool = False
    """A transient failure after the content was handed over (the connection lost or no answer in time during
    ``DATA``): the relay may have queued the message, so sending it again could repeat it."""

    @property
    def accepted(self) -> bool:
        """True when the relay took the message."""
        return self.outcome is MailOutcome.ACCEPTED


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """How a marketing mail's recipient leaves the list (RFC 2369, RFC 8058, and a visible link)."""

    url: str
    """The HTTPS one-click target; it carries everything (recipient, purpose) in an opaque signed token."""
    page_url: str
    """The page behind the visible link in the body (choose one purpose or everything)."""
    mailto: str | None = None
    """An optional ``mailto:`` alternative for receivers that do not POST."""
    locale: str = "en"
    preferences_url: str | None = None
    """The recipient's preference centre, linked beside the unsubscribe link in the body."""
    objection_notice: bool = False
    """Add the objection notice (UWG §7(3) No. 4: mail to existing customers without consent) to every body part,
    with the unsubscribe page as the place to object."""


# RFC 5322 allows 998 characters per line: long List-Unsubscribe URLs stay one line, never RFC 2047 encoded-words
# (which receivers do not decode in that header).
_POLICY = email.policy.default.clone(max_line_length=998)
_SMTP_POLICY = _POLICY.clone(linesep="\r\n")

_FOOTER = {
    "de": ("Sie möchten diese E-Mails nicht mehr erhalten? Hier abmelden: {url}", "Abmelden"),
    "en": ("Don't want these emails any more? Unsubscribe here: {url}", "Unsubscribe"),
}
#: UWG §7(3) No. 4: told in every mail that they may object at any time, at basic transmission rates only.
OBJECTION_NOTICE = {
    "de": (
        (
            "Sie erhalten diese E-Mail, weil Sie bei uns gekauft haben. Sie können der Verwendung Ihrer E-Mail-Adresse "
            "für Werbung jederzeit widersprechen, ohne dass hierfür andere als die Übermittlungskosten nach den "
            "Basistarifen entstehen: {url}"
        ),
        "Widersprechen",
    ),
    "en": (
        (
            "You receive this email because you bought from us. You can object to this use of your address at any "
            "time; it costs you nothing but the basic transmission rate: {url}"
        ),
        "Object",
    ),
}
_PREFERENCES = {
    "de": ("Einstellungen (was Sie von uns erhalten): {url}", "Einstellungen"),
    "en": ("Preferences (what you receive from us): {url}", "Preferences"),
}


def compose(
    *,
    sender: str,
    to: str,
    subject: str,
    text: str,
    html: str | None = None,
    headers: Mapping[str, str] | None = None,
    unsubscribe: Unsubscribe | None = None,
    message_id: str | None = None,
) -> EmailMessage:
    """A MIME message with ``Message-ID`` and ``Date``; marketing mail passes ``unsubscribe``.

    With ``unsubscribe`` the message gets ``List-Unsubscribe`` (the HTTPS URL first), ``List-Unsubscribe-Post:
    List-Unsubscribe=One-Click`` (RFC 8058 §3.1) and a visible unsubscribe link at the end of every body part
    (Gmail and Yahoo require both). DKIM signing, which RFC 8058 needs to cover these headers, is the relay's
    job.
    """
    message = EmailMessage(policy=_POLICY)
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(UTC))
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    message["Message-ID"] = f"<{message_id}@{domain}>" if message_id else make_msgid(domain=domain)
    for name, value in (headers or {}).items():
        message[name] = value
    if unsubscribe is not None:
        targets = [f"<{unsubscribe.url}>"] + ([f"<{unsubscribe.mailto}>"] if unsubscribe.mailto else [])
        message["List-Unsubscribe"] = ", ".join(targets)
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        sentence, label = _FOOTER.get(unsubscribe.locale, _FOOTER["en"])
        footer = sentence.format(url=unsubscribe.page_url)
        links = f'<a href="{_attr(unsubscribe.page_url)}">{label}</a>'
        if unsubscribe.objection_notice:
            notice, label = OBJECTION_NOTICE.get(unsubscribe.locale, OBJECTION_NOTICE["en"])
            footer = notice.format(url=unsubscribe.page_url) + "\n" + footer
            words = _html_text(notice.format(url="").rstrip(": "))
            links = f'{words}: <a href="{_attr(unsubscribe.page_url)}">{label}</a><br>{links}'
        if unsubscribe.preferences_url:
            words, label = _PREFERENCES.get(unsubscribe.locale, _PREFERENCES["en"])
            footer += "\n" + words.format(url=unsubscribe.preferences_url)
            links += f' &middot; <a href="{_attr(unsubscribe.preferences_url)}">{label}</a>'
        text = f"{text.rstrip()}\n\n--\n{footer}\n"
        if html is not None:
            link = f'<p style="font-size:12px;color:#555">{links}</p>'
            html = html.replace("</body>", f"{link}</body>") if "</body>" in html else html + link
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message


def _html_text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _attr(value: str) -> str:
    return value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


@runtime_checkable  # the service injects it as a typed dependency, which Litestar checks with isinstance
class MailSender(Protocol):
    """Sends one composed message."""

    provider: str
    """The provider a report names: ``smtp`` (the relay) or ``dev_outbox``."""

    async def send(self, message: EmailMessage) -> MailResult:
        """Hand ``message`` on; never raises for delivery problems."""
        ...


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    """Where and how to reach the relay."""

    host: str
    port: int = 587
    tls: str = "starttls"
    """``none``, ``starttls`` or ``tls``."""
    username: str | None = None
    password: str | None = None
    timeout: float = 15.0


class SmtpSender:
    """Sends through an SMTP relay with aiosmtplib; one connection per message."""

    provider = "smtp"
    """The provider a report names (``group_by=provider``)."""

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config

    async def send(self, message: EmailMessage) -> MailResult:
        """Send; 5xx replies are permanent failures, connection problems and 4xx replies transient ones.

        A connection lost or a timeout once the message's content was being handed over (the ``DATA`` phase) is
        transient *and may have been accepted* (``MailResult.maybe_accepted``): the relay may have queued it
        before its answer was lost, so sending it again could repeat it. Anything earlier (connecting, TLS,
        login, the envelope) cannot have been accepted, and a reply, whatever it says, is an answer.
        """
        config = self.config
        message_id = str(message["Message-ID"])
        # Serialised once, here, with our policy (CRLF, lines up to 998): handed a message object, the client
        # re-serialises it with its own 78-column policy, which turns a long List-Unsubscribe into RFC 2047
        # encoded-words that mailbox providers cannot parse. The envelope comes from the headers, as it would.
        raw = message.as_bytes(policy=_SMTP_POLICY)
        sender = parseaddr(str(message["Sender"] or message["From"]))[1]
        recipients = [address for _, address in getaddresses([str(v) for v in message.get_all("To", [])])]
        client = _Client(
            hostname=config.host,
            port=config.port,
            username=config.username,
            password=config.password,
            use_tls=config.tls == "tls",
            start_tls=True if config.tls == "starttls" else False,  # noqa: SIM210  # None would mean "if offered"
            timeout=config.timeout,
        )
        try:
            async with client:
                errors, response = await client.sendmail(sender, recipients, raw)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [refused.code for refused in exc.recipients]
            outcome = (
                MailOutcome.PERMANENT_FAILURE if codes and min(codes) >= _PERMANENT else MailOutcome.TRANSIENT_FAILURE
            )
            detail = "; ".join(f"{refused.code} {refused.message}" for refused in exc.recipients)
            return MailResult(outcome, message_id, detail)
        except aiosmtplib.SMTPResponseException as exc:
            outcome = MailOutcome.PERMANENT_FAILURE if exc.code >= _PERMANENT else MailOutcome.TRANSIENT_FAILURE
            return MailResult(outcome, message_id, f"{exc.code} {exc.message}")
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            detail = f"{type(exc).__name__}: {exc}"
            return MailResult(MailOutcome.TRANSIENT_FAILURE, message_id, detail, maybe_accepted=client.data_started)
        if errors:  # some recipients refused, others taken (we send to one, so this is rare)
            detail = "; ".join(f"{response.code} {response.message}" for response in errors.values())
            return MailResult(MailOutcome.PERMANENT_FAILURE, message_id, detail)
        return MailResult(MailOutcome.ACCEPTED, message_id, response)


class _Client(aiosmtplib.SMTP):
    """aiosmtplib's client, remembering whether the message's content began to be handed over (``DATA``)."""

    data_started = False

    async def data(self, message: str | bytes, /, **kwargs: Any) -> aiosmtplib.SMTPResponse:
        self.data_started = True
        return await super().data(message, **kwargs)


class OutboxSender:
    """Writes each message as an ``.eml`` file into ``folder`` (development, no relay needed)."""

    provider = "dev_outbox"
    """The provider a report names (``group_by=provider``): the development outbox folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def send(self, message: EmailMessage) -> MailResult:
        """Write the file atomically (temporary name, then rename); logs where, never to whom."""
        message_id = str(message["Message-ID"])
        data = bytes(message)
        path = await asyncio.to_thread(self._write, data)
        log.info("mail_written_to_outbox", path=str(path))
        return MailResult(MailOutcome.ACCEPTED, message_id, f"written to {path}")

    def _write(self, data: bytes) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        fd, temporary = tempfile.mkstemp(dir=self.folder, prefix=".", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        final = self.folder / f"{stamp}-{Path(temporary).stem.lstrip('.')}.eml"
        Path(temporary).replace(final)
        return final


def sender_for(smtp: SmtpConfig | None, outbox: Path) -> MailSender:
    """The relay when one is configured, else the outbox folder."""
    return SmtpSender(smtp) if smtp is not None else OutboxSender(outbox)


def address(display_name: str, addr_spec: str) -> str:
    """``"Name" <addr>`` with the name encoded as needed."""
    return str(Address(display_name=display_name, addr_spec=addr_spec))


class EmailAdapter:
    """The email channel for the dispatcher: composes the delivery and sends it through a :class:`MailSender`.

    The Message-ID is derived from the delivery id, so a repeated send is recognisable as the same message.
    Marketing deliveries carry ``extras["unsubscribe"]`` (an :class:`Unsubscribe`).
    """

    def __init__(self, sender: MailSender) -> None:
        self.sender = sender

    @property
    def provider(self) -> str:
        """The provider a report names: the mail sender's."""
        return self.sender.provider

    async def send(self, outbound: Outbound) -> SendResult:
        """Compose and send; a 5xx refusal is permanent (the address is undeliverable)."""
        content = outbound.content
        message = compose(
            sender=outbound.sender or "no-reply@localhost",
            to=outbound.to,
            subject=content["subject"],
            text=content["text"],
            html=content.get("html"),
            headers=outbound.extras.get("headers"),
            unsubscribe=outbound.extras.get("unsubscribe"),
            message_id=outbound.id,
        )
        result = await self.sender.send(message)
        outcome = {
            MailOutcome.ACCEPTED: Outcome.ACCEPTED,
            MailOutcome.PERMANENT_FAILURE: Outcome.PERMANENT,
            MailOutcome.TRANSIENT_FAILURE: Outcome.TRANSIENT,
        }[result.outcome]
        return SendResult(
            outcome,
            provider_message_id=result.message_id,
            detail=result.response,
            maybe_delivered=result.maybe_accepted,
        )
