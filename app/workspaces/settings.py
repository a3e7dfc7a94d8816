"""A workspace's settings: locale, phone region, brand, SMS/WhatsApp keywords and replies, Twilio credentials.

Stored as JSON on the workspace row, validated by these types. The Twilio auth token is sealed with a key
derived from ``CONSENT_SECRET_KEY`` (it must stay usable: it is the key of Twilio's webhook signatures).
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Mapping
from datetime import time
from typing import Annotated, Any
from urllib.parse import urlsplit
from zoneinfo import available_timezones

import msgspec

from app.domain.gate import Window
from app.domain.keywords import DEFAULT_KEYWORDS, KeywordSet
from app.domain.model import Channel

Text = Annotated[str, msgspec.Meta(min_length=1, max_length=640)]
Language = Annotated[str, msgspec.Meta(pattern=r"^[a-z]{2,3}$")]

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
ORIGIN_PATTERN = rf"^https://(?:{_LABEL}\.)*{_LABEL}(?::{_PORT})?$"
"""An https origin: scheme, host name and optional port; no path, query, user info or trailing slash."""
WEB_ORIGIN_DESCRIPTION = "An https origin such as https://shop.example or https://shop.example:8443 (no path)."
WebOrigin = Annotated[str, msgspec.Meta(max_length=300, pattern=ORIGIN_PATTERN, description=WEB_ORIGIN_DESCRIPTION)]
MAX_PREFERENCE_ORIGINS = 20
PreferenceOrigins = Annotated[list[WebOrigin], msgspec.Meta(max_length=MAX_PREFERENCE_ORIGINS)]


def normal_origin(origin: str) -> str:
    """An origin as browsers send it: lower case, without the default port ``:443``."""
    lowered = origin.lower()
    return lowered.removesuffix(":443") if lowered.startswith("https://") else lowered


class ReplyTexts(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """Replies in one language; unset ones use the built-in English or German default.

    Placeholders: ``{brand}``, ``{purposes}``, ``{frequency}``, ``{help_contact}``, ``{signup_url}``.
    """

    opt_in: Text | None = None
    help: Text | None = None
    stop: Text | None = None
    not_subscribed: Text | None = None


class KeywordsIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """Extra keywords of one language, added to the defaults (the defaults cannot be removed)."""

    opt_out: list[Annotated[str, msgspec.Meta(min_length=1, max_length=40)]] = msgspec.field(default_factory=list)
    opt_in: list[Annotated[str, msgspec.Meta(min_length=1, max_length=40)]] = msgspec.field(default_factory=list)
    help: list[Annotated[str, msgspec.Meta(min_length=1, max_length=40)]] = msgspec.field(default_factory=list)


class PhoneSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """How the SMS and WhatsApp channels behave."""

    sms_from: (
        Annotated[str, msgspec.Meta(max_length=64, description="E.164 number or Messaging Service SID.")] | None
    ) = None
    whatsapp_from: Annotated[str, msgspec.Meta(max_length=64, description="WhatsApp sender, E.164.")] | None = None
    start_words: dict[Annotated[str, msgspec.Meta(min_length=1, max_length=40)], str] = msgspec.field(
        default_factory=dict
    )
    """Own start words naming a purpose, e.g. ``{"NEWS": "newsletter"}``."""
    keyword_only_opt_in: bool = False
    """Whether a start word from a number with no pending signup opts it in."""
    default_purpose: str | None = None
    """The purpose a generic START opts into when nothing is pending (keyword-only opt-in)."""
    stop_reply: bool = True
    """Send one STOP confirmation; switch off where Twilio's Advanced Opt-Out already answers."""
    natural_language_opt_out: bool = True
    """Treat short messages asking to stop ("stop please") as opt-outs, flagged in the evidence."""
    frequency: Text | None = None
    help_contact: Text | None = None
    signup_url: Text | None = None
    keywords: dict[Language, KeywordsIn] = msgspec.field(default_factory=dict)
    texts: dict[Language, ReplyTexts] = msgspec.field(default_factory=dict)


class TwilioSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """This workspace's Twilio account, overriding ``TWILIO_ACCOUNT_SID``/``TWILIO_AUTH_TOKEN``."""

    account_sid: Annotated[str, msgspec.Meta(pattern=r"^AC[0-9a-fA-F]{32}$")] | None = None
    auth_token_sealed: str | None = None


class RateLimit(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """At most ``count`` events per ``window_minutes``."""

    count: Annotated[int, msgspec.Meta(ge=1, le=10_000)]
    window_minutes: Annotated[int, msgspec.Meta(ge=1, le=43_200)]


class EmailSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """How the email channel's double opt-in behaves."""

    from_address: Annotated[str, msgspec.Meta(max_length=320, description="Overrides MAIL_FROM.")] | None = None
    reply_to: Annotated[str, msgspec.Meta(max_length=320)] | None = None
    confirmation_ttl_hours: Annotated[int, msgspec.Meta(ge=1, le=720)] = 72
    """How long a confirmation link stays valid; then the signup lapses to ``expired``."""
    address_limit: RateLimit = msgspec.field(default_factory=lambda: RateLimit(count=3, window_minutes=24 * 60))
    """Confirmation mails per address (mail-bombing a third party through the form must not work)."""
    ip_limit: RateLimit = msgspec.field(default_factory=lambda: RateLimit(count=20, window_minutes=60))
    """Confirmation mails per client IP (the signup's ``evidence.ip``, else the confirming page's client)."""
    scanner_seconds: Annotated[int, msgspec.Meta(ge=0, le=3600)] = 10
    """A confirmation sooner than this after sending is flagged as a possible mail scanner in the evidence."""
    signup_url: Annotated[str, msgspec.Meta(max_length=2000)] | None = None
    """Where a person with an unknown link can sign up again (shown on the page)."""
    webhook_secret_sealed: str | None = None


class WebPushSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """The workspace's VAPID identity (RFC 8292): generated on first use, or supplied in the settings."""

    subject: Annotated[str, msgspec.Meta(max_length=320, pattern="^(mailto:|https://)")] | None = None
    """A contact for push services (``mailto:`` or an https URL), sent in the VAPID JWT."""
    vapid_public_key: str | None = None
    """Uncompressed P-256 point, base64url: the ``applicationServerKey``."""
    vapid_private_key_sealed: str | None = None


class AppPushSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """The Firebase project app push goes through (FCM HTTP v1; iOS apps too when they use Firebase)."""

    fcm_project_id: str | None = None
    fcm_service_account_sealed: str | None = None
    apns_team_id: str | None = None
    apns_key_id: str | None = None
    apns_topic: str | None = None
    """The app's bundle id."""
    apns_sandbox: bool = False
    apns_private_key_sealed: str | None = None


class PrintHouseSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """Where letters go: a print house's HTTPS job endpoint (unset: daily batch files in the outbox folder)."""

    url: str | None = None
    token_sealed: str | None = None


class SendWindow(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Daily hours in the recipient's time zone (the workspace's when unknown) in which sending is allowed."""

    start: Annotated[str, msgspec.Meta(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="HH:MM")]
    end: Annotated[str, msgspec.Meta(pattern=r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$", description="HH:MM, exclusive")]


def default_windows() -> dict[Channel, SendWindow]:
    """US federal quiet hours (47 CFR 64.1200(c)(1)) as the default for the phone channels."""
    return {
        Channel.SMS: SendWindow(start="08:00", end="21:00"),
        Channel.WHATSAPP: SendWindow(start="08:00", end="21:00"),
    }


Colour = Annotated[str, msgspec.Meta(pattern=r"^#[0-9a-fA-F]{6}$", description="#rrggbb")]


class BrandingSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """How the hosted preference pages look: the brand's logo and two colours (the name is ``brand``).

    The logo is never fetched by this service: the person's browser loads it, and the pages' Content-Security-Policy
    allows images from exactly the logo's origin. The colours reach the pages as a stylesheet generated from these
    validated values only (``/brand/v1/{primary}-{accent}.css``).
    """

    logo_url: Annotated[str, msgspec.Meta(max_length=2000, description="https only.")] | None = None
    primary_color: Colour | None = None
    """Buttons (white text on it), links, outlined buttons' text: must reach 4.5:1 against white."""
    accent_color: Colour | None = None
    """The page background around the content; the header's text on it is black or white, whichever contrasts more."""


MIN_CONTRAST = 4.5
"""WCAG 2.2 AA (1.4.3) for normal text."""
_HOST = re.compile(r"(?=.{1,253}\Z)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*")
_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")


def luminance(colour: str) -> float:
    """The relative luminance of ``#rrggbb`` (WCAG 2.2, sRGB)."""
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)  # noqa: PLR2004
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(one: str, other: str) -> float:
    """The WCAG contrast ratio of two ``#rrggbb`` colours, 1 to 21."""
    light, dark = sorted((luminance(one), luminance(other)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def text_on(background: str) -> str:
    """Black or white, whichever contrasts more with ``background`` (never below 4.58:1)."""
    return "#000000" if contrast("#000000", background) >= contrast("#ffffff", background) else "#ffffff"


def logo_origin(url: str) -> str | None:
    """``https://host[:port]`` of a logo URL, or ``None`` if it is not a plain https URL of a DNS name.

    The origin goes into a Content-Security-Policy header, so only what a host-source can hold safely passes: no
    user info, no IP literal tricks beyond dotted names, no characters that would end a directive (``;``, ``,``,
    spaces).
    """
    if len(url) > 2000 or any(c.isspace() or ord(c) < 0x20 or c in "\\\"'<>`" for c in url):  # noqa: PLR2004
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname or ""
    if parts.scheme != "https" or parts.username is not None or parts.password is not None or not _HOST.fullmatch(host):
        return None
    if parts.netloc.lower() != (f"{host}:{port}" if port is not None else host):
        return None  # anything else in the authority (an upper-case host is fine, it is lowered)
    return f"https://{host}" + (f":{port}" if port is not None and port != 443 else "")  # noqa: PLR2004


def branding_problem(branding: BrandingSettings) -> tuple[str, str] | None:
    """The field and what is wrong with it, or ``None``: https logo of a DNS name, AA contrast of the primary."""
    if branding.logo_url is not None and logo_origin(branding.logo_url) is None:
        return "branding.logo_url", "must be an https URL of a host name (https://cdn.example.com/logo.png)"
    for field in ("primary_color", "accent_color"):
        colour = getattr(branding, field)
        if colour is not None and not _COLOUR.fullmatch(colour):  # the pattern's "$" would pass a final line feed
            return f"branding.{field}", "must be a colour as #rrggbb"
    if branding.primary_color is not None:
        ratio = contrast(branding.primary_color, "#ffffff")
        if ratio < MIN_CONTRAST:
            return (
                "branding.primary_color",
                (
                    f"has a contrast of {ratio:.2f}:1 against the white page (and under the buttons' white text); "
                    f"WCAG 2.2 AA needs at least {MIN_CONTRAST}:1, choose a darker colour"
                ),
            )
    return None


class WorkspaceSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """Everything configurable per workspace."""

    brand: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    branding: BrandingSettings = msgspec.field(default_factory=BrandingSettings)
    locale: Language = "de"
    default_region: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}$")] = "DE"
    timezone: Annotated[str, msgspec.Meta(max_length=64)] = "Europe/Berlin"
    phone: PhoneSettings = msgspec.field(default_factory=PhoneSettings)
    twilio: TwilioSettings = msgspec.field(default_factory=TwilioSettings)
    email: EmailSettings = msgspec.field(default_factory=EmailSettings)
    web_push: WebPushSettings = msgspec.field(default_factory=WebPushSettings)
    app_push: AppPushSettings = msgspec.field(default_factory=AppPushSettings)
    print_house: PrintHouseSettings = msgspec.field(default_factory=PrintHouseSettings)
    send_windows: dict[Channel, SendWindow] = msgspec.field(default_factory=default_windows)
    erasure_review: bool = False
    """Whether a "delete me" on the preference centre waits for an ``admin`` key (``/v1/erasure-requests``, due
    within one month) instead of being executed at once."""
    preference_origins: PreferenceOrigins = msgspec.field(default_factory=list)
    """The brand's own web origins (https, at most 20) whose pages may call the preference API
    ``/p/{token}/preferences`` from the browser (CORS); any other site's POST is refused."""
    tracking_purpose: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    """The key of the purpose that stands for tracking (TTDSG §25, ePrivacy): only a contact who consented to it
    gets tracked links, the open pixel and push event tokens; for everyone else opens and clicks stay unknown."""
    tracking_pixel: bool = False
    """Whether tracked HTML mail also carries a 1x1 open pixel (``/o/{token}``)."""

    def allows_origin(self, origin: str) -> bool:
        """Whether ``origin`` (an ``Origin`` header) is one of :attr:`preference_origins`."""
        return normal_origin(origin) in {normal_origin(o) for o in self.preference_origins}

    @classmethod
    def load(cls, stored: dict[str, Any]) -> WorkspaceSettings:
        """From the workspace row's JSON."""
        return msgspec.convert(stored, cls)

    def dump(self) -> dict[str, Any]:
        """To the workspace row's JSON."""
        return msgspec.to_builtins(self)  # type: ignore[no-any-return]

    def keyword_sets(self) -> dict[str, KeywordSet]:
        """The default keyword sets plus this workspace's additions."""
        sets = dict(DEFAULT_KEYWORDS)
        for language, extra in self.phone.keywords.items():
            base = sets.get(language, KeywordSet(frozenset(), frozenset(), frozenset()))
            added = KeywordSet.of(extra.opt_out, extra.opt_in, extra.help)
            sets[language] = KeywordSet(
                base.opt_out | added.opt_out, base.opt_in | added.opt_in, base.help | added.help
            )
        return sets


#: The built-in replies, sentence by sentence. A pair is a sentence naming a value the workspace may not have set
#: (its help contact, its signup page) and what stands in its place without it: no reply ends in "or ." or "at .".
DEFAULT_TEXTS: dict[str, dict[str, tuple[str | tuple[str, str], ...]]] = {
    "en": {
        "opt_in": (
            "{brand}: You are now subscribed to {purposes}.",
            "{frequency}.",
            "Msg&data rates may apply.",
            "Reply HELP for help, STOP to cancel.",
        ),
        "help": (
            ("{brand}: Help at {help_contact}.", "{brand}:"),
            "Msg&data rates may apply.",
            "{frequency}.",
            "Reply STOP to cancel.",
        ),
        "stop": (
            "You are unsubscribed from {brand}. You will no longer receive messages from us.",
            ("Reply HELP for help or contact {help_contact}.", "Reply HELP for help."),
        ),
        "not_subscribed": (
            "{brand}: We have no signup for this number.",
            ("To subscribe, please sign up first: {signup_url}", "To subscribe, please sign up first."),
        ),
    },
    "de": {
        "opt_in": (
            "{brand}: Sie sind jetzt für {purposes} angemeldet.",
            "{frequency}.",
            "Es können Kosten für SMS und Daten anfallen.",
            "Hilfe: HILFE, Abmelden: STOPP.",
        ),
        "help": (
            ("{brand}: Hilfe unter {help_contact}.", "{brand}:"),
            "Es können Kosten für SMS und Daten anfallen.",
            "{frequency}.",
            "Abmelden: STOPP.",
        ),
        "stop": (
            "Sie sind von {brand} abgemeldet und erhalten keine Nachrichten mehr von uns.",
            ("Hilfe: HILFE oder {help_contact}.", "Hilfe: HILFE."),
        ),
        "not_subscribed": (
            "{brand}: Für diese Nummer liegt keine Anmeldung vor.",
            ("Bitte melden Sie sich zuerst an: {signup_url}", "Bitte melden Sie sich zuerst an."),
        ),
    },
}


def _default_text(language: str, kind: str, values: Mapping[str, str]) -> str:
    """The built-in reply: each pair's first sentence where every value it names is set, else its second."""
    sentences = []
    for part in DEFAULT_TEXTS[language][kind]:
        if isinstance(part, tuple):
            full, without = part
            names = {name for _, name, _, _ in _FORMATTER.parse(full) if name}
            sentences.append(full if all(values.get(name) for name in names) else without)
        else:
            sentences.append(part)
    return " ".join(sentences)


_DEFAULT_FREQUENCY = {"en": "Message frequency varies", "de": "Nachrichten nach Bedarf"}


def reply_text(settings: WorkspaceSettings, kind: str, language: str, **values: str) -> str:
    """The reply ``kind`` in ``language`` (falling back to the workspace locale, then English), filled in."""
    text: str | None = None
    used = "en"
    for lang in (language, settings.locale, "en"):
        own = settings.phone.texts.get(lang)
        text = getattr(own, kind, None) if own else None
        if text is not None or lang in DEFAULT_TEXTS:
            used = lang
            break
    filled_in = {
        "frequency": settings.phone.frequency or _DEFAULT_FREQUENCY.get(used, _DEFAULT_FREQUENCY["en"]),
        "help_contact": settings.phone.help_contact or "",
        "signup_url": settings.phone.signup_url or "",
        "purposes": "",
        "brand": settings.brand or "",
        **values,
    }
    if text is None:
        text = _default_text(used, kind, filled_in)
    filled = fill_template(text, filled_in)
    # tidy what empty placeholders leave behind ("at .", ": .", double spaces)
    return " ".join(filled.replace(" .", ".").replace("..", ".").split()).strip(" :")


PLACEHOLDERS = frozenset({"brand", "purposes", "frequency", "help_contact", "signup_url"})
"""The names a reply text may use, as ``{name}``."""
_FORMATTER = string.Formatter()


def template_problem(text: str) -> str | None:
    """What is wrong with a tenant's reply text, or ``None``.

    Only ``{name}`` with a known name: no format specs (``{brand:>1500000000}`` would allocate gigabytes),
    conversions, attribute or index access; ``{{`` and ``}}`` are literal braces.
    """
    try:
        parts = list(_FORMATTER.parse(text))
    except ValueError:
        return "has an unbalanced brace (write {{ or }} for a literal brace)"
    for _, field, spec, conversion in parts:
        if field is None:
            continue
        if field not in PLACEHOLDERS:
            known = ", ".join(f"{{{name}}}" for name in sorted(PLACEHOLDERS))
            return f"uses the unknown placeholder {{{field[:40]}}} (known: {known})"
        if spec or conversion:
            return f"formats the placeholder {{{field}}}; write it plainly, without '!' or ':'"
    return None


def fill_template(text: str, values: dict[str, str]) -> str:
    """``text`` with each plain ``{name}`` of ``values`` replaced; nothing of the tenant's text is evaluated.

    Anything else in braces (a text stored before templates were checked) stays as it is written.
    """
    try:
        parts = list(_FORMATTER.parse(text))
    except ValueError:
        return text
    out: list[str] = []
    for literal, field, spec, conversion in parts:
        out.append(literal)
        if field is None:
            continue
        if field in values and not spec and conversion is None:
            out.append(values[field])
        else:
            out.append("{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}")
    return "".join(out)


@functools.cache
def _time_zones() -> frozenset[str]:
    return frozenset(available_timezones())


def known_time_zone(name: str) -> bool:
    """Whether ``name`` is an IANA time zone this service can compute with (``Europe/Berlin``, ``UTC``)."""
    return name in _time_zones()


def window_of(settings: WorkspaceSettings, channel: Channel) -> Window | None:
    """The send window of ``channel`` (``None``: any time)."""
    configured = settings.send_windows.get(channel)
    if configured is None:
        return None
    end = time.max if configured.end == "24:00" else time.fromisoformat(configured.end)
    return Window(start=time.fromisoformat(configured.start), end=end)
