"""Every default keyword, per language, with the language its reply goes out in (CHANNEL_RULES.md §2.2, §2.3).

The lists are written out here from CHANNEL_RULES.md: Twilio's defaults for English, the recommended DACH set
for German (NEIN left out: ambiguous outside a reply to an opt-in prompt). A word in both lists (STOP, START,
INFO, HELP) tells no language: its reply goes out in the contact's language, else the workspace's.
"""

from __future__ import annotations

import pytest

from app.domain.keywords import (
    DEFAULT_KEYWORDS,
    NATURAL_LANGUAGE_MAX_WORDS,
    Classification,
    Intent,
    KeywordSet,
    classify,
    normalise_keyword,
)

ENGLISH = {
    Intent.OPT_OUT: ["STOP", "UNSUBSCRIBE", "END", "QUIT", "STOPALL", "REVOKE", "OPTOUT", "CANCEL"],
    Intent.OPT_IN: ["START", "YES", "UNSTOP"],
    Intent.HELP: ["HELP", "INFO"],
}
GERMAN = {
    Intent.OPT_OUT: ["STOPP", "STOP", "ABMELDEN", "ABBESTELLEN", "AUSTRAGEN", "KÜNDIGEN", "STORNIEREN", "ENDE"],
    Intent.OPT_IN: ["START", "JA", "ANMELDEN"],
    Intent.HELP: ["HILFE", "INFO", "HELP"],
}
ATTRIBUTE = {Intent.OPT_OUT: "opt_out", Intent.OPT_IN: "opt_in", Intent.HELP: "help"}
EVERY_WORD = [
    (
        intent,
        word,
        None if word in ENGLISH[intent] and word in GERMAN[intent] else "en" if word in ENGLISH[intent] else "de",
    )
    for intent in ATTRIBUTE
    for word in dict.fromkeys(ENGLISH[intent] + GERMAN[intent])
]


def matching_form(word: str) -> str:
    return word.lower().replace("ü", "ue")


@pytest.mark.parametrize(("language", "words"), [("en", ENGLISH), ("de", GERMAN)])
def test_the_default_lists_are_exactly_the_documented_words(language, words):
    assert list(DEFAULT_KEYWORDS) == ["en", "de"], "English is asked first"
    keywords = DEFAULT_KEYWORDS[language]
    for intent, attribute in ATTRIBUTE.items():
        assert getattr(keywords, attribute) == {matching_form(w) for w in words[intent]}, (language, intent)


@pytest.mark.parametrize(("intent", "word", "language"), EVERY_WORD)
def test_every_default_keyword_is_recognised_and_answered_in_its_language(intent, word, language):
    assert classify(word) == Classification(intent, keyword=matching_form(word), language=language)


@pytest.mark.parametrize(("language", "words"), [("en", ENGLISH), ("de", GERMAN)])
def test_each_language_on_its_own_recognises_all_of_its_words(language, words):
    alone = {language: DEFAULT_KEYWORDS[language]}
    for intent, listed in words.items():
        for word in listed:
            assert classify(word, alone) == Classification(intent, keyword=matching_form(word), language=language)


def test_a_word_of_both_languages_tells_none_and_a_word_of_one_tells_it():
    assert (classify("STOP").language, classify("HELP").language, classify("START").language) == (None, None, None)
    assert (classify("STOPP").language, classify("HILFE").language, classify("JA").language) == ("de", "de", "de")
    assert (classify("UNSUBSCRIBE").language, classify("YES").language) == ("en", "en")


@pytest.mark.parametrize(
    ("written", "matching"),
    [
        ("KÜNDIGEN", "kuendigen"),
        ("kündigen", "kuendigen"),
        ("ÄNDERN", "aendern"),
        ("ändern", "aendern"),
        ("LÖSCHEN", "loeschen"),
        ("löschen", "loeschen"),
        ("STRAßE", "strasse"),  # casefold: ß is ss
        ("\uff33\uff34\uff2f\uff30", "stop"),  # NFKC: full-width letters
        ("café", "cafe"),  # other accents are dropped
        ("  «Stop!»  ", "stop"),  # punctuation at the edges
        ("opt-out", "optout"),
        ("opt_out", "optout"),
        ("OPT  OUT", "optout"),
        ("🙏 stop 🙏", "stop"),
        ("", ""),
    ],
)
def test_normalisation_folds_case_umlauts_accents_forms_edges_and_joiners(written, matching):
    assert normalise_keyword(written) == matching


def test_workspace_words_are_folded_the_same_way():
    own = KeywordSet.of(["Löschen"], ["Ändern"], ["Hülfe"])
    assert (own.opt_out, own.opt_in, own.help) == ({"loeschen"}, {"aendern"}, {"huelfe"})
    assert classify("LOESCHEN", {"de": own}) == Classification(Intent.OPT_OUT, keyword="loeschen", language="de")
    assert classify("aendern", {"de": own}).intent is Intent.OPT_IN
    assert classify("HÜLFE", {"de": own}).intent is Intent.HELP


def test_opt_out_beats_help_beats_opt_in_across_languages():
    sets = {"a": KeywordSet.of([], ["X"], ["Y"]), "b": KeywordSet.of(["X", "Y"], [], [])}
    assert classify("x", sets) == Classification(Intent.OPT_OUT, keyword="x", language="b")
    assert classify("y", sets) == Classification(Intent.OPT_OUT, keyword="y", language="b")
    help_first = {"a": KeywordSet.of([], ["Z"], []), "b": KeywordSet.of([], [], ["Z"])}
    assert classify("z", help_first) == Classification(Intent.HELP, keyword="z", language="b")


def test_a_start_word_of_the_workspace_beats_the_default_opt_in_but_not_opt_out_or_help():
    assert classify("yes", start_words={"YES": "offers"}) == Classification(
        Intent.OPT_IN, keyword="yes", purpose="offers"
    )
    assert classify("Neuigkeiten!", start_words={"NEUIGKEITEN": "news"}).purpose == "news"
    assert classify("help", start_words={"HELP": "news"}).intent is Intent.HELP
    assert classify("stop", start_words={"STOP": "news"}).intent is Intent.OPT_OUT
    assert classify("news", start_words=None).intent is Intent.NONE


def five_words(keyword: str) -> str:
    return " ".join(["please", "just", "do", "it", keyword][-NATURAL_LANGUAGE_MAX_WORDS:])


def test_up_to_five_words_asking_to_stop_are_an_opt_out_and_six_are_a_conversation():
    assert NATURAL_LANGUAGE_MAX_WORDS == 5
    five = classify("please just do it stop")
    assert five == Classification(
        Intent.OPT_OUT,
        keyword="stop",
        language=None,  # a word of both lists
        natural_language=True,
        words=("please", "just", "do", "it", "stop"),
    )
    six = classify("please could you just stop it")
    assert six == Classification(Intent.NONE, words=("please", "could", "you", "just", "stop", "it"))


def test_natural_language_reads_two_words_as_one_and_names_the_first_keyword_found():
    assert classify("please opt out").keyword == "optout"
    assert classify("bitte abmelden und stopp").keyword == "abmelden"  # sorted: the first in order
    assert classify("bitte abmelden und stopp").language == "de"
    assert classify("cancel it now").language == "en"
    assert classify("stop please", natural_language=False) == Classification(Intent.NONE, words=("stop", "please"))


def test_natural_language_never_opts_in_or_asks_for_help():
    assert classify("yes please").intent is Intent.NONE
    assert classify("help me please").intent is Intent.NONE
    assert classify("info please").intent is Intent.NONE


def test_a_message_of_nothing_but_punctuation_is_nothing():
    assert classify("?!") == Classification(Intent.NONE, words=())
    assert classify("   ") == Classification(Intent.NONE, words=())


def test_the_intents_are_stored_under_stable_names():
    assert [intent.value for intent in Intent] == ["opt_out", "help", "opt_in", "none"]
