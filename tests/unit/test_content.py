"""What a message may carry on each channel: SMS segments, WhatsApp text or template, push payload sizes."""

from __future__ import annotations

import json

import pytest

from app.domain.content import (
    MAX_SMS_SEGMENTS,
    PUSH_PAYLOAD_LIMIT,
    WEB_PUSH_PAYLOAD_LIMIT,
    WHATSAPP_TEXT_LIMIT,
    ContentError,
    Segments,
    check,
    sms_segments,
)
from app.domain.model import Channel

# GSM 03.38: the basic character set (one septet each) and the extension table (two septets each)
GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENDED = "^{}\\[~]|€\f"
TEMPLATE = "HX" + "0123456789abcdefABCDEF0123456789"


def test_the_limits_are_those_of_the_providers():
    assert (MAX_SMS_SEGMENTS, WHATSAPP_TEXT_LIMIT, PUSH_PAYLOAD_LIMIT) == (10, 4096, 4096)
    assert WEB_PUSH_PAYLOAD_LIMIT == 4096 - 86 - 17  # RFC 8291 record minus header and padding/tag


def test_every_basic_gsm_character_costs_one_septet():
    for character in GSM_BASIC:
        assert sms_segments(character * 160) == Segments("GSM-7", 160, 1), repr(character)


def test_every_extension_character_costs_two_septets():
    for character in GSM_EXTENDED:
        assert sms_segments(character * 80) == Segments("GSM-7", 160, 1), repr(character)
        assert sms_segments(character * 81) == Segments("GSM-7", 162, 2), repr(character)


@pytest.mark.parametrize(
    ("length", "count"),
    [(0, 1), (1, 1), (160, 1), (161, 2), (306, 2), (307, 3), (459, 3), (460, 4), (1530, 10), (1531, 11)],
)
def test_gsm_texts_take_160_septets_in_one_part_and_153_in_each_of_several(length, count):
    assert sms_segments("a" * length) == Segments("GSM-7", length, count)


@pytest.mark.parametrize(("length", "count"), [(1, 1), (70, 1), (71, 2), (134, 2), (135, 3), (670, 10), (671, 11)])
def test_other_texts_are_ucs2_with_70_units_in_one_part_and_67_in_each_of_several(length, count):
    assert sms_segments("ж" * length) == Segments("UCS-2", length, count)


def test_one_character_outside_the_alphabet_makes_the_whole_text_ucs2_and_an_emoji_costs_two():
    assert sms_segments("Hallo 😀") == Segments("UCS-2", 8, 1)
    assert sms_segments("ç" + "a" * 69) == Segments("UCS-2", 70, 1)
    assert sms_segments("😀" * 35) == Segments("UCS-2", 70, 1)
    assert sms_segments("😀" * 36) == Segments("UCS-2", 72, 2)


def test_an_sms_of_ten_segments_passes_and_one_of_eleven_is_refused_with_its_reason():
    check(Channel.SMS, {"text": "a" * 1530})
    with pytest.raises(ContentError) as refused:
        check(Channel.SMS, {"text": "a" * 1531})
    assert refused.value.code == "sms_too_long"
    assert str(refused.value) == "The SMS text needs 11 segments (GSM-7); at most 10."


@pytest.mark.parametrize(
    "content",
    [{"text": "Hallo"}, {"template_sid": TEMPLATE}, {"text": "x" * 4096}, {"text": "", "template_sid": TEMPLATE}],
)
def test_whatsapp_takes_a_text_or_a_template(content):
    check(Channel.WHATSAPP, content)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({}, "either 'text' or 'template_sid'"),
        ({"text": ""}, "either 'text' or 'template_sid'"),
        ({"text": "Hallo", "template_sid": TEMPLATE}, "either 'text' or 'template_sid'"),
        ({"template_sid": "HX123"}, "Content SID"),
        ({"template_sid": "MG" + TEMPLATE[2:]}, "Content SID"),
        ({"template_sid": TEMPLATE + "0"}, "Content SID"),
        ({"template_sid": TEMPLATE[:-1] + "g"}, "Content SID"),
        ({"text": "x" * 4097}, "at most 4096 characters"),
    ],
)
def test_whatsapp_refuses_both_neither_a_wrong_sid_and_a_long_text(content, message):
    with pytest.raises(ContentError, match=message) as refused:
        check(Channel.WHATSAPP, content)
    assert refused.value.code == "whatsapp_content"


def payload(size: int) -> dict[str, str]:
    """A payload whose JSON is exactly ``size`` bytes (UTF-8, not ASCII-escaped)."""
    base = {"title": "ü", "body": ""}
    base["body"] = "x" * (size - len(json.dumps(base, ensure_ascii=False).encode()))
    return base


@pytest.mark.parametrize(("channel", "limit"), [(Channel.APP_PUSH, 4096), (Channel.WEB_PUSH, 3993)])
def test_push_payloads_up_to_the_limit_pass_and_one_byte_more_is_refused(channel, limit):
    check(channel, payload(limit))
    with pytest.raises(ContentError) as refused:
        check(channel, payload(limit + 1))
    assert refused.value.code == "push_payload_too_large"
    assert str(refused.value) == f"The push payload is {limit + 1} bytes; at most {limit}."


@pytest.mark.parametrize("channel", [Channel.EMAIL, Channel.PRINT])
def test_email_and_print_content_is_not_checked_here(channel):
    check(channel, {"anything": "x" * 100_000})


def test_segment_counts_are_whole_numbers_in_both_encodings():
    for text in ["a" * 161, "ж" * 71, "😀" * 36]:
        segments = sms_segments(text)
        assert (type(segments.units), type(segments.count)) == (int, int), text
    with pytest.raises(ContentError) as refused:
        check(Channel.SMS, {"text": "ж" * 671})
    assert str(refused.value) == "The SMS text needs 11 segments (UCS-2); at most 10."
