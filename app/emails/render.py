"""The words of the email channel, in German and English: the confirmation mail and the hosted pages.

The confirmation mail is deliberately free of advertising (OLG München 29 U 1682/12; BGH VI ZR 225/17): it
names the brand and the purpose, carries the link, says what happens if nothing is done, and nothing else.
Pages are plain HTML with inline CSS, no external assets and no JavaScript; their forms need a real POST
(CHANNEL_RULES.md §1.4, E16/E17).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from jinja2 import Environment, select_autoescape

LOCALES = ("de", "en")


def locale_of(*candidates: str | None) -> str:
    """The first supported language among ``candidates`` (``de-AT`` counts as ``de``), else English."""
    for candidate in candidates:
        language = (candidate or "").split("-")[0].lower()
        if language in LOCALES:
            return language
    return "en"


MAIL = {
    "en": {
        "subject": "Please confirm: {purpose} from {brand}",
        "body": (
            "Hello,\n\n"
            "someone, hopefully you, asked to receive {purpose} from {brand} at this email address.\n\n"
            "To confirm, open this link and press the button on the page:\n\n{link}\n\n"
            "The link is valid until {expires}.\n\n"
            "If this was not you, simply ignore this email: without your confirmation you will not receive "
            "{purpose} from us, and this address is not added to any list.\n\n"
            "{brand}\n"
        ),
        "already_subject": "You are already subscribed: {purpose} from {brand}",
        "already_body": (
            "Hello,\n\n"
            "someone asked to subscribe this email address to {purpose} from {brand}. The address is already "
            "subscribed, so nothing has changed and there is nothing to do.\n\n"
            "If this was not you, simply ignore this email.\n\n"
            "{brand}\n"
        ),
        "preferences_subject": "Your preferences at {brand}",
        "preferences_body": (
            "Hello,\n\n"
            "someone, hopefully you, asked for a link to manage what {brand} may send to this email address.\n\n"
            "Open this link to see and change your preferences:\n\n{link}\n\n"
            "The link is valid until {expires}. Do not forward this email: the link opens your preferences.\n\n"
            "If this was not you, simply ignore this email: nothing has changed.\n\n"
            "{brand}\n"
        ),
    },
    "de": {
        "subject": "Bitte bestätigen: {purpose} von {brand}",
        "body": (
            "Hallo,\n\n"
            "jemand, hoffentlich Sie, möchte mit dieser E-Mail-Adresse {purpose} von {brand} erhalten.\n\n"
            "Zur Bestätigung öffnen Sie bitte diesen Link und klicken auf der Seite auf die Schaltfläche:\n\n"
            "{link}\n\n"
            "Der Link ist gültig bis {expires}.\n\n"
            "Falls Sie das nicht waren, ignorieren Sie diese E-Mail einfach: Ohne Ihre Bestätigung erhalten Sie "
            "{purpose} nicht, und die Adresse wird in keine Liste aufgenommen.\n\n"
            "{brand}\n"
        ),
        "already_subject": "Sie sind bereits angemeldet: {purpose} von {brand}",
        "already_body": (
            "Hallo,\n\n"
            "jemand wollte diese E-Mail-Adresse für {purpose} von {brand} anmelden. Die Adresse ist bereits "
            "angemeldet; es hat sich nichts geändert und Sie müssen nichts tun.\n\n"
            "Falls Sie das nicht waren, ignorieren Sie diese E-Mail einfach.\n\n"
            "{brand}\n"
        ),
        "preferences_subject": "Ihre Einstellungen bei {brand}",
        "preferences_body": (
            "Hallo,\n\n"
            "jemand, hoffentlich Sie, hat einen Link angefordert, um festzulegen, was {brand} an diese "
            "E-Mail-Adresse senden darf.\n\n"
            "Mit diesem Link sehen und ändern Sie Ihre Einstellungen:\n\n{link}\n\n"
            "Der Link ist gültig bis {expires}. Bitte leiten Sie diese E-Mail nicht weiter: Der Link öffnet Ihre "
            "Einstellungen.\n\n"
            "Falls Sie das nicht waren, ignorieren Sie diese E-Mail einfach: Es hat sich nichts geändert.\n\n"
            "{brand}\n"
        ),
    },
}

_MAIL_HTML = """<!doctype html>
<html lang="{{ lang }}"><head><meta charset="utf-8"><title>{{ subject }}</title></head>
<body style="font-family:sans-serif;line-height:1.5;color:#222;max-width:36em">
{% for paragraph in paragraphs %}{% if paragraph == link %}<p><a href="{{ link }}">{{ button }}</a></p>
{% else %}<p>{{ paragraph }}</p>
{% endif %}{% endfor %}</body></html>
"""

_BUTTON = {"en": "Confirm my subscription", "de": "Anmeldung bestätigen"}
_PREFERENCES_BUTTON = {"en": "Open my preferences", "de": "Meine Einstellungen öffnen"}


@dataclass(frozen=True, slots=True)
class Mail:
    """A rendered mail."""

    subject: str
    text: str
    html: str


def _format_time(moment: datetime, timezone: str, lang: str) -> str:
    local = moment.astimezone(ZoneInfo(timezone))
    return local.strftime("%d.%m.%Y %H:%M %Z") if lang == "de" else local.strftime("%Y-%m-%d %H:%M %Z")


def confirmation_mail(lang: str, *, brand: str, purpose: str, link: str, expires: datetime, timezone: str) -> Mail:
    """The double opt-in mail: the link and nothing that advertises."""
    words = MAIL[lang]
    values = {"brand": brand, "purpose": purpose, "link": link, "expires": _format_time(expires, timezone, lang)}
    subject = words["subject"].format(**values)
    text = words["body"].format(**values)
    return Mail(subject, text, _html(lang, subject, text, link))


def already_subscribed_mail(lang: str, *, brand: str, purpose: str) -> Mail:
    """Sent instead of a confirmation when the address is already in: the answer to the form stays the same."""
    words = MAIL[lang]
    values = {"brand": brand, "purpose": purpose}
    subject = words["already_subject"].format(**values)
    text = words["already_body"].format(**values)
    return Mail(subject, text, _html(lang, subject, text, None))


def preference_link_mail(lang: str, *, brand: str, link: str, expires: datetime, timezone: str) -> Mail:
    """The mail a person asked for at ``/p``: a link to their preference centre, and nothing that advertises."""
    words = MAIL[lang]
    values = {"brand": brand, "link": link, "expires": _format_time(expires, timezone, lang)}
    subject = words["preferences_subject"].format(**values)
    text = words["preferences_body"].format(**values)
    return Mail(subject, text, _html(lang, subject, text, link, _PREFERENCES_BUTTON[lang]))


def _html(lang: str, subject: str, text: str, link: str | None, button: str | None = None) -> str:
    paragraphs = [part.replace("\n", " ").strip() for part in text.split("\n\n") if part.strip()]
    return _env.from_string(_MAIL_HTML).render(
        lang=lang, subject=subject, paragraphs=paragraphs, link=link, button=button or _BUTTON[lang]
    )


# --- pages -------------------------------------------------------------------------------------------------

PAGES: dict[str, dict[str, str]] = {
    "en": {
        "confirm_title": "Confirm your subscription",
        "confirm_text": "Please confirm that {address} may receive {purpose} from {brand}.",
        "confirm_button": "Yes, confirm",
        "confirmed_title": "Thank you",
        "confirmed_text": "Your subscription to {purpose} from {brand} is confirmed.",
        "confirmed_blocked_title": "Confirmed, but no mail will come yet",
        "confirmed_blocked_text": (
            "Your subscription to {purpose} from {brand} is recorded. An earlier request for this address (an "
            "unsubscribe, an objection or a deletion of your data) still stops marketing mail to it, and this "
            "confirmation does not lift it. If you want to receive {purpose}, please ask {brand}."
        ),
        "already_title": "Already confirmed",
        "already_text": "This subscription was already confirmed. There is nothing more to do.",
        "expired_title": "This link has expired",
        "expired_text": "The confirmation link is no longer valid. You can ask for a new confirmation email.",
        "superseded_title": "A newer email was sent",
        "superseded_text": (
            "This link was replaced by a newer confirmation email. Please use the link in the newest email, "
            "or ask for another one."
        ),
        "renew_button": "Send me a new confirmation email",
        "renewed_title": "Email sent",
        "renewed_text": "A new confirmation email is on its way. Please check your inbox.",
        "unknown_title": "Link not found",
        "unknown_text": "This link is not valid. It may be incomplete; please copy the whole link from the email.",
        "signup_again": "Sign up again",
        "invalid_title": "This link is no longer valid",
        "invalid_text": "This subscription request was withdrawn or has changed; the link cannot confirm it.",
        "limited_title": "Please wait a moment",
        "limited_text": "Too many confirmation emails were requested. Please try again later.",
        "unsubscribe_title": "Unsubscribe",
        "unsubscribe_text": "Which emails should {address} no longer receive from {brand}?",
        "unsubscribe_purpose": "Only {purpose}",
        "unsubscribe_all": "All marketing emails",
        "unsubscribe_button": "Unsubscribe",
        "unsubscribed_title": "You are unsubscribed",
        "unsubscribed_text": "{address} will no longer receive {what} from {brand}.",
        "everything": "marketing emails",
        "unsubscribe_unknown_title": "Link not found",
        "unsubscribe_unknown_text": "This unsubscribe link is not valid. Please copy the whole link from the email.",
        "preferences_link": "Preferences: choose everything {brand} may send you",
        "busy_title": "Please try again in a moment",
        "busy_text": (
            "Your request could not be completed just now because of a temporary problem. Please go back and try "
            "again in a moment."
        ),
        "changed_meanwhile_title": "Something changed meanwhile",
        "changed_meanwhile_text": (
            "The data this request is about changed while it was handled, so it could not be completed. Please "
            "open the link from your email again."
        ),
        "unstorable_title": "This entry cannot be saved",
        "unstorable_text": "It contains a character that cannot be stored. Please go back, remove it and try again.",
        "failed_title": "Something went wrong",
        "failed_text": "Your request could not be handled. The error has been recorded; please try again later.",
    },
    "de": {
        "confirm_title": "Anmeldung bestätigen",
        "confirm_text": "Bitte bestätigen Sie, dass {address} {purpose} von {brand} erhalten soll.",
        "confirm_button": "Ja, bestätigen",
        "confirmed_title": "Vielen Dank",
        "confirmed_text": "Ihre Anmeldung für {purpose} von {brand} ist bestätigt.",
        "confirmed_blocked_title": "Bestätigt, aber noch kommt keine Post",
        "confirmed_blocked_text": (
            "Ihre Anmeldung für {purpose} von {brand} ist erfasst. Eine frühere Anfrage zu dieser Adresse (eine "
            "Abmeldung, ein Widerspruch oder die Löschung Ihrer Daten) sperrt Werbe-E-Mails an sie weiterhin, und "
            "diese Bestätigung hebt das nicht auf. Wenn Sie {purpose} erhalten möchten, wenden Sie sich bitte an "
            "{brand}."
        ),
        "already_title": "Bereits bestätigt",
        "already_text": "Diese Anmeldung wurde bereits bestätigt. Sie müssen nichts weiter tun.",
        "expired_title": "Dieser Link ist abgelaufen",
        "expired_text": (
            "Der Bestätigungslink ist nicht mehr gültig. Sie können eine neue Bestätigungs-E-Mail anfordern."
        ),
        "superseded_title": "Es wurde eine neuere E-Mail gesendet",
        "superseded_text": (
            "Dieser Link wurde durch eine neuere Bestätigungs-E-Mail ersetzt. Bitte verwenden Sie den Link aus "
            "der neuesten E-Mail oder fordern Sie eine weitere an."
        ),
        "renew_button": "Neue Bestätigungs-E-Mail senden",
        "renewed_title": "E-Mail gesendet",
        "renewed_text": "Eine neue Bestätigungs-E-Mail ist unterwegs. Bitte sehen Sie in Ihrem Posteingang nach.",
        "unknown_title": "Link nicht gefunden",
        "unknown_text": (
            "Dieser Link ist nicht gültig. Vielleicht ist er unvollständig; bitte kopieren Sie den ganzen Link "
            "aus der E-Mail."
        ),
        "signup_again": "Erneut anmelden",
        "invalid_title": "Dieser Link ist nicht mehr gültig",
        "invalid_text": (
            "Diese Anmeldung wurde zurückgezogen oder hat sich geändert; der Link kann sie nicht bestätigen."
        ),
        "limited_title": "Bitte warten Sie einen Moment",
        "limited_text": "Es wurden zu viele Bestätigungs-E-Mails angefordert. Bitte versuchen Sie es später erneut.",
        "unsubscribe_title": "Abmelden",
        "unsubscribe_text": "Welche E-Mails soll {address} von {brand} nicht mehr erhalten?",
        "unsubscribe_purpose": "Nur {purpose}",
        "unsubscribe_all": "Alle Werbe-E-Mails",
        "unsubscribe_button": "Abmelden",
        "unsubscribed_title": "Sie sind abgemeldet",
        "unsubscribed_text": "{address} erhält von {brand} keine {what} mehr.",
        "everything": "Werbe-E-Mails",
        "unsubscribe_unknown_title": "Link nicht gefunden",
        "unsubscribe_unknown_text": (
            "Dieser Abmeldelink ist nicht gültig. Bitte kopieren Sie den ganzen Link aus der E-Mail."
        ),
        "preferences_link": "Einstellungen: wählen Sie alles, was {brand} Ihnen senden darf",
        "busy_title": "Bitte versuchen Sie es gleich noch einmal",
        "busy_text": (
            "Ihre Anfrage konnte wegen einer vorübergehenden Störung gerade nicht abgeschlossen werden. Bitte gehen "
            "Sie zurück und versuchen Sie es in einem Moment erneut."
        ),
        "changed_meanwhile_title": "Inzwischen hat sich etwas geändert",
        "changed_meanwhile_text": (
            "Die Daten, um die es geht, haben sich während der Bearbeitung geändert; die Anfrage konnte nicht "
            "abgeschlossen werden. Bitte öffnen Sie den Link aus Ihrer E-Mail noch einmal."
        ),
        "unstorable_title": "Diese Eingabe kann nicht gespeichert werden",
        "unstorable_text": (
            "Sie enthält ein Zeichen, das nicht gespeichert werden kann. Bitte gehen Sie zurück, entfernen Sie es "
            "und versuchen Sie es erneut."
        ),
        "failed_title": "Etwas ist schiefgelaufen",
        "failed_text": (
            "Ihre Anfrage konnte nicht bearbeitet werden. Der Fehler wurde festgehalten; bitte versuchen Sie es "
            "später erneut."
        ),
    },
}

_PAGE = """<!doctype html>
<html lang="{{ lang }}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex, nofollow">
<title>{{ title }}</title>
<style>
body{font-family:system-ui,sans-serif;line-height:1.5;color:#222;background:#f6f6f6;margin:0}
main{max-width:32em;margin:3em auto;background:#fff;padding:2em;border-radius:8px}
button{font-size:1em;padding:.6em 1.2em;border:0;border-radius:6px;background:#1a5fb4;color:#fff;cursor:pointer}
label{display:block;margin:.4em 0}
</style></head>
<body><main>
<h1>{{ title }}</h1>
<p>{{ text }}</p>
{% if form %}<form method="post" action="{{ form.action }}">
{% for option in form.options %}<label><input type="radio" name="scope" value="{{ option.value }}"
{%- if option.checked %} checked{% endif %}> {{ option.label }}</label>
{% endfor %}<button type="submit">{{ form.button }}</button>
</form>{% endif %}
{% if link %}<p><a href="{{ link.href }}">{{ link.label }}</a></p>{% endif %}
{% if preferences %}<p><a href="{{ preferences.href }}">{{ preferences.label }}</a></p>{% endif %}
</main></body></html>
"""

_env = Environment(autoescape=select_autoescape(default_for_string=True, default=True))
_page_template = _env.from_string(_PAGE)


@dataclass(frozen=True, slots=True)
class Option:
    """A radio button of a page's form."""

    value: str
    label: str
    checked: bool = False


@dataclass(frozen=True, slots=True)
class Form:
    """A page's one form: POSTs to ``action``."""

    action: str
    button: str
    options: tuple[Option, ...] = ()


@dataclass(frozen=True, slots=True)
class Link:
    """A plain link on a page."""

    href: str
    label: str


def page(
    lang: str,
    name: str,
    *,
    form: Form | None = None,
    link: Link | None = None,
    preferences: str | None = None,
    **values: str,
) -> str:
    """Render page ``name`` (``confirm``, ``expired``…) in ``lang``; ``values`` fill the text's placeholders.

    ``preferences`` is the URL of the person's preference centre (``/p/via/…``), linked below the page's text.
    """
    words = PAGES[lang]
    title = words[f"{name}_title"]
    shown = Link(preferences, words["preferences_link"].format(brand=values.get("brand", ""))) if preferences else None
    return _page_template.render(
        lang=lang,
        title=title,
        text=words[f"{name}_text"].format(**values),
        form=form,
        link=link,
        preferences=shown,
    )


def word(lang: str, key: str, **values: str) -> str:
    """One phrase of the pages (button labels, options)."""
    return PAGES[lang][key].format(**values)
