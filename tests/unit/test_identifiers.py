"""Normalisation of email addresses, phone numbers and German postal addresses (CHANNEL_RULES.md §2, §6.3)."""

from __future__ import annotations

import pytest

from app.domain.identifiers import (
    InvalidIdentifier,
    mask,
    normalise_email,
    normalise_name,
    normalise_phone,
    normalise_postal,
    normalise_push_endpoint,
)
from app.domain.model import Channel


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Jane.Doe@Example.COM ", "Jane.Doe@example.com"),
        ("jane@EXAMPLE.com", "jane@example.com"),
        ("kunde@bücher.de", "kunde@xn--bcher-kva.de"),
        ("x+tag@sub.example.org", "x+tag@sub.example.org"),
    ],
)
def test_email_is_trimmed_and_its_domain_lowered_and_idna_encoded(raw, expected):
    assert normalise_email(raw) == expected


@pytest.mark.parametrize("raw", ["", "plainaddress", "a@b", "jane@", "@example.com", "jane doe@example.com"])
def test_invalid_email_is_rejected_with_a_code(raw):
    with pytest.raises(InvalidIdentifier) as info:
        normalise_email(raw)
    assert info.value.code == "invalid_email"


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("+49 151 23456789", "DE", "+4915123456789"),
        ("0151 23456789", "DE", "+4915123456789"),
        ("0049 151 23456789", "DE", "+4915123456789"),
        ("+49 (0) 151 234-567-89", "DE", "+4915123456789"),
        ("whatsapp:+4915123456789", "DE", "+4915123456789"),
        ("0664 1234567", "AT", "+436641234567"),
        ("+41 79 123 45 67", "DE", "+41791234567"),
        ("(415) 555-2671", "US", "+14155552671"),
        ("+44 7911 123456", "DE", "+447911123456"),
    ],
)
def test_phone_numbers_become_e164(raw, region, expected):
    assert normalise_phone(raw, region) == expected


@pytest.mark.parametrize("raw", ["", "12", "+49 151", "call me", "+999 123456789"])
def test_invalid_phone_numbers_are_rejected_with_a_code(raw):
    with pytest.raises(InvalidIdentifier) as info:
        normalise_phone(raw)
    assert info.value.code == "invalid_phone_number"


GERMAN_VARIANTS = [
    ("Hauptstraße 12a", "Hauptstr. 12 a"),
    ("Hauptstraße 12a", "HAUPTSTRASSE 12A"),
    ("Karl-Marx-Straße 5", "Karl Marx Str. 5"),
    ("Sankt-Georg-Platz 3/1", "St. Georg Pl. 3/1"),
    ("Müllerweg 12-14", "Muellerweg 12 - 14"),
    ("Große Hamburger Str. 7", "Grosse Hamburger Strasse 7"),
]


@pytest.mark.parametrize(("first", "second"), GERMAN_VARIANTS)
def test_german_street_spellings_normalise_to_one_key(first, second):
    a = normalise_postal(street=first, postcode="10115", city="Berlin")
    b = normalise_postal(street=second, postcode="10115", city="BERLIN")
    assert a.key == b.key


def test_house_number_may_be_given_separately():
    together = normalise_postal(street="Hauptstraße 12a", postcode="10115", city="Berlin")
    apart = normalise_postal(street="Hauptstraße", house_number="12 A", postcode="10115", city="Berlin")
    assert together.key == apart.key == "DE|10115|hauptstr|12a"


def test_different_house_numbers_and_postcodes_differ():
    base = normalise_postal(street="Hauptstraße 12", postcode="10115", city="Berlin").key
    assert normalise_postal(street="Hauptstraße 12a", postcode="10115", city="Berlin").key != base
    assert normalise_postal(street="Hauptstraße 12", postcode="10117", city="Berlin").key != base


def test_street_with_number_in_its_name_keeps_it():
    address = normalise_postal(street="Straße des 17. Juni 135", postcode="10623", city="Berlin")
    assert address.house_number == "135"
    assert "17juni" in address.key


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"street": "Hauptstraße 1", "postcode": "1011", "city": "Berlin"}, "invalid_postcode"),
        ({"street": "Hauptstraße 1", "postcode": "ABCDE", "city": "Berlin"}, "invalid_postcode"),
        ({"street": "Hauptstraße", "postcode": "10115", "city": "Berlin"}, "invalid_postal_address"),
        (
            {"street": "Hauptstraße 1", "postcode": "10115", "city": "Berlin", "country": "Deutschland"},
            "invalid_postal_address",
        ),
    ],
)
def test_invalid_postal_addresses_are_rejected_with_a_code(fields, code):
    with pytest.raises(InvalidIdentifier) as info:
        normalise_postal(**fields)
    assert info.value.code == code


def test_austrian_and_swiss_postcodes_have_four_digits():
    assert normalise_postal(street="Ringstraße 1", postcode="1010", city="Wien", country="AT").postcode == "1010"
    with pytest.raises(InvalidIdentifier):
        normalise_postal(street="Bahnhofstrasse 1", postcode="80331", city="Zürich", country="CH")


@pytest.mark.parametrize(
    "variant", ["Dr. Hans Müller", "Hans Mueller", "MÜLLER, Hans", "Prof. Dr. Hans Müller", "Herr Hans Müller"]
)
def test_names_fold_titles_umlauts_and_order(variant):
    assert normalise_name(variant) == "hans mueller"


def test_push_endpoint_must_be_https():
    assert (
        normalise_push_endpoint(" https://fcm.googleapis.com/fcm/send/abc ")
        == "https://fcm.googleapis.com/fcm/send/abc"
    )
    with pytest.raises(InvalidIdentifier):
        normalise_push_endpoint("http://push.example.com/x")


def test_masks_do_not_reveal_the_address():
    assert mask(Channel.EMAIL, "jane.doe@example.com") == "j***@example.com"
    assert mask(Channel.SMS, "+4915123456789") == "+49151******89"
    assert "hauptstr" not in mask(Channel.PRINT, "DE|10115|hauptstr|12a")
