"""The keyword engine for inbound SMS and WhatsApp messages (CHANNEL_RULES.md §2.2, §2.3, §3 W4/W9).

- Matching folds case (``casefold``, so ß → ss), Unicode forms (NFKC), umlauts (KÜNDIGEN ≡ KUENDIGEN),
  surrounding punctuation and emoji ("Stop!", "STOP."), and internal spaces and hyphens ("opt-out" ≡ "OPT OUT"
  ≡ OPTOUT).
- An exact single keyword matches. Precedence: opt-out beats help beats opt-in.
- A short message that is not a keyword but contains an opt-out word ("stop please", "bitte abmelden") is an
  opt-out too when ``natural_language`` is on: honouring a withdrawal is the safe side (TCPA "any reasonable
  means"). Opt-in is never inferred: it needs an exact keyword.
"""

from __future__ import annotations

import enum
import itertools
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

_FOLD = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue"})
_EDGE = re.compile(r"^[\W_]+|[\W_]+$", flags=re.UNICODE)
_JOINERS = re.compile(r"[\s\-_]+", flags=re.UNICODE)
#: Messages longer than this are not read as natural-language opt-outs (they are conversations).
NATURAL_LANGUAGE_MAX_WORDS = 5


class Intent(enum.StrEnum):
    """What an inbound message asks for."""

    OPT_OUT = "opt_out"
    HELP = "help"
    OPT_IN = "opt_in"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class KeywordSet:
    """The keywords of one language (normalised with :func:`normalise_keyword`)."""

    opt_out: frozenset[str]
    opt_in: frozenset[str]
    help: frozenset[str]

    @classmethod
    def of(cls, opt_out: Iterable[str], opt_in: Iterable[str], help_words: Iterable[str]) -> KeywordSet:
        """Build a set from words as people write them."""
        return cls(
            frozenset(map(normalise_keyword, opt_out)),
            frozenset(map(normalise_keyword, opt_in)),
            frozenset(map(normalise_keyword, help_words)),
        )


@dataclass(frozen=True, slots=True)
class Classification:
    """The engine's reading of a message."""

    intent: Intent
    keyword: str | None = None
    language: str | None = None
    purpose: str | None = None
    natural_language: bool = False
    words: tuple[str, ...] = field(default=())


def _fold(text: str) -> str:
    normalised = unicodedata.normalize("NFKC", text).casefold().translate(_FOLD)
    return "".join(ch for ch in unicodedata.normalize("NFKD", normalised) if not unicodedata.combining(ch))


def normalise_keyword(text: str) -> str:
    """The matching form of a whole message or keyword: folded, edges stripped, spaces and hyphens removed."""
    return _JOINERS.sub("", _EDGE.sub("", _fold(text).strip()))


def _words(text: str) -> tuple[str, ...]:
    return tuple(w for w in (_EDGE.sub("", part) for part in _fold(text).split()) if w)


#: Twilio's defaults (English) and a German set (no carrier standard exists in Germany; NEIN is left out:
#: it is ambiguous outside a reply to an opt-in prompt).
DEFAULT_KEYWORDS: Mapping[str, KeywordSet] = {
    "en": KeywordSet.of(
        ["STOP", "UNSUBSCRIBE", "END", "QUIT", "STOPALL", "REVOKE", "OPTOUT", "CANCEL"],
        ["START", "YES", "UNSTOP"],
        ["HELP", "INFO"],
    ),
    "de": KeywordSet.of(
        ["STOPP", "STOP", "ABMELDEN", "ABBESTELLEN", "AUSTRAGEN", "KÜNDIGEN", "STORNIEREN", "ENDE"],
        ["START", "JA", "ANMELDEN"],
        ["HILFE", "INFO", "HELP"],
    ),
}


def classify(
    body: str,
    keyword_sets: Mapping[str, KeywordSet] = DEFAULT_KEYWORDS,
    start_words: Mapping[str, str] | None = None,
    *,
    natural_language: bool = True,
) -> Classification:
    """Classify an inbound message. ``start_words`` maps a workspace's own start words to purpose keys."""
    whole = normalise_keyword(body)
    custom = {normalise_keyword(word): purpose for word, purpose in (start_words or {}).items()}
    for intent, attribute in ((Intent.OPT_OUT, "opt_out"), (Intent.HELP, "help")):
        languages = [language for language, keywords in keyword_sets.items() if whole in getattr(keywords, attribute)]
        if languages:
            return Classification(intent, keyword=whole, language=_only(languages))
    if whole in custom:
        return Classification(Intent.OPT_IN, keyword=whole, purpose=custom[whole])
    languages = [language for language, keywords in keyword_sets.items() if whole in keywords.opt_in]
    if languages:
        return Classification(Intent.OPT_IN, keyword=whole, language=_only(languages))
    words = _words(body)
    if natural_language and 0 < len(words) <= NATURAL_LANGUAGE_MAX_WORDS:
        joined = {normalise_keyword(w) for w in words} | {
            normalise_keyword(a + b)
            for a, b in itertools.pairwise(words)  # "opt out"
        }
        hits = {language: sorted(joined & keywords.opt_out) for language, keywords in keyword_sets.items()}
        languages = [language for language, hit in hits.items() if hit]
        if languages:
            return Classification(
                Intent.OPT_OUT,
                keyword=hits[languages[0]][0],
                language=_only(languages),
                natural_language=True,
                words=words,
            )
    return Classification(Intent.NONE, words=words)


def _only(languages: list[str]) -> str | None:
    """The language a keyword tells, or ``None`` when it is a word of several (START, INFO, HELP).

    The reply then takes the contact's language, else the workspace's.
    """
    return languages[0] if len(languages) == 1 else None
