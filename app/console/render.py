"""The words and the HTML of the console, in German and English.

Server-rendered pages with one stylesheet and one script from this service (and the vendored Chart.js): every
figure is an HTML table first, which the script turns into a chart beside it; with JavaScript off the tables and
every form still work.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from app.console.service import event_cause
from app.domain.model import Channel

DASH = "\N{EN DASH}"  # an empty cell

WORDS: dict[str, dict[str, str]] = {
    "en": {
        "console": "Consent console",
        "language": "Language",
        "nav": "Console",
        "overview": "Overview",
        "contacts": "Contacts",
        "audit": "Audit",
        "sign_out": "Sign out",
        "skip": "Skip to content",
        "workspace": "Workspace",
        "signed_in_as": "Signed in with key {key_id}",
        "login_title": "Sign in to the console",
        "login_text": "This link signs you in once, for the workspace of the API key that created it.",
        "login_button": "Sign in",
        "login_unknown": "This sign-in link is not valid. Create a new one with the API or the consent command.",
        "login_used": "This sign-in link was already used. Each link works once: create a new one.",
        "login_expired": "This sign-in link has expired (links work for 10 minutes). Create a new one.",
        "login_refused": "The sign-in did not work: the link is used, expired or its key was revoked.",
        "signed_out_title": "Please sign in",
        "signed_out_text": (
            "You are not signed in, or your session ended (8 hours without use, sign-out, or the API key was "
            "revoked). Open a new sign-in link: POST /v1/console-links or 'consent console-link'."
        ),
        "refused_title": "The form was not accepted",
        "refused_text": "It came from another page or its token is missing. Reload the page and try again.",
        "forbidden_title": "Not allowed",
        "forbidden_text": "This needs an API key with the 'admin' scope.",
        "period": "Period",
        "from": "From",
        "to": "To",
        "show": "Show",
        "purpose_filter": "Purpose",
        "every_purpose": "All purposes",
        "campaign_filter": "Campaign",
        "campaign_hint": "A campaign label of the messages (blank: all). With a campaign, the figures are its "
        "messages and the opt-outs they caused; audience figures are not kept per campaign.",
        "channel": "Channel",
        "metric": "Figure",
        "audience": "Opted-in audience (end of period)",
        "eligible": "Eligible (each address once per purpose; the period's last count, taken every 15 minutes)",
        "opt_ins": "Opt-ins",
        "opt_outs": "Opt-outs",
        "net_growth": "Net growth",
        "signups": "Double opt-in started",
        "confirmations": "Confirmed",
        "confirmation_rate": "DOI confirmation rate",
        "sent": "Sent",
        "delivered": "Delivered",
        "failed": "Failed",
        "bounced": "Bounced",
        "complaints": "Complaints",
        "opened": "Opened (where measured)",
        "clicked": "Clicked (where measured)",
        "delivery_rate": "Delivery rate",
        "channels_title": "The six channels side by side",
        "audience_title": "Opted-in audience per day",
        "reasons_title": "Opt-outs by cause",
        "funnel_title": "Double opt-in funnel",
        "delivery_title": "Deliverability",
        "day": "Day",
        "cause": "Cause",
        "no_opt_outs": "No opt-outs in this period.",
        "csv": "Download CSV",
        "csv_of": "Download “{what}” as CSV",
        "chart_note": "Chart of the table below.",
        "none": DASH,
        "lookup_title": "Find a contact",
        "lookup_label": "Contact id, external id, email address or phone number",
        "lookup_button": "Find",
        "not_found": "No contact matches “{q}” in this workspace.",
        "contact": "Contact",
        "contact_id": "Contact id",
        "external_id": "External id",
        "locale": "Language",
        "created": "Created",
        "addresses": "Addresses",
        "address": "Address",
        "reachability": "Reachability",
        "verified": "Verified",
        "consents": "Consents",
        "purpose": "Purpose",
        "all_purposes": "every marketing purpose",
        "state": "State",
        "legal_basis": "Legal basis",
        "since": "Since",
        "timeline": "Ledger timeline",
        "when": "When",
        "trigger": "Trigger",
        "change": "Change",
        "actor": "By",
        "evidence": "Evidence",
        "messages": "Messages",
        "status": "Status",
        "route": "Route",
        "deliveries": "Deliveries",
        "nothing": "None.",
        "export_button": "Download Art. 15 export (JSON)",
        "erase_button": "Erase this contact (Art. 17)…",
        "erase_title": "Erase contact {id}?",
        "erase_text": (
            "The contact, its addresses, consents, tokens and messages are deleted. Kept: suppression keys (hashes) "
            "so the addresses are not marketed to again, the ledger without evidence, and a record of the erasure. "
            "This cannot be undone."
        ),
        "request_ref": "Your reference of the request (ticket number, optional)",
        "confirm_erase": "I confirm that this person asked for erasure",
        "erase_confirm_button": "Erase now",
        "cancel": "Cancel",
        "erased_title": "Contact erased",
        "erased_text": "Erasure {id} at {at}: {count} rows deleted.",
        "erase_unconfirmed": "Tick the confirmation to erase.",
        "chain_title": "Ledger chain",
        "chain_valid": "Verified: all {n} events hold.",
        "chain_broken": "BROKEN at event {seq}: {reason}",
        "chain_never": "The chain has not been verified from the console yet.",
        "checked_at": "Last check: {at}",
        "verify_button": "Verify the chain now",
        "stream_title": "Audit stream",
        "stream_text": "Every ledger event recorded in the period, with what its hash covers (verifiable on its own).",
        "requests_title": "Pending erasure requests",
        "requests_text": (
            "Asked for by the person on the preference centre while the workspace reviews erasures "
            "(setting erasure_review). Each must be executed or rejected by its due date, one month after the "
            "request: with an admin key, POST /v1/erasure-requests/{id}/execute or …/reject."
        ),
        "requests_none": "No erasure request is waiting.",
        "requests_caption": "Erasure requests waiting for a decision, earliest due first",
        "request_contact": "Contact",
        "request_asked": "Asked",
        "request_due": "Due",
        "request_overdue": "overdue",
        "format": "Format",
        "download": "Download",
        "invalid_title": "This could not be shown",
    },
    "de": {
        "console": "Einwilligungs-Konsole",
        "language": "Sprache",
        "nav": "Konsole",
        "overview": "Überblick",
        "contacts": "Kontakte",
        "audit": "Prüfung",
        "sign_out": "Abmelden",
        "skip": "Zum Inhalt springen",
        "workspace": "Arbeitsbereich",
        "signed_in_as": "Angemeldet mit Schlüssel {key_id}",
        "login_title": "Bei der Konsole anmelden",
        "login_text": (
            "Dieser Link meldet Sie einmal an, für den Arbeitsbereich des API-Schlüssels, der ihn erzeugt hat."
        ),
        "login_button": "Anmelden",
        "login_unknown": (
            "Dieser Anmeldelink ist ungültig. Erzeugen Sie einen neuen über die API oder den consent-Befehl."
        ),
        "login_used": "Dieser Anmeldelink wurde schon benutzt. Jeder Link gilt einmal: Erzeugen Sie einen neuen.",
        "login_expired": "Dieser Anmeldelink ist abgelaufen (Links gelten 10 Minuten). Erzeugen Sie einen neuen.",
        "login_refused": (
            "Die Anmeldung hat nicht geklappt: Der Link ist benutzt, abgelaufen oder sein Schlüssel widerrufen."
        ),
        "signed_out_title": "Bitte melden Sie sich an",
        "signed_out_text": (
            "Sie sind nicht angemeldet oder Ihre Sitzung ist beendet (8 Stunden ohne Nutzung, Abmeldung oder der "
            "API-Schlüssel wurde widerrufen). Öffnen Sie einen neuen Anmeldelink: POST /v1/console-links oder "
            "'consent console-link'."
        ),
        "refused_title": "Das Formular wurde nicht angenommen",
        "refused_text": "Es kam von einer anderen Seite oder ihm fehlt das Token. Laden Sie die Seite neu.",
        "forbidden_title": "Nicht erlaubt",
        "forbidden_text": "Dafür braucht es einen API-Schlüssel mit dem Recht 'admin'.",
        "period": "Zeitraum",
        "from": "Von",
        "to": "Bis",
        "show": "Anzeigen",
        "purpose_filter": "Zweck",
        "every_purpose": "Alle Zwecke",
        "campaign_filter": "Kampagne",
        "campaign_hint": "Die Kampagnen-Kennung der Nachrichten (leer: alle). Mit einer Kampagne zeigen die Zahlen "
        "ihre Nachrichten und die Abmeldungen, die sie ausgelöst haben; Empfängerzahlen gibt es nicht je Kampagne.",
        "channel": "Kanal",
        "metric": "Kennzahl",
        "audience": "Eingewilligte Empfänger (Ende des Zeitraums)",
        "eligible": "Erreichbar und erlaubt (je Adresse und Zweck; letzte Zählung im Zeitraum, alle 15 Minuten)",
        "opt_ins": "Einwilligungen",
        "opt_outs": "Abmeldungen",
        "net_growth": "Nettozuwachs",
        "signups": "Double-Opt-in begonnen",
        "confirmations": "Bestätigt",
        "confirmation_rate": "DOI-Bestätigungsquote",
        "sent": "Gesendet",
        "delivered": "Zugestellt",
        "failed": "Fehlgeschlagen",
        "bounced": "Unzustellbar",
        "complaints": "Beschwerden",
        "opened": "Geöffnet (wo messbar)",
        "clicked": "Geklickt (wo messbar)",
        "delivery_rate": "Zustellquote",
        "channels_title": "Die sechs Kanäle im Vergleich",
        "audience_title": "Eingewilligte Empfänger pro Tag",
        "reasons_title": "Abmeldungen nach Ursache",
        "funnel_title": "Double-Opt-in-Trichter",
        "delivery_title": "Zustellbarkeit",
        "day": "Tag",
        "cause": "Ursache",
        "no_opt_outs": "Keine Abmeldungen in diesem Zeitraum.",
        "csv": "CSV herunterladen",
        "csv_of": "„{what}“ als CSV herunterladen",
        "chart_note": "Diagramm der Tabelle darunter.",
        "none": DASH,
        "lookup_title": "Kontakt suchen",
        "lookup_label": "Kontakt-ID, externe ID, E-Mail-Adresse oder Telefonnummer",
        "lookup_button": "Suchen",
        "not_found": "Kein Kontakt in diesem Arbeitsbereich passt zu „{q}“.",
        "contact": "Kontakt",
        "contact_id": "Kontakt-ID",
        "external_id": "Externe ID",
        "locale": "Sprache",
        "created": "Angelegt",
        "addresses": "Adressen",
        "address": "Adresse",
        "reachability": "Erreichbarkeit",
        "verified": "Bestätigt",
        "consents": "Einwilligungen",
        "purpose": "Zweck",
        "all_purposes": "alle Werbezwecke",
        "state": "Status",
        "legal_basis": "Rechtsgrundlage",
        "since": "Seit",
        "timeline": "Verlauf im Ledger",
        "when": "Wann",
        "trigger": "Auslöser",
        "change": "Änderung",
        "actor": "Durch",
        "evidence": "Nachweis",
        "messages": "Nachrichten",
        "status": "Status",
        "route": "Route",
        "deliveries": "Zustellungen",
        "nothing": "Keine.",
        "export_button": "Auskunft nach Art. 15 herunterladen (JSON)",
        "erase_button": "Diesen Kontakt löschen (Art. 17)…",
        "erase_title": "Kontakt {id} löschen?",
        "erase_text": (
            "Der Kontakt, seine Adressen, Einwilligungen, Tokens und Nachrichten werden gelöscht. Es bleiben: "
            "Sperrschlüssel (Hashes), damit die Adressen nicht wieder beworben werden, das Ledger ohne Nachweise und "
            "ein Protokoll der Löschung. Das lässt sich nicht rückgängig machen."
        ),
        "request_ref": "Ihr Zeichen der Anfrage (Ticketnummer, freiwillig)",
        "confirm_erase": "Ich bestätige, dass die Person die Löschung verlangt hat",
        "erase_confirm_button": "Jetzt löschen",
        "cancel": "Abbrechen",
        "erased_title": "Kontakt gelöscht",
        "erased_text": "Löschung {id} am {at}: {count} Zeilen gelöscht.",
        "erase_unconfirmed": "Setzen Sie das Häkchen zur Bestätigung.",
        "chain_title": "Hash-Kette des Ledgers",
        "chain_valid": "Geprüft: Alle {n} Ereignisse sind unverändert.",
        "chain_broken": "GEBROCHEN bei Ereignis {seq}: {reason}",
        "chain_never": "Die Kette wurde in der Konsole noch nicht geprüft.",
        "checked_at": "Letzte Prüfung: {at}",
        "verify_button": "Kette jetzt prüfen",
        "stream_title": "Prüfprotokoll",
        "requests_title": "Offene Löschanfragen",
        "requests_text": (
            "Von der Person im Präferenzzentrum gestellt, während der Workspace Löschungen prüft (Einstellung "
            "erasure_review). Jede muss bis zur Frist, einen Monat nach der Anfrage, ausgeführt oder abgelehnt "
            "werden: mit einem Admin-Schlüssel, POST /v1/erasure-requests/{id}/execute oder …/reject."
        ),
        "requests_none": "Keine Löschanfrage wartet.",
        "requests_caption": "Löschanfragen, die auf eine Entscheidung warten, früheste Frist zuerst",
        "request_contact": "Kontakt",
        "request_asked": "Gestellt",
        "request_due": "Frist",
        "request_overdue": "überfällig",
        "stream_text": (
            "Jedes im Zeitraum erfasste Ledger-Ereignis mit allem, was sein Hash abdeckt (für sich prüfbar)."
        ),
        "format": "Format",
        "download": "Herunterladen",
        "invalid_title": "Das ließ sich nicht anzeigen",
    },
}
CHANNEL_NAMES = {
    "en": {
        Channel.EMAIL: "Email",
        Channel.SMS: "SMS",
        Channel.WHATSAPP: "WhatsApp",
        Channel.APP_PUSH: "App push",
        Channel.WEB_PUSH: "Web push",
        Channel.PRINT: "Print",
    },
    "de": {
        Channel.EMAIL: "E-Mail",
        Channel.SMS: "SMS",
        Channel.WHATSAPP: "WhatsApp",
        Channel.APP_PUSH: "App-Push",
        Channel.WEB_PUSH: "Web-Push",
        Channel.PRINT: "Post",
    },
}
TRIGGER_NAMES = {
    "en": {
        "signup": "Signup",
        "confirm": "Confirmed",
        "start_word": "START word",
        "permission_granted": "Permission granted",
        "lapse": "Confirmation lapsed",
        "stop_word": "STOP word",
        "unsubscribe": "Unsubscribe link",
        "complaint": "Complaint",
        "provider_block": "Provider block",
        "objection": "Objection",
        "erasure": "Erasure",
        "permission_revoked": "Permission revoked",
        "permission_denied": "Permission denied",
        "uninstalled": "Uninstalled",
        "provider_gone": "Token gone",
        "robinson_match": "Robinson list",
        "import": "Import",
        "resend": "Confirmation sent again",
        "objection_withdrawn": "Objection lifted",
        "validity_ended": "Validity ended",
        "merged": "Contacts merged",
        "pause": "Paused",
        "pause_ended": "Pause ended",
        "preference_opt_in": "Opt-in on the preference page",
        "reassigned": "Number reassigned",
        "purchase": "Purchase (existing customer)",
        "renewed": "Renewed (kept subscribed)",
        # the overview's opt-out causes besides the triggers: an unsubscribe that came another way than a mail's link
        "unsubscribe_one_click": "One-click unsubscribe in the mail program",
        "unsubscribe_preference_centre": "Preference centre",
        "unsubscribe_api": "Withdrawn through the API",
        "unsubscribe_other": "Unsubscribe, way not recorded",
    },
    "de": {
        "signup": "Anmeldung",
        "confirm": "Bestätigt",
        "start_word": "START-Wort",
        "permission_granted": "Erlaubnis erteilt",
        "lapse": "Bestätigung verfallen",
        "stop_word": "STOP-Wort",
        "unsubscribe": "Abmeldelink",
        "complaint": "Beschwerde",
        "provider_block": "Sperre beim Anbieter",
        "objection": "Widerspruch",
        "erasure": "Löschung",
        "permission_revoked": "Erlaubnis widerrufen",
        "permission_denied": "Erlaubnis verweigert",
        "uninstalled": "Deinstalliert",
        "provider_gone": "Token ungültig",
        "robinson_match": "Robinsonliste",
        "import": "Import",
        "resend": "Bestätigung erneut gesendet",
        "objection_withdrawn": "Widerspruch aufgehoben",
        "validity_ended": "Gültigkeit abgelaufen",
        "merged": "Kontakte zusammengeführt",
        "pause": "Pausiert",
        "pause_ended": "Pause beendet",
        "preference_opt_in": "Anmeldung auf der Einstellungsseite",
        "reassigned": "Nummer neu vergeben",
        "purchase": "Kauf (Bestandskunde)",
        "renewed": "Verlängert (angemeldet geblieben)",
        "unsubscribe_one_click": "Abmeldung mit einem Klick im Mailprogramm",
        "unsubscribe_preference_centre": "Präferenzzentrum",
        "unsubscribe_api": "Widerruf über die API",
        "unsubscribe_other": "Abmeldung, Weg nicht erfasst",
    },
}


def say(lang: str, key: str, **values: object) -> str:
    """A phrase in ``lang`` with ``values`` filled in."""
    text = WORDS[lang].get(key) or WORDS["en"].get(key) or key
    return text.format(**values) if values else text


@cache
def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        auto_reload=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def page(template: str, lang: str, **context: Any) -> str:
    """Render ``templates/<template>`` in ``lang``."""

    def phrase(key: str, **values: object) -> str:
        return say(lang, key, **values)

    def channel_name(channel: str | None) -> str:
        names: dict[str, str] = {str(c): name for c, name in CHANNEL_NAMES[lang].items()}
        return names.get(channel or "", channel or DASH)

    def trigger_name(trigger: str) -> str:
        return TRIGGER_NAMES[lang].get(trigger, trigger.replace("_", " "))

    def event_name(event: Any) -> str:
        return trigger_name(event_cause(event.trigger, event.actor_type, event.actor_id, event.evidence))

    def number(value: float | None) -> str:
        if value is None:
            return DASH
        return f"{value:,.0f}".replace(",", "." if lang == "de" else ",")

    def percent(value: float | None) -> str:
        if value is None:
            return DASH
        text = f"{value * 100:.1f} %"
        return text.replace(".", ",") if lang == "de" else text

    return (
        _environment()
        .get_template(template)
        .render(
            lang=lang,
            say=phrase,
            channel_name=channel_name,
            trigger_name=trigger_name,
            event_name=event_name,
            number=number,
            percent=percent,
            **context,
        )
    )
