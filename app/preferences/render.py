"""The words and the HTML of the preference centre, in German and English.

Plain server-rendered HTML with one stylesheet from this service: every control is a real form POST, so the page
works with JavaScript off, and there is no script at all. Every button names its purpose and channel (visibly,
or for screen readers where the row already shows it).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import Environment, FileSystemLoader, select_autoescape

from app.domain.model import Channel
from app.ledger.models import ContactPoint
from app.preferences.brand import Look
from app.preferences.service import PAUSE_WEEKS, Address, Offer, Shown, View

WORDS: dict[str, dict[str, str]] = {
    "en": {
        "language": "Language",
        "title": "Your preferences",
        "intro": "What {brand} may send you, on each channel. Each change takes effect at once.",
        "purpose": "Purpose",
        "state": "Status",
        "change": "Change",
        "stop": "Stop",
        "stop_label": "Stop {purpose} {by}",
        "no_purposes": "There is nothing on this channel that you could switch off.",
        "everything_title": "Nothing from {brand} at all",
        "everything_text": (
            "One click withdraws every marketing permission on every channel and objects to advertising by post. "
            "Messages you need for a contract (orders, invoices) still reach you."
        ),
        "everything_text_no_post": (
            "One click withdraws every marketing permission on every channel. Messages you need for a contract "
            "(orders, invoices) still reach you."
        ),
        "everything_button": "Send me nothing at all",
        "print_object_button": "Object to advertising by post",
        "print_lift": (
            "To lift an objection later, ask {brand} in writing: it is lifted only with your own signed request, "
            "since a link cannot prove that a letter reaches you."
        ),
        "done_withdraw": "Done: you will no longer receive {purpose} {by}.",
        "done_everything": "Done: {brand} will send you no more marketing on any channel.",
        "done_print": "Done: your objection to advertising by post is recorded.",
        "done_nothing": "Nothing changed: this was already switched off.",
        "opt_in_label": "Opt in again to {purpose} {by}",
        "opt_in_first_label": "Opt in to {purpose} {by}",
        "opt_in_suppressed": (
            "This address is on {brand}'s do-not-contact list (at your request, after a deletion, or because mail to "
            "it could not be delivered), which this page cannot lift: please contact {brand} if you want to receive "
            "this again."
        ),
        "done_opt_in": "Done: you receive {purpose} by email at {address} again.",
        "done_nothing_opted_in": "Nothing changed: you already receive this.",
        "optin_suppressed_title": "This page cannot lift that",
        "optin_suppressed_text": (
            "This address is on the do-not-contact list for this (at your request, after a deletion, or because "
            "mail to it could not be delivered), and this page cannot lift that. Please contact {brand} if you want "
            "to receive it again. Nothing changed."
        ),
        "own_proof_email": (
            "To receive something at this address, sign up on {brand}'s website with it: {brand} mails a "
            "confirmation link to it, and it starts once you confirm."
        ),
        "own_proof_sms": "To receive something by SMS, text {word} to {number} from this number.",
        "own_proof_phone_signup": "To receive something {by}, sign up for it with this number on {brand}'s website.",
        "own_proof_phone_signup_url": "To receive something {by}, sign up for it with this number: {url}",
        "or": " or ",
        "own_proof_whatsapp": "To receive something on WhatsApp, send {word} to {number} on WhatsApp from this number.",
        "own_proof_app_push": (
            "To receive app notifications, allow notifications for {brand}'s app (in the app or in your phone's "
            "settings)."
        ),
        "own_proof_web_push": (
            "To receive browser notifications, allow notifications in your browser on {brand}'s website."
        ),
        "pause_title": "Take a break",
        "pause_text": (
            "Pause all advertising for 1, 4 or 12 weeks: it starts again by itself when the pause ends, and you can "
            "end a pause early here. Messages you need for a contract (orders, invoices) still reach you."
        ),
        "pause_everywhere": "on all channels",
        "pause_all_row": "All channels",
        "pause_label": "How long to pause advertising {by}",
        "pause_button": "Pause advertising {by}",
        "pause_weeks_1": "1 week",
        "pause_weeks_4": "4 weeks",
        "pause_weeks_12": "12 weeks",
        "paused_state": "Paused until {until}.",
        "not_paused_state": "Not paused.",
        "partly_paused_state": "Partly paused.",
        "end_pause_button": "End the pause of advertising {by} now",
        "pause_what_one": "advertising {by}",
        "pause_what_all": "all advertising",
        "done_pause": "Done: {what} is paused until {until}. It starts again by itself.",
        "done_end_pause": "Done: the pause of {what} has ended.",
        "done_nothing_paused": "Nothing changed: this was not paused.",
        "unknown_title": "Link not found",
        "unknown_text": (
            "This link opens nothing: it is incomplete, or the data it led to has been deleted. If you copied it, "
            "please copy the whole link from the message."
        ),
        "expired_title": "This link has expired",
        "expired_text": (
            "Preference links work for 30 days. Please use the link in a newer message, or the unsubscribe link "
            "at the bottom of any email."
        ),
        "refused_title": "Please reload the page",
        "refused_text": (
            "This form could not be accepted (it came from another page or is incomplete). Nothing changed."
        ),
        "invalid_title": "This could not be changed",
        "invalid_text": "The form named something that is not yours. Nothing changed.",
        "incomplete_title": "This form is incomplete",
        "incomplete_text": "The form lacked something or is out of date: please reload the page. Nothing changed.",
        "mydata_needs_link_title": "Your data needs a link of your own",
        "mydata_needs_link_text": (
            "This page was opened from a link in a message, which others may have seen. To download or delete your "
            "data, ask for a link by email (it is mailed to your address), or ask {brand} directly."
        ),
        "mydata_request_link": "Ask for a link by email",
        "mydata_title": "Your data",
        "mydata_text": (
            "Download everything {brand} holds about you as a file (JSON), or have all of it deleted. Deleting asks "
            "you once more before anything happens."
        ),
        "mydata_export_button": "Download my data",
        "mydata_erase_button": "Delete my data …",
        "mydata_confirm_title": "Delete all your data?",
        "mydata_goes_title": "What is deleted",
        "mydata_goes_text": (
            "Everything {brand} holds about you: your addresses on every channel, your permissions, the details "
            "recorded with them (IP addresses, browser), the messages sent to you, and this link."
        ),
        "mydata_kept_title": "What is kept, and why",
        "mydata_kept_hashes": (
            "Coded fingerprints (hashes) of your addresses, not readable as addresses: so that {brand} never sends "
            "you advertising again, even if a shop or a list brings an address back."
        ),
        "mydata_kept_history": (
            "The history of your permissions without anything that identifies you, as {brand}'s proof of what was "
            "allowed when."
        ),
        "mydata_kept_record": "A note that the deletion was asked for and made, without any data about you.",
        "mydata_when_title": "When",
        "mydata_when_now": "At once. This cannot be undone.",
        "mydata_when_review": (
            "{brand} checks deletion requests before carrying them out: yours by {due} at the latest. Until then "
            "this page keeps working. This cannot be undone."
        ),
        "mydata_copy_first": "If you want a copy, download your data first.",
        "mydata_confirm_button": "Yes, delete all my data",
        "mydata_back": "No, back to my preferences",
        "mydata_erased_title": "Your data has been deleted",
        "mydata_erased_text": (
            "Everything {brand} held about you is deleted, and this link opens nothing any more. {brand} sends you "
            "no more advertising."
        ),
        "mydata_queued_title": "Your deletion request is recorded",
        "mydata_queued_text": "{brand} will delete your data by {due} at the latest.",
        Shown.RECEIVING: "You receive this.",
        Shown.CUSTOMER: "You receive this as a customer of {brand}; you may object at any time.",
        Shown.PENDING: "Waiting for your confirmation.",
        Shown.NOT_RECEIVING: "You do not receive this.",
        Shown.WITHDRAWN: "You do not receive this (switched off).",
        Shown.OBJECTED: "You objected: you receive none of this.",
        "print_" + Shown.POSTAL_ALLOWED: (
            "{brand} may send you advertising by post (legitimate interest, Art. 6(1)(f) GDPR). You can object at "
            "any time (Art. 21 GDPR)."
        ),
        "print_" + Shown.OBJECTED: "You have objected to advertising by post: {brand} sends you none.",
        "print_" + Shown.POSTAL_BLOCKED: (
            "{brand} sends no advertising by post to this address (it is blocked, for example by a “no "
            "advertising” sticker, a Robinson list or an earlier objection). You can also object yourself (Art. 21 "
            "GDPR)."
        ),
        Channel.EMAIL: "Email",
        Channel.SMS: "SMS",
        Channel.WHATSAPP: "WhatsApp",
        Channel.APP_PUSH: "App notifications",
        Channel.WEB_PUSH: "Browser notifications",
        Channel.PRINT: "Post",
        "by_" + Channel.EMAIL: "by email",
        "by_" + Channel.SMS: "by SMS",
        "by_" + Channel.WHATSAPP: "on WhatsApp",
        "by_" + Channel.APP_PUSH: "as app notifications",
        "by_" + Channel.WEB_PUSH: "as browser notifications",
        "by_" + Channel.PRINT: "by post",
    },
    "de": {
        "language": "Sprache",
        "title": "Ihre Einstellungen",
        "intro": "Was {brand} Ihnen senden darf, für jeden Kanal. Jede Änderung gilt sofort.",
        "purpose": "Zweck",
        "state": "Status",
        "change": "Ändern",
        "stop": "Abbestellen",
        "stop_label": "{purpose} {by} abbestellen",
        "no_purposes": "Auf diesem Kanal gibt es nichts, das Sie abbestellen könnten.",
        "everything_title": "Gar nichts mehr von {brand}",
        "everything_text": (
            "Ein Klick widerruft jede Werbeeinwilligung auf jedem Kanal und widerspricht Werbung per Post. "
            "Nachrichten zu einem Vertrag (Bestellungen, Rechnungen) erhalten Sie weiterhin."
        ),
        "everything_text_no_post": (
            "Ein Klick widerruft jede Werbeeinwilligung auf jedem Kanal. Nachrichten zu einem Vertrag (Bestellungen, "
            "Rechnungen) erhalten Sie weiterhin."
        ),
        "everything_button": "Nichts mehr senden",
        "print_object_button": "Werbung per Post widersprechen",
        "print_lift": (
            "Um einen Widerspruch später aufzuheben, schreiben Sie {brand}: Er wird nur auf Ihren eigenen, "
            "unterschriebenen Wunsch aufgehoben, denn ein Link beweist nicht, dass ein Brief Sie erreicht."
        ),
        "done_withdraw": "Erledigt: Sie erhalten {purpose} {by} nicht mehr.",
        "done_everything": "Erledigt: {brand} sendet Ihnen auf keinem Kanal mehr Werbung.",
        "done_print": "Erledigt: Ihr Widerspruch gegen Werbung per Post ist eingetragen.",
        "done_nothing": "Nichts geändert: Das war bereits abbestellt.",
        "opt_in_label": "{purpose} {by} wieder anmelden",
        "opt_in_first_label": "{purpose} {by} anmelden",
        "opt_in_suppressed": (
            "Diese Adresse steht auf der Sperrliste von {brand} (auf Ihren Wunsch, nach einer Löschung oder weil "
            "E-Mails an sie nicht zugestellt werden konnten), die diese Seite nicht aufheben kann: Wenden Sie sich "
            "bitte an {brand}, wenn Sie dies wieder erhalten möchten."
        ),
        "done_opt_in": "Erledigt: Sie erhalten {purpose} per E-Mail an {address} wieder.",
        "done_nothing_opted_in": "Nichts geändert: Sie erhalten dies bereits.",
        "optin_suppressed_title": "Diese Seite kann das nicht aufheben",
        "optin_suppressed_text": (
            "Diese Adresse steht dafür auf der Sperrliste (auf Ihren Wunsch, nach einer Löschung oder weil E-Mails "
            "an sie nicht zugestellt werden konnten), und diese Seite kann das nicht aufheben. Wenden Sie sich bitte "
            "an {brand}, wenn Sie es wieder erhalten möchten. Es hat sich nichts geändert."
        ),
        "own_proof_email": (
            "Um an diese Adresse etwas zu erhalten, melden Sie sich mit ihr auf der Website von {brand} an: {brand} "
            "schickt einen Bestätigungslink an die Adresse, und es beginnt, sobald Sie bestätigen."
        ),
        "own_proof_sms": "Um etwas per SMS zu erhalten, senden Sie von dieser Nummer {word} per SMS an {number}.",
        "own_proof_phone_signup": (
            "Um etwas {by} zu erhalten, melden Sie sich mit dieser Nummer auf der Website von {brand} dafür an."
        ),
        "own_proof_phone_signup_url": "Um etwas {by} zu erhalten, melden Sie sich mit dieser Nummer dafür an: {url}",
        "or": " oder ",
        "own_proof_whatsapp": (
            "Um etwas per WhatsApp zu erhalten, senden Sie von dieser Nummer {word} per WhatsApp an {number}."
        ),
        "own_proof_app_push": (
            "Um App-Mitteilungen zu erhalten, erlauben Sie Mitteilungen für die App von {brand} (in der App oder in "
            "den Einstellungen Ihres Telefons)."
        ),
        "own_proof_web_push": (
            "Um Browser-Mitteilungen zu erhalten, erlauben Sie Mitteilungen in Ihrem Browser auf der Website von "
            "{brand}."
        ),
        "pause_title": "Eine Pause einlegen",
        "pause_text": (
            "Pausieren Sie jegliche Werbung für 1, 4 oder 12 Wochen: Sie beginnt von selbst wieder, wenn die Pause "
            "endet, und Sie können eine Pause hier vorzeitig beenden. Nachrichten zu einem Vertrag (Bestellungen, "
            "Rechnungen) erhalten Sie weiterhin."
        ),
        "pause_everywhere": "auf allen Kanälen",
        "pause_all_row": "Alle Kanäle",
        "pause_label": "Wie lange Werbung {by} pausieren",
        "pause_button": "Werbung {by} pausieren",
        "pause_weeks_1": "1 Woche",
        "pause_weeks_4": "4 Wochen",
        "pause_weeks_12": "12 Wochen",
        "paused_state": "Pausiert bis {until}.",
        "not_paused_state": "Nicht pausiert.",
        "partly_paused_state": "Teilweise pausiert.",
        "end_pause_button": "Pause der Werbung {by} jetzt beenden",
        "pause_what_one": "Werbung {by}",
        "pause_what_all": "jegliche Werbung",
        "done_pause": "Erledigt: {what} ist bis {until} pausiert. Sie beginnt danach von selbst wieder.",
        "done_end_pause": "Erledigt: Die Pause für {what} ist beendet.",
        "done_nothing_paused": "Nichts geändert: Das war nicht pausiert.",
        "unknown_title": "Link nicht gefunden",
        "unknown_text": (
            "Dieser Link öffnet nichts: Er ist unvollständig, oder die Daten, zu denen er führte, wurden gelöscht. "
            "Wenn Sie ihn kopiert haben, kopieren Sie bitte den ganzen Link aus der Nachricht."
        ),
        "expired_title": "Dieser Link ist abgelaufen",
        "expired_text": (
            "Einstellungslinks gelten 30 Tage. Bitte verwenden Sie den Link aus einer neueren Nachricht oder den "
            "Abmeldelink am Ende jeder E-Mail."
        ),
        "refused_title": "Bitte laden Sie die Seite neu",
        "refused_text": (
            "Dieses Formular wurde nicht angenommen (es kam von einer anderen Seite oder ist unvollständig). "
            "Es hat sich nichts geändert."
        ),
        "invalid_title": "Das ließ sich nicht ändern",
        "invalid_text": "Das Formular nannte etwas, das nicht Ihres ist. Es hat sich nichts geändert.",
        "incomplete_title": "Das Formular ist unvollständig",
        "incomplete_text": (
            "Dem Formular fehlte etwas, oder es ist veraltet: Bitte laden Sie die Seite neu. Es hat sich nichts "
            "geändert."
        ),
        "mydata_needs_link_title": "Für Ihre Daten brauchen Sie einen eigenen Link",
        "mydata_request_link": "Link per E-Mail anfordern",
        "mydata_needs_link_text": (
            "Diese Seite wurde über einen Link in einer Nachricht geöffnet, die auch andere gesehen haben können. Um "
            "Ihre Daten herunterzuladen oder zu löschen, fordern Sie einen Link per E-Mail an (er wird an Ihre "
            "Adresse geschickt), oder wenden Sie sich direkt an {brand}."
        ),
        "mydata_title": "Ihre Daten",
        "mydata_text": (
            "Laden Sie alles, was {brand} über Sie gespeichert hat, als Datei (JSON) herunter, oder lassen Sie alles "
            "löschen. Vor dem Löschen fragen wir Sie noch einmal."
        ),
        "mydata_export_button": "Meine Daten herunterladen",
        "mydata_erase_button": "Meine Daten löschen …",
        "mydata_confirm_title": "Alle Ihre Daten löschen?",
        "mydata_goes_title": "Was gelöscht wird",
        "mydata_goes_text": (
            "Alles, was {brand} über Sie gespeichert hat: Ihre Adressen auf jedem Kanal, Ihre Einwilligungen, die "
            "dazu erfassten Angaben (IP-Adressen, Browser), die Nachrichten an Sie und dieser Link."
        ),
        "mydata_kept_title": "Was bleibt, und warum",
        "mydata_kept_hashes": (
            "Unumkehrbare Prüfwerte (Hashes) Ihrer Adressen, die sich nicht als Adressen lesen lassen: damit "
            "{brand} Ihnen nie wieder Werbung sendet, auch wenn ein Shop oder eine Liste eine Adresse zurückbringt."
        ),
        "mydata_kept_history": (
            "Der Verlauf Ihrer Einwilligungen ohne alles, was Sie erkennbar macht, als Nachweis für {brand}, was "
            "wann erlaubt war."
        ),
        "mydata_kept_record": "Ein Vermerk, dass die Löschung verlangt und ausgeführt wurde, ohne Daten über Sie.",
        "mydata_when_title": "Wann",
        "mydata_when_now": "Sofort. Das lässt sich nicht rückgängig machen.",
        "mydata_when_review": (
            "{brand} prüft Löschanträge, bevor sie ausgeführt werden: Ihren spätestens bis {due}. Bis dahin "
            "funktioniert diese Seite weiter. Das lässt sich nicht rückgängig machen."
        ),
        "mydata_copy_first": "Wenn Sie eine Kopie möchten, laden Sie Ihre Daten zuerst herunter.",
        "mydata_confirm_button": "Ja, alle meine Daten löschen",
        "mydata_back": "Nein, zurück zu meinen Einstellungen",
        "mydata_erased_title": "Ihre Daten sind gelöscht",
        "mydata_erased_text": (
            "Alles, was {brand} über Sie gespeichert hatte, ist gelöscht, und dieser Link öffnet nichts mehr. "
            "{brand} sendet Ihnen keine Werbung mehr."
        ),
        "mydata_queued_title": "Ihr Löschantrag ist eingegangen",
        "mydata_queued_text": "{brand} löscht Ihre Daten spätestens bis {due}.",
        Shown.RECEIVING: "Sie erhalten dies.",
        Shown.CUSTOMER: "Sie erhalten dies als Kunde von {brand}; Sie können jederzeit widersprechen.",
        Shown.PENDING: "Wartet auf Ihre Bestätigung.",
        Shown.NOT_RECEIVING: "Sie erhalten dies nicht.",
        Shown.WITHDRAWN: "Sie erhalten dies nicht (abbestellt).",
        Shown.OBJECTED: "Sie haben widersprochen: Sie erhalten nichts davon.",
        "print_" + Shown.POSTAL_ALLOWED: (
            "{brand} darf Ihnen Werbung per Post senden (berechtigtes Interesse, Art. 6 Abs. 1 lit. f DSGVO). "
            "Sie können jederzeit widersprechen (Art. 21 DSGVO)."
        ),
        "print_" + Shown.OBJECTED: "Sie haben Werbung per Post widersprochen: {brand} sendet Ihnen keine.",
        "print_" + Shown.POSTAL_BLOCKED: (
            "{brand} sendet an diese Anschrift keine Werbung per Post (sie ist gesperrt, etwa durch einen Aufkleber "
            "„Keine Werbung“, eine Robinsonliste oder einen früheren Widerspruch). Sie können auch selbst "
            "widersprechen (Art. 21 DSGVO)."
        ),
        Channel.EMAIL: "E-Mail",
        Channel.SMS: "SMS",
        Channel.WHATSAPP: "WhatsApp",
        Channel.APP_PUSH: "App-Mitteilungen",
        Channel.WEB_PUSH: "Browser-Mitteilungen",
        Channel.PRINT: "Post",
        "by_" + Channel.EMAIL: "per E-Mail",
        "by_" + Channel.SMS: "per SMS",
        "by_" + Channel.WHATSAPP: "per WhatsApp",
        "by_" + Channel.APP_PUSH: "als App-Mitteilung",
        "by_" + Channel.WEB_PUSH: "als Browser-Mitteilung",
        "by_" + Channel.PRINT: "per Post",
    },
}


def word(lang: str, key: str, **values: str) -> str:
    """One phrase in ``lang``, its placeholders filled."""
    return WORDS[lang][key].format(**values)


_MONTHS = {
    "en": ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"),
    "de": ("Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September", "Oktober",
           "November", "Dezember"),
}  # fmt: skip


def date(lang: str, moment: datetime, timezone: str = "UTC") -> str:
    """A day in words, on the person's clock: "3 January 2027", "3. Januar 2027"."""
    try:
        zone = ZoneInfo(timezone)
    except (ValueError, ZoneInfoNotFoundError):  # a zone stored before it was checked: the day in UTC
        zone = ZoneInfo("UTC")
    local = moment.astimezone(zone)
    month = _MONTHS[lang][local.month - 1]
    return f"{local.day}. {month} {local.year}" if lang == "de" else f"{local.day} {month} {local.year}"


def how_to_opt_in(view: View, address: Address) -> str | None:
    """How to opt ``address`` in with its channel's own proof, in words; ``None`` where there is nothing true to say.

    SMS and WhatsApp: the words a text from this number opts in with, for the purposes shown here that need one
    (only where the workspace takes a start word without a pending signup), else its signup page; nothing where
    the workspace gave no number. Print is not here: it needs no opt-in, and lifting an objection is explained
    beside it (``print_lift``).
    """
    channel = address.channel
    if channel is Channel.PRINT:
        return None
    if channel is not Channel.SMS and channel is not Channel.WHATSAPP:
        return word(view.lang, "own_proof_" + channel, brand=view.brand)
    number = view.sms_from if channel is Channel.SMS else view.whatsapp_from
    if not number:
        return None
    needing = [row.purpose for row in address.rows if row.offer is Offer.OWN_PROOF]
    words = [(view.start_words[p.key], p.name) for p in needing if p.key in view.start_words]
    if words:
        said = word(view.lang, "or").join(f"{text} ({name})" if len(words) > 1 else text for text, name in words)
        return word(view.lang, "own_proof_" + channel, word=said, number=number)
    by = word(view.lang, "by_" + channel)
    if view.phone_signup_url:
        return word(view.lang, "own_proof_phone_signup_url", by=by, brand=view.brand, url=view.phone_signup_url)
    return word(view.lang, "own_proof_phone_signup", by=by, brand=view.brand)


def paused_what(lang: str, points: Sequence[ContactPoint]) -> str:
    """What a pause covers, in words: advertising on one channel, or all advertising."""
    channels = {Channel(p.channel) for p in points}
    if len(channels) == 1:
        [channel] = channels
        return word(lang, "pause_what_one", by=word(lang, "by_" + channel))
    return word(lang, "pause_what_all")


@cache
def _templates() -> Environment:
    return Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape(), auto_reload=False
    )


def preferences_page(
    view: View, *, action: str, form_token: str, notice: str | None = None, look: Look | None = None
) -> str:
    """The page: every address with its purposes and their state, and the forms that change them.

    ``look``: the workspace's logo and colour stylesheet (:mod:`app.preferences.brand`); ``None``: the name only.
    """
    lang = view.lang

    def say(key: str, **values: Any) -> str:
        return word(lang, key, brand=view.brand, **values)

    def day(moment: datetime) -> str:
        return date(lang, moment, view.timezone)

    return (
        _templates()
        .get_template("preferences.html")
        .render(
            view=view,
            lang=lang,
            say=say,
            day=day,
            action=action,
            form_token=form_token,
            notice=notice,
            look=look,
            Channel=Channel,
            pause_weeks=PAUSE_WEEKS,
            how_to_opt_in=lambda address: how_to_opt_in(view, address),
        )
    )


def message_page(lang: str, name: str, *, brand: str = "") -> str:
    """A page with a title and one paragraph (unknown or expired link, refused form)."""
    return (
        _templates()
        .get_template("message.html")
        .render(lang=lang, title=word(lang, f"{name}_title"), text=word(lang, f"{name}_text", brand=brand))
    )
