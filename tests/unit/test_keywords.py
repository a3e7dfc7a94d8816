"""The keyword engine (CHANNEL_RULES.md §2.2, §2.3)."""

from __future__ import annotations

import pytest

from app.domain.keywords import Intent, KeywordSet, classify, normalise_keyword

ENGLISH_OPT_OUT = ["STOP", "UNSUBSCRIBE", "END", "QUIT", "STOPALL", "REVOKE", "OPTOUT", "CANCEL"]
GERMAN_OPT_OUT = ["STOPP", "ABMELDEN", "ABBESTELLEN", "AUSTRAGEN", "KÜNDIGEN", "STORNIEREN", "ENDE"]


def odd_forms(word: str) -> list[str]:
    return [
        word,
        word.lower(),
        word.title(),
        f"  {word}  ",
        f"\u00a0{word.lower()}\n",
        f"{word}!",
        f"{word}.",
        f"{word} 🙏",
    ]


@pytest.mark.parametrize("word", ENGLISH_OPT_OUT + GERMAN_OPT_OUT)
def test_every_default_opt_out_keyword_matches_in_odd_case_and_whitespace(word):
    for form in odd_forms(word):
        result = classify(form)
        assert result.intent is Intent.OPT_OUT, form
        assert not result.natural_language


@pytest.mark.parametrize(
    ("word", "language"), [("START", None), ("YES", "en"), ("UNSTOP", "en"), ("JA", "de"), ("ANMELDEN", "de")]
)
def test_default_opt_in_keywords_match_exactly(word, language):
    for form in odd_forms(word):
        result = classify(form)
        assert result.intent is Intent.OPT_IN, form
        assert result.language == language


@pytest.mark.parametrize("word", ["HELP", "INFO", "HILFE", "hilfe", " Help? "])
def test_help_keywords(word):
    assert classify(word).intent is Intent.HELP


def test_spelling_variants_fold_together():
    assert normalise_keyword("opt-out") == normalise_keyword("OPT OUT") == "optout"
    assert classify("opt out").intent is Intent.OPT_OUT
    assert classify("KUENDIGEN").intent is Intent.OPT_OUT
    assert classify("kündigen").intent is Intent.OPT_OUT


@pytest.mark.parametrize(
    "text", ["stop please", "Please STOP", "bitte abmelden", "Bitte keine SMS mehr, STOPP!", "no more, cancel"]
)
def test_short_messages_asking_to_stop_are_opt_outs_and_flagged(text):
    result = classify(text)
    assert result.intent is Intent.OPT_OUT
    assert result.natural_language


def test_natural_language_detection_can_be_switched_off_and_ignores_long_messages():
    assert classify("stop please", natural_language=False).intent is Intent.NONE
    long = "I was wondering whether you could stop by the shop tomorrow morning"
    assert classify(long).intent is Intent.NONE


def test_opt_in_is_never_inferred_from_a_sentence():
    assert classify("yes please start sending").intent is Intent.NONE
    assert classify("ja gerne").intent is Intent.NONE


def test_opt_out_beats_help_beats_opt_in():
    everything = {"x": KeywordSet.of(["HALT"], ["HALT", "INFO"], ["HALT", "INFO"])}
    assert classify("halt", everything).intent is Intent.OPT_OUT
    assert classify("info", everything).intent is Intent.HELP
    assert classify("stop help").intent is Intent.OPT_OUT


def test_workspace_start_words_name_their_purpose():
    result = classify(" news ", start_words={"NEWS": "newsletter"})
    assert result.intent is Intent.OPT_IN
    assert result.purpose == "newsletter"
    assert classify("STOP", start_words={"STOP": "newsletter"}).intent is Intent.OPT_OUT, "opt-out keeps precedence"


def test_anything_else_is_nothing():
    assert classify("Wann habt ihr morgen geöffnet?").intent is Intent.NONE
    assert classify("").intent is Intent.NONE
    assert classify("NEIN").intent is Intent.NONE, "ambiguous outside a reply to a prompt"
