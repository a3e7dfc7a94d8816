"""Normalisation of identifiers, with clear rejection errors (CHANNEL_RULES.md §1, §2, §6.3, §8 X4).

The normalised value is what uniqueness, lookups and suppression keys are built from, so the same person
typed two ways must come out the same. For suppression, over-matching is acceptable; under-matching is not.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

import phonenumbers
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email
from email_validator.rfc_constants import DOMAIN_MAX_LENGTH, EMAIL_MAX_LENGTH, LOCAL_PART_MAX_LENGTH

from app.domain.model import Channel


class InvalidIdentifier(ValueError):
    """An address that cannot be used; ``code`` is stable, the message says what to fix."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# -- email --------------------------------------------------------------------------------------------------


#: A plain address: an ASCII dot-atom local part, a lower-case LDH domain of two labels or more without ``--``
#: (no Punycode) and a top-level domain of letters. email_validator answers such an address unchanged unless it is
#: too long or under a special-use name (checked beside); every other address goes through email_validator.
_PLAIN_EMAIL = re.compile(
    r"(?P<local>[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,64}(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)"
    r"@(?P<domain>(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63})"
)
_SPECIAL_USE = frozenset(SPECIAL_USE_DOMAIN_NAMES)


def normalise_email(raw: str) -> str:
    """Trim, check the syntax (no DNS), lower-case and IDNA-encode the domain; keep the local part.

    A plain address (:data:`_PLAIN_EMAIL`) is answered as it is: what email_validator gives for it, at a tenth of
    its cost (an import normalises millions); a property test holds the two to the same answers.
    """
    candidate = raw.strip()
    plain = _PLAIN_EMAIL.fullmatch(candidate)
    if (
        plain is not None
        and len(candidate) <= EMAIL_MAX_LENGTH
        and len(plain["local"]) <= LOCAL_PART_MAX_LENGTH
        and len(plain["domain"]) <= DOMAIN_MAX_LENGTH
        and "--" not in plain["domain"]
        and not _special_use(plain["domain"])
    ):
        return candidate
    return validated_email(candidate)


def _special_use(domain: str) -> bool:
    labels = domain.split(".")
    return any(".".join(labels[start:]) in _SPECIAL_USE for start in range(len(labels)))


def validated_email(candidate: str) -> str:
    """:func:`normalise_email` by email_validator alone (every address it accepts, with its reasons to refuse)."""
    if not candidate:
        raise InvalidIdentifier("invalid_email", "The email address is empty.")
    try:
        result = validate_email(candidate, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError as exc:
        raise InvalidIdentifier("invalid_email", f"The email address is not valid: {exc}") from None
    return f"{result.local_part}@{result.ascii_domain.lower()}"


def email_suppression_form(normalised: str) -> str:
    """For suppression keys the whole address is lower-cased (over-matching is the safe side)."""
    return normalised.lower()


# -- phone --------------------------------------------------------------------------------------------------


def normalise_phone(raw: str, default_region: str = "DE") -> str:
    """E.164 via ``phonenumbers``; a ``whatsapp:`` prefix is accepted and removed."""
    candidate = raw.strip()
    if candidate.lower().startswith("whatsapp:"):
        candidate = candidate[len("whatsapp:") :].strip()
    if not candidate:
        raise InvalidIdentifier("invalid_phone_number", "The phone number is empty.")
    try:
        number = phonenumbers.parse(candidate, default_region.upper())
    except phonenumbers.NumberParseException as exc:
        raise InvalidIdentifier("invalid_phone_number", f"The phone number cannot be read: {exc}") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidIdentifier(
            "invalid_phone_number",
            "The phone number is not a valid number (give it in international form, e.g. +49 151 23456789).",
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


# -- postal -------------------------------------------------------------------------------------------------

_FOLD = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "æ": "ae", "ø": "oe", "å": "aa"})
_STREET_WORDS = [
    (re.compile(r"(strasse|straße|str\.?)(?=\s|$|-)"), "str"),
    (re.compile(r"\b(st\.|sankt)(?=\s|-)"), "sankt"),
    (re.compile(r"\bpl\.(?=\s|$)"), "platz"),
    (re.compile(r"(platz|pl\.)$"), "platz"),
]
_HOUSE_NUMBER = re.compile(
    r"^(?P<street>.*?[^\d\s,])[\s,]+(?P<number>\d+\s*[a-zA-Z]?(?:\s*[-/]\s*\d+\s*[a-zA-Z]?)?)\s*$"
)
_HOUSE_NUMBER_ONLY = re.compile(r"^\d+\s*[a-zA-Z]?(?:\s*[-/]\s*\d+\s*[a-zA-Z]?)?$")
_POSTCODE = {"DE": re.compile(r"^\d{5}$"), "AT": re.compile(r"^\d{4}$"), "CH": re.compile(r"^\d{4}$")}
_TITLES = re.compile(r"\b(dr|prof|dipl|ing|med|rer|nat|phil|herr|frau|mr|mrs|ms)\b\.?")


def fold(text: str) -> str:
    """Lower-case, fold umlauts and ß, strip accents (NFKD): ``Müller`` ≡ ``Mueller`` ≡ ``MUELLER``.

    ASCII is its own NFKC and NFKD form and holds no combining mark, so it only needs lower-casing; so does text
    that the umlaut and ß folding made ASCII. Both short cuts give exactly what the full path gives (the keys
    stored in suppressions depend on it: ``tests/unit/test_identifiers.py`` compares them); they make a
    Robinson list's normalisation several times faster.
    """
    if text.isascii():
        return text.lower()
    lowered = unicodedata.normalize("NFKC", text).lower().translate(_FOLD)
    if lowered.isascii():
        return lowered
    decomposed = unicodedata.normalize("NFKD", lowered)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


_NOT_ALPHANUMERIC = re.compile(r"[^a-z0-9]")
_NOT_LETTERS = re.compile(r"[^a-z]+")
_COUNTRY = re.compile(r"[A-Z]{2}")
_SPACES = re.compile(r"\s+")


def _compact(text: str) -> str:
    """Only letters and digits: hyphens, spaces, dots and apostrophes do not matter for matching."""
    return _NOT_ALPHANUMERIC.sub("", text)


@dataclass(frozen=True, slots=True)
class PostalAddress:
    """A normalised postal address; ``key`` identifies the household, ``name_key`` the person."""

    country: str
    postcode: str
    city: str
    street: str
    house_number: str
    name: str | None
    key: str
    name_key: str | None


def normalise_street(street: str) -> str:
    """``Karl-Marx-Straße`` ≡ ``Karl Marx Str.`` ≡ ``karl-marx-strasse`` → ``karlmarxstr``."""
    folded = fold(street).strip()
    for pattern, replacement in _STREET_WORDS:
        folded = pattern.sub(replacement, folded)
    return _compact(folded)


def normalise_house_number(number: str) -> str:
    """``12 a`` ≡ ``12A`` → ``12a``; ``12 - 14`` → ``12-14``; ``12/1`` kept."""
    return _SPACES.sub("", number.lower())


def normalise_name(name: str) -> str:
    """Titles and salutations dropped, folded, letters only, word order ignored (``Dr. Müller, Hans``)."""
    folded = _TITLES.sub(" ", fold(name))
    return " ".join(sorted(filter(None, _NOT_LETTERS.split(folded))))


def normalise_postal(
    *,
    street: str,
    postcode: str,
    city: str,
    house_number: str | None = None,
    name: str | None = None,
    country: str = "DE",
) -> PostalAddress:
    """Parse and normalise a postal address (German rules; AT and CH postcodes are checked too)."""
    country, code, street_text, number_text, key, name_key = _postal(
        street=street, postcode=postcode, city=city, house_number=house_number, name=name, country=country
    )
    return PostalAddress(
        country=country,
        postcode=code,
        city=" ".join(city.split()),
        street=street_text,
        house_number=number_text,
        name=" ".join(name.split()) if name and name.strip() else None,
        key=key,
        name_key=name_key,
    )


def postal_keys(
    *, street: str, postcode: str, city: str, house_number: str | None, name: str | None, country: str
) -> tuple[str, str | None]:
    """``(key, name_key)`` of :func:`normalise_postal` (the same checks and errors), without the display forms.

    For a Robinson list's millions of rows, which need only the keys.
    """
    _, _, _, _, key, name_key = _postal(
        street=street, postcode=postcode, city=city, house_number=house_number, name=name, country=country
    )
    return key, name_key


class PostalKeys:
    """:func:`postal_keys` for the millions of rows of a list: each part worked out once per distinct text.

    A row's country, postcode, street, house number and city are each checked and normalised by the rules of
    :func:`_postal` and remembered (bounded: a table is emptied when it is full); the name is normalised per row.
    A row with any part that is not plainly fine (a house number left in the street, an invalid postcode…) goes
    through :func:`postal_keys` itself, so the keys and the errors are exactly its own (a hypothesis test in
    ``tests/unit/test_identifiers.py`` holds the two equal).
    """

    def __init__(self) -> None:
        self._countries: dict[str, str] = {}
        self._postcodes: dict[str, str] = {}
        self._streets: dict[str, str] = {}
        self._numbers: dict[str, str] = {}
        self._cities: dict[str, str] = {}

    def __call__(
        self, *, street: str, postcode: str, city: str, house_number: str | None, name: str | None, country: str
    ) -> tuple[str, str | None]:
        """``(key, name_key)`` as :func:`postal_keys` answers them (or its error)."""
        found = self.person(street, postcode, city, house_number or "", name or "", country)
        if found is not None:
            return found
        return postal_keys(
            street=street, postcode=postcode, city=city, house_number=house_number, name=name, country=country
        )

    def person(  # noqa: PLR0917  # positional: called once per row of lists of millions
        self, street: str, postcode: str, city: str, house_number: str, name: str, country: str
    ) -> tuple[str, str] | None:
        """``(key, name_key)`` of an address whose parts are all plainly fine and that names a person, else ``None``.

        The short way for a list's rows (positional, no error raised); ``None`` sends the row the long way.
        """
        code = self._countries.get(country)
        if code is None:
            code = _remember(self._countries, country, _country_part(country))
        street_key = self._streets.get(street)
        if street_key is None:
            street_key = _remember(self._streets, street, _street_key(" ".join(street.split())))
        number_key = self._numbers.get(house_number)
        if number_key is None:
            number_key = _remember(self._numbers, house_number, _number_part(house_number))
        city_key = self._cities.get(city)
        if city_key is None:
            city_key = _remember(self._cities, city, _city_key(city))
        postcode_key = self._postcodes.get(code + postcode) if code else ""
        if postcode_key is None:
            postcode_key = _remember(self._postcodes, code + postcode, _postcode_part(postcode, code))
        if not (code and street_key and number_key and city_key and postcode_key):
            return None
        name_key = normalise_name(name) if name.strip() else ""
        return (f"{code}|{postcode_key}|{street_key}|{number_key}", name_key) if name_key else None


def _remember(table: dict[str, str], text: str, part: str) -> str:
    if len(table) >= _REMEMBERED:
        table.clear()
    table[text] = part
    return part


def _country_part(country: str) -> str:
    """The country as :func:`_postal` takes it, or ``""`` where it refuses it."""
    code = country.strip().upper()
    return code if _COUNTRY.fullmatch(code) else ""


def _number_part(house_number: str) -> str:
    """The house number's key, or ``""`` where :func:`_postal` would look in the street or refuse it."""
    text = house_number.strip()
    return normalise_house_number(text) if text and _HOUSE_NUMBER_ONLY.match(text) else ""


def _postcode_part(postcode: str, country: str) -> str:
    """The postcode as :func:`_postal` takes it for ``country``, or ``""`` where it refuses it."""
    code = postcode.strip().replace(" ", "")
    pattern = _POSTCODE.get(country)
    return code if code and (pattern is None or pattern.match(code)) else ""


def _postal(
    *, street: str, postcode: str, city: str, house_number: str | None, name: str | None, country: str
) -> tuple[str, str, str, str, str, str | None]:
    """Country, postcode, street and house number as given (tidied), the household key and the person's key."""
    country = country.strip().upper()
    if not _COUNTRY.fullmatch(country):
        raise InvalidIdentifier("invalid_postal_address", "The country must be an ISO 3166 alpha-2 code (e.g. DE).")
    street_text = " ".join(street.split())
    number_text = (house_number or "").strip()
    if not street_text:
        raise InvalidIdentifier("invalid_postal_address", "The street is missing.")
    if not number_text:
        match = _HOUSE_NUMBER.match(street_text)
        if match is None:
            raise InvalidIdentifier(
                "invalid_postal_address", "The street has no house number (e.g. 'Hauptstraße 12a')."
            )
        street_text, number_text = match.group("street").strip(" ,"), match.group("number")
    if not _HOUSE_NUMBER_ONLY.match(number_text):
        raise InvalidIdentifier("invalid_postal_address", f"'{number_text}' is not a house number.")
    code = postcode.strip().replace(" ", "")
    pattern = _POSTCODE.get(country)
    if pattern is not None and not pattern.match(code):
        raise InvalidIdentifier("invalid_postcode", f"'{postcode}' is not a valid postcode for {country}.")
    if not code:
        raise InvalidIdentifier("invalid_postcode", "The postcode is missing.")
    street_key = _street_key(street_text)
    city_key = _city_key(city)
    if not street_key or not city_key:
        raise InvalidIdentifier("invalid_postal_address", "Street and city are required.")
    number_key = normalise_house_number(number_text)
    name_key = normalise_name(name) if name and name.strip() else None
    return country, code, street_text, number_text, f"{country}|{code}|{street_key}|{number_key}", name_key or None


#: How many distinct streets and cities :func:`_street_key` and :func:`_city_key` remember: a list repeats them
#: (a few thousand towns, common street names), and each costs several regular expressions and Unicode folds.
_REMEMBERED = 1 << 16


@functools.lru_cache(maxsize=_REMEMBERED)
def _street_key(street_text: str) -> str:
    return normalise_street(street_text)


@functools.lru_cache(maxsize=_REMEMBERED)
def _city_key(city: str) -> str:
    return _compact(fold(city))


# -- push ---------------------------------------------------------------------------------------------------

_INSTALLATION_ID = re.compile(r"^[A-Za-z0-9._:-]{1,200}$")


def normalise_installation_id(raw: str) -> str:
    """App installation ids are opaque; only their shape is checked."""
    value = raw.strip()
    if not _INSTALLATION_ID.match(value):
        raise InvalidIdentifier(
            "invalid_installation_id", "An installation id is 1-200 characters of letters, digits and . _ : -."
        )
    return value


def normalise_push_endpoint(raw: str) -> str:
    """A web push endpoint is an https URL; it is its own identity."""
    value = raw.strip()
    if not value.startswith("https://") or len(value) > 2048 or any(ch.isspace() for ch in value):  # noqa: PLR2004
        raise InvalidIdentifier("invalid_push_endpoint", "A push endpoint is an https URL of at most 2048 characters.")
    return value


def mask(channel: Channel, value: str) -> str:
    """A display form that does not reveal the address: ``j***@example.com``, ``+49151*****89``."""
    if channel is Channel.EMAIL:
        local, _, domain = value.partition("@")
        return f"{local[:1]}***@{domain}"
    if channel in (Channel.SMS, Channel.WHATSAPP):
        return value[:6] + "*" * max(len(value) - 8, 0) + value[-2:]
    if channel is Channel.PRINT:
        country, postcode, _street, _number = [*value.split("|"), "", "", "", ""][:4]
        return f"{country}-{postcode[:2]}*** (postal)"
    return value[:12] + "…"


EXTERNAL_ID_PATTERN = r"^(?!\.\.?$)[^/\x00-\x1f\x7f]{1,200}$"
"""A caller's ``external_id``: 1-200 characters, no ``/`` and no control characters, not ``.`` or ``..``.

It names the contact in URLs (``/v1/contacts/{contact}``, its export and erasure): a ``/`` (even as ``%2F``,
decoded before routing) or a dot segment (removed by HTTP clients) would make the contact unreachable there."""

_EXTERNAL_ID = re.compile(EXTERNAL_ID_PATTERN)


def valid_external_id(value: str) -> bool:
    """Whether ``value`` may be an external id (:data:`EXTERNAL_ID_PATTERN`)."""
    return _EXTERNAL_ID.match(value) is not None
