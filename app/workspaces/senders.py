"""Sender identities and mail domains: what a workspace may send from.

A sender number, short code, alphanumeric sender or Messaging Service belongs to one workspace (the settings
``PUT`` claims it, ``sender_identities`` holds the claim). Two spellings of one sender must meet in one claim, so
the claim is on a normalised identity: E.164 for a phone number (``whatsapp:`` removed: SMS and WhatsApp from one
number are one sender), ``MG`` + lower-case hex for a Messaging Service SID, else the text in upper case without
spaces.

A workspace's own ``email.from_address`` must be on a domain the operator listed for it (``consent workspace
mail-domains``); without a list, the domain of ``MAIL_FROM``; without an SMTP relay nothing leaves the machine
(development: ``.eml`` files in the outbox) and any domain is taken.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from email.utils import parseaddr

from app.domain.identifiers import InvalidIdentifier, normalise_phone
from app.settings import MailSettings

_MESSAGING_SERVICE = re.compile(r"^MG[0-9a-fA-F]{32}$")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_MAX_DOMAIN = 253


def sender_identity(value: str | None, region: str) -> str | None:
    """The normalised identity of a sender as written in the settings or in a Twilio webhook (``None``: empty)."""
    text = (value or "").strip()
    if text.lower().startswith("whatsapp:"):
        text = text[len("whatsapp:") :].strip()
    if not text:
        return None
    if _MESSAGING_SERVICE.match(text):
        return "MG" + text[2:].lower()
    try:
        return normalise_phone(text, region)
    except InvalidIdentifier:
        return "".join(text.split()).upper()


def sender_identities(values: Iterable[str | None], region: str) -> set[str]:
    """The identities of the given senders (empty ones left out)."""
    return {identity for value in values if (identity := sender_identity(value, region)) is not None}


def normalise_domain(domain: str) -> str:
    """A mail domain in the form it is compared in: lower case, IDNA (``bücher.example`` → ``xn--bcher-kva…``).

    Raises ``ValueError`` for something that is not a domain name.
    """
    text = domain.strip().rstrip(".").lower()
    try:
        ascii_form = text.encode("idna").decode("ascii") if text else ""
    except UnicodeError:
        raise ValueError(f"{domain[:80]!r} is not a domain name") from None
    if not ascii_form or len(ascii_form) > _MAX_DOMAIN or not all(_LABEL.match(p) for p in ascii_form.split(".")):
        raise ValueError(f"{domain[:80]!r} is not a domain name")
    return ascii_form


def mail_domain(address: str) -> str | None:
    """The domain of an address (``Acme <news@acme.example>`` → ``acme.example``); ``None`` if it has none."""
    _, addr = parseaddr(address)
    local, at, domain = addr.rpartition("@")
    if not at or not local or not domain:
        return None
    try:
        return normalise_domain(domain)
    except ValueError:
        return None


def allowed_mail_domains(listed: Iterable[str] | None, mail: MailSettings) -> frozenset[str] | None:
    """The domains a workspace's ``from_address`` may use; ``None``: any (no relay, nothing leaves the machine).

    The operator's list when there is one; else only the domain of the service's own ``MAIL_FROM``.
    """
    domains = frozenset(listed or ())
    if domains:
        return domains
    if mail.host is None:
        return None
    default = mail_domain(mail.mail_from)
    return frozenset({default}) if default else frozenset()
