"""Normalisation of email addresses, phone numbers and German postal addresses (CHANNEL_RULES.md §2, §6.3)."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain import identifiers
from app.domain.identifiers import (
    InvalidIdentifier,
    PostalAddress,
    email_suppression_form,
    fold,
    mask,
    normalise_email,
    normalise_house_number,
    normalise_installation_id,
    normalise_name,
    normalise_phone,
    normalise_postal,
    normalise_push_endpoint,
    normalise_street,
    validated_email,
)
from app.domain.model import Channel

_ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
_local_parts = st.one_of(
    st.text(alphabet=_ATEXT + ".", max_size=70),
    st.integers(60, 68).map(lambda n: "a" * n),
    st.sampled_from(['"quoted"', "ä", "a b", "\\x", "(c)x", ".a", "a.", "a..b"]),
)
_labels = st.one_of(
    st.text(alphabet="abz09-", max_size=12),
    st.integers(60, 66).map(lambda n: "a" * n),
    st.sampled_from(
        [
            "EXAMPLE",
            "Com",
            "xn--bcher-kva",
            "xn--zz",
            "a--b",
            "ab--c",
            "localhost",
            "test",
            "local",
            "invalid",
            "onion",
            "arpa",
            "home",
            "alt",
            "example",
            "bücher",
            "\uff41",
            "1",
            "com1",
            "c",
            "",
        ]
    ),
)
_domains = st.lists(_labels, min_size=1, max_size=5).map(".".join)
_addresses = st.one_of(
    st.builds(lambda local, domain: f"{local}@{domain}", _local_parts, _domains),
    st.text(max_size=40),
    st.sampled_from(["a@" + ".".join(["b" * 63] * 4), "a" * 64 + "@" + ".".join(["b" * 60] * 3) + ".de"]),
)


def _outcome(normalise, raw: str):
    try:
        return normalise(raw)
    except InvalidIdentifier as refused:
        return ("refused", refused.code, str(refused))


@settings(max_examples=3_000)
@given(_addresses)
def test_the_plain_address_path_answers_what_email_validator_answers(raw):
    assert _outcome(normalise_email, raw) == _outcome(validated_email, raw.strip())


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


# -- every normaliser's output ------------------------------------------------------------------------------


def test_email_keeps_the_local_part_allows_unicode_and_reports_why_it_is_invalid():
    assert normalise_email("Jürgen.Müller@Bücher.DE") == "Jürgen.Müller@xn--bcher-kva.de"
    with pytest.raises(InvalidIdentifier) as empty:
        normalise_email("   ")
    assert (empty.value.code, empty.value.message) == ("invalid_email", "The email address is empty.")
    with pytest.raises(InvalidIdentifier) as invalid:
        normalise_email("jane@@example.com")
    assert invalid.value.message.startswith("The email address is not valid: ")
    assert str(invalid.value) == invalid.value.message


def test_the_suppression_form_of_an_email_lowers_the_whole_address():
    assert email_suppression_form("Jane.Doe@example.com") == "jane.doe@example.com"


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("WhatsApp: +49 151 23456789", "DE", "+4915123456789"),
        ("WHATSAPP:+4915123456789", "de", "+4915123456789"),
        ("0151 23456789", "de", "+4915123456789"),
        ("  +4915123456789  ", "US", "+4915123456789"),
    ],
)
def test_phone_prefix_case_and_region_case_do_not_matter(raw, region, expected):
    assert normalise_phone(raw, region) == expected


def test_a_national_phone_number_is_read_as_german_by_default():
    assert normalise_phone("0151 23456789") == "+4915123456789"
    assert normalise_phone("030 1234567") == "+49301234567"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("whatsapp:", "The phone number is empty."),
        ("  ", "The phone number is empty."),
        ("+49 151", "not a valid number (give it in international form, e.g. +49 151 23456789)."),
    ],
)
def test_phone_rejections_say_what_is_wrong(raw, message):
    with pytest.raises(InvalidIdentifier) as refused:
        normalise_phone(raw)
    assert refused.value.code == "invalid_phone_number"
    assert refused.value.message.endswith(message)
    with pytest.raises(InvalidIdentifier, match=r"^The phone number cannot be read: "):
        normalise_phone("call me")


def test_fold_lowers_and_folds_umlauts_ligatures_and_accents():
    assert fold("ÄÖÜ äöü ß Æ æ Ø ø Å å é Ç") == "aeoeue aeoeue ss ae ae oe oe aa aa e c"
    assert fold("\uff2d\u00fcller") == "mueller"  # NFKC first: a full-width M


@pytest.mark.parametrize(
    ("street", "key"),
    [
        ("Hauptstraße", "hauptstr"),
        ("Hauptstrasse", "hauptstr"),
        ("Hauptstr.", "hauptstr"),
        ("Hauptstr", "hauptstr"),
        ("Haupt-Straße", "hauptstr"),
        ("Straße des 17. Juni", "strdes17juni"),
        ("Strasse-des-17-Juni", "strdes17juni"),
        ("St. Georg-Weg", "sanktgeorgweg"),
        ("Sankt-Georg-Weg", "sanktgeorgweg"),
        ("Marktpl.", "marktplatz"),
        ("Marktplatz", "marktplatz"),
        ("Markt Pl.", "marktplatz"),
        ("Pl. der Einheit", "platzdereinheit"),
        ("Stresemannallee", "stresemannallee"),  # "str" inside a word stays
        ("Astraße", "astr"),
        ("O'Connor-Ring", "oconnorring"),
    ],
)
def test_street_names_normalise_to_one_key(street, key):
    assert normalise_street(street) == key


@pytest.mark.parametrize(("number", "key"), [("12 A", "12a"), ("12 - 14", "12-14"), ("12/1", "12/1"), ("7", "7")])
def test_house_numbers_lose_spaces_and_case(number, key):
    assert normalise_house_number(number) == key


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("Dr. med. Hans Müller", "hans mueller"),
        ("Frau Prof. Dr. rer. nat. Anna Schmidt", "anna schmidt"),
        ("Mrs. Jane O'Neil", "jane neil o"),
        ("Dipl.-Ing. Jörg Weiß", "joerg weiss"),
        ("Dr. phil. Anna Weber", "anna weber"),
        # a first name that is also a title is dropped: over-matching, the safe side for suppression
        ("Phil Collins", "collins"),
        ("Ms. Smith", "smith"),
        ("Herr Müller-Lüdenscheidt", "luedenscheidt mueller"),
    ],
)
def test_names_drop_titles_and_salutations_and_sort_their_words(name, key):
    assert normalise_name(name) == key


def test_a_postal_address_is_parsed_and_keyed():
    address = normalise_postal(
        street="  Karl-Marx-Straße   12 a ",
        postcode=" 101 15 ",
        city="  Frankfurt  (Oder) ",
        name=" Dr.  Hans  Müller ",
    )
    assert address == PostalAddress(
        country="DE",
        postcode="10115",
        city="Frankfurt (Oder)",
        street="Karl-Marx-Straße",
        house_number="12 a",
        name="Dr. Hans Müller",
        key="DE|10115|karlmarxstr|12a",
        name_key="hans mueller",
    )


def test_a_comma_between_street_and_number_and_a_lower_case_country_are_accepted():
    address = normalise_postal(street="Hauptstraße, 3", postcode="1010", city="Wien", country=" at ")
    assert (address.country, address.street, address.house_number, address.key) == (
        "AT",
        "Hauptstraße",
        "3",
        "AT|1010|hauptstr|3",
    )


def test_a_separate_house_number_wins_and_must_be_one():
    address = normalise_postal(street="Hauptstraße 12", house_number=" 14 ", postcode="10115", city="Berlin")
    assert (address.street, address.house_number, address.key) == ("Hauptstraße 12", "14", "DE|10115|hauptstr12|14")
    with pytest.raises(InvalidIdentifier) as refused:
        normalise_postal(street="Hauptstraße", house_number="vierzehn", postcode="10115", city="Berlin")
    assert (refused.value.code, refused.value.message) == (
        "invalid_postal_address",
        "'vierzehn' is not a house number.",
    )


def test_a_name_of_only_spaces_or_titles_is_no_name():
    blank = normalise_postal(street="Hauptstraße 1", postcode="10115", city="Berlin", name="   ")
    assert (blank.name, blank.name_key) == (None, None)
    titles = normalise_postal(street="Hauptstraße 1", postcode="10115", city="Berlin", name="Dr. Prof.")
    assert (titles.name, titles.name_key) == ("Dr. Prof.", None)


def test_other_countries_need_a_postcode_but_not_a_german_one():
    address = normalise_postal(street="Rue de Rivoli 10", postcode="75001", city="Paris", country="FR")
    assert address.key == "FR|75001|ruederivoli|10"
    assert normalise_postal(street="Main Street 5", postcode="SW1A 1AA", city="London", country="GB").postcode == (
        "SW1A1AA"
    )
    with pytest.raises(InvalidIdentifier) as missing:
        normalise_postal(street="Rue de Rivoli 10", postcode="  ", city="Paris", country="FR")
    assert (missing.value.code, missing.value.message) == ("invalid_postcode", "The postcode is missing.")


@pytest.mark.parametrize(
    ("fields", "code", "message"),
    [
        ({"postcode": "10115", "city": "---"}, "invalid_postal_address", "Street and city are required."),
        ({"postcode": "10115", "city": "Berlin", "country": "D"}, "invalid_postal_address", "ISO 3166 alpha-2"),
        ({"postcode": "10115", "city": "Berlin", "country": "D1"}, "invalid_postal_address", "ISO 3166 alpha-2"),
        ({"postcode": "101155", "city": "Berlin"}, "invalid_postcode", "'101155' is not a valid postcode for DE."),
        ({"postcode": "1234", "city": "Bern", "country": "CH"}, None, None),
        ({"postcode": "12345", "city": "Bern", "country": "CH"}, "invalid_postcode", "for CH"),
        ({"postcode": "12345", "city": "Wien", "country": "AT"}, "invalid_postcode", "for AT"),
    ],
)
def test_postal_rejections_say_what_is_wrong(fields, code, message):
    if code is None:
        assert normalise_postal(street="Hauptstrasse 1", **fields).postcode == fields["postcode"]
        return
    with pytest.raises(InvalidIdentifier) as refused:
        normalise_postal(street="Hauptstrasse 1", **fields)
    assert refused.value.code == code
    assert message in refused.value.message


def test_a_street_without_a_number_says_how_to_give_one():
    with pytest.raises(InvalidIdentifier) as refused:
        normalise_postal(street="Hauptstraße", postcode="10115", city="Berlin")
    assert refused.value.message == "The street has no house number (e.g. 'Hauptstraße 12a')."


@pytest.mark.parametrize("raw", ["a", "fcm:Abc-123_x.y", "  device-1  ", "x" * 200, "ios:0123456789abcdef:ABCDEF"])
def test_installation_ids_are_returned_trimmed(raw):
    assert normalise_installation_id(raw) == raw.strip()


@pytest.mark.parametrize("raw", ["", "   ", "x" * 201, "a b", "a/b", "ä", "id\x00"])
def test_installation_ids_of_another_shape_are_refused(raw):
    with pytest.raises(InvalidIdentifier) as refused:
        normalise_installation_id(raw)
    assert refused.value.code == "invalid_installation_id"


@pytest.mark.parametrize(
    "raw",
    [
        "https://push.example.com/" + "x" * (2048 - 25),
        "  https://updates.push.services.mozilla.com/wpush/v2/abc\n",
    ],
)
def test_push_endpoints_are_https_urls_returned_trimmed(raw):
    assert normalise_push_endpoint(raw) == raw.strip()


@pytest.mark.parametrize(
    "raw",
    ["https://push.example.com/" + "x" * (2049 - 25), "https://push.example.com/a b", "ftp://x", "", "HTTPS//x"],
)
def test_other_push_endpoints_are_refused(raw):
    with pytest.raises(InvalidIdentifier) as refused:
        normalise_push_endpoint(raw)
    assert refused.value.code == "invalid_push_endpoint"


@pytest.mark.parametrize(
    ("channel", "value", "masked"),
    [
        (Channel.EMAIL, "jane.doe@example.com", "j***@example.com"),
        (Channel.EMAIL, "@example.com", "***@example.com"),
        (Channel.SMS, "+4915123456789", "+49151******89"),
        (Channel.WHATSAPP, "+4915123456789", "+49151******89"),
        (Channel.SMS, "+4930123", "+4930123"),
        (Channel.SMS, "+49301", "+49301" + "01"),
        (Channel.PRINT, "DE|10115|hauptstr|12a", "DE-10*** (postal)"),
        (Channel.PRINT, "AT", "AT-*** (postal)"),
        (Channel.APP_PUSH, "fcm-token-0123456789", "fcm-token-01…"),
        (Channel.WEB_PUSH, "https://push.example.com/abc", "https://push…"),
    ],
)
def test_masks(channel, value, masked):
    assert mask(channel, value) == masked


def _full_fold(text: str) -> str:
    """:func:`fold` without its short cuts: the definition the stored suppression keys rest on."""
    lowered = unicodedata.normalize("NFKC", text).lower().translate(identifiers._FOLD)
    decomposed = unicodedata.normalize("NFKD", lowered)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


@given(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40) | st.text(alphabet="aäoöuüßẞAÄÖÜéÉ-. 'ﬁ", max_size=20)
)
def test_the_short_cuts_of_fold_give_what_the_full_path_gives(text):
    assert identifiers.fold(text) == _full_fold(text)


_POSTAL_TEXT = st.text(alphabet="aäoöuüßAÄÖÜéSsTtRr. -,12345678 ", max_size=18)


@settings(max_examples=500)
@given(
    street=st.one_of(_POSTAL_TEXT, st.sampled_from(["Hauptstraße 12a", "Schulstr.", "St.-Georg-Pl. 7", "Am Markt"])),
    postcode=st.one_of(st.sampled_from(["10115", "1234", " 10 115", ""]), _POSTAL_TEXT),
    city=st.one_of(st.sampled_from(["Berlin", "München", "Frankfurt am Main", ""]), _POSTAL_TEXT),
    house_number=st.one_of(st.none(), st.sampled_from(["12", "12 A", "3-5", "x"]), _POSTAL_TEXT),
    name=st.one_of(st.none(), st.sampled_from(["Dr. Müller, Hans", "", " "]), _POSTAL_TEXT),
    country=st.sampled_from(["DE", "at", "CH", "FR", "D", "de "]),
)
def test_postal_keys_are_the_keys_of_normalise_postal(street, postcode, city, house_number, name, country):
    """The Robinson import's lean path: the same keys and the same errors as the full normalisation."""
    given = {
        "street": street,
        "postcode": postcode,
        "city": city,
        "house_number": house_number,
        "name": name,
        "country": country,
    }
    full = _postal_outcome(identifiers.normalise_postal, given)
    if isinstance(full, identifiers.PostalAddress):
        full = (full.key, full.name_key)
    assert _postal_outcome(identifiers.postal_keys, given) == full


def _postal_outcome(function, given):
    try:
        return function(**given)
    except identifiers.InvalidIdentifier as exc:
        return ("error", exc.code, str(exc))


_REMEMBERING = identifiers.PostalKeys()  # one for every example: what it remembers from one must not leak into another


@settings(max_examples=500)
@given(
    street=st.one_of(_POSTAL_TEXT, st.sampled_from(["Hauptstraße 12a", "Schulstr.", "St.-Georg-Pl. 7", "Am Markt"])),
    postcode=st.one_of(st.sampled_from(["10115", "1234", " 10 115", ""]), _POSTAL_TEXT),
    city=st.one_of(st.sampled_from(["Berlin", "München", "Frankfurt am Main", ""]), _POSTAL_TEXT),
    house_number=st.one_of(st.none(), st.sampled_from(["12", "12 A", "3-5", "x", ""]), _POSTAL_TEXT),
    name=st.one_of(st.none(), st.sampled_from(["Dr. Müller, Hans", "", " "]), _POSTAL_TEXT),
    country=st.sampled_from(["DE", "at", "CH", "FR", "D", "de ", ""]),
)
def test_postal_keys_remembering_their_parts_are_postal_keys(street, postcode, city, house_number, name, country):
    """The Robinson import's remembered parts: the same keys and the same errors as :func:`postal_keys`."""
    given = {
        "street": street,
        "postcode": postcode,
        "city": city,
        "house_number": house_number,
        "name": name,
        "country": country,
    }
    assert _postal_outcome(_REMEMBERING, given) == _postal_outcome(identifiers.postal_keys, given)
    assert _postal_outcome(_REMEMBERING, given) == _postal_outcome(identifiers.postal_keys, given), "remembered"


def test_postal_keys_forget_when_full(monkeypatch):
    monkeypatch.setattr(identifiers, "_REMEMBERED", 2)
    keys = identifiers.PostalKeys()
    for city in ("Berlin", "Köln", "Bonn", "Berlin"):
        assert keys(street="Weg", postcode="10115", city=city, house_number="1", name="A B", country="DE") == (
            identifiers.postal_keys(
                street="Weg", postcode="10115", city=city, house_number="1", name="A B", country="DE"
            )
        )
    assert len(keys._cities) <= 2  # bounded


@pytest.mark.parametrize("number", [None, "12"])
def test_an_empty_street_is_said_to_be_missing(number):
    """A newcomer's finding: a Robinson row with an empty street was told it had no house number."""
    with pytest.raises(InvalidIdentifier) as refused:
        normalise_postal(street="  ", house_number=number, postcode="10115", city="Berlin")
    assert refused.value.message == "The street is missing."
