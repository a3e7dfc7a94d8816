"""A Robinson list's rows to keys: normalise each row's postal address and name, and HMAC it (the per-row work).

Kept apart from :mod:`app.imports.robinson` so that a worker process (:mod:`app.imports.robinson_worker`)
imports only this (the reader, the domain's normalisation and the HMAC), not the database layers.
:class:`KeyMaker` does the rows of the import, in one process or in workers alike, and writes the keys in
PostgreSQL's binary ``COPY`` format, ready to be sent as they are; :func:`keys_of_rows` is the plain per-row
rule it must agree with (a hypothesis test holds them equal).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import msgspec

from app.domain.identifiers import InvalidIdentifier, PostalKeys, postal_keys
from app.imports.csvstream import MAX_LINE_BYTES, LineError, too_many_fields
from app.lib.keys import PreparedHmac, suppression_keys

#: The columns a name may come in; ``first_name`` and ``last_name`` are joined.
NAME_COLUMNS = ("name", "first_name", "last_name", "vorname", "nachname")


#: A row as the CSV reader gives it: its line and its fields, or why it cannot be read.
Row = tuple[int, list[str] | LineError]


@dataclass(frozen=True, slots=True)
class Positions:
    """The position of each column a row is read from; -1: the header has no such column."""

    name: int
    first: int
    last: int
    street: int
    house_number: int
    postcode: int
    city: int
    country: int


@dataclass(frozen=True, slots=True)
class Columns:
    """Where each column is (by name, header aliases resolved) and how many the header has."""

    index: dict[str, int]
    width: int
    at: Positions = field(init=False)

    def __post_init__(self) -> None:
        """The positions, found once for the list."""
        where = self.index.get
        positions = Positions(
            *(where(name, -1) for name in ("name", "first_name", "last_name", "street", "house_number")),
            *(where(name, -1) for name in ("postcode", "city", "country")),
        )
        object.__setattr__(self, "at", positions)


@dataclass(slots=True)
class RowsDone:
    """A batch's keys ``(key, key_version)``, and its rejected rows ``(line, code, message)`` in line order."""

    keys: list[tuple[bytes, int]]
    accepted: int
    rejected: list[tuple[int, str, str]]

    def reject(self, line: int, code: str, message: str) -> None:
        """Record a refused row."""
        self.rejected.append((line, code, message))


def keys_of_rows(rows: Sequence[Row], columns: Columns, peppers: dict[int, bytes]) -> RowsDone:
    """The keys of a batch of rows (the person-level print identifier of each, under every pepper version)."""
    done = RowsDone([], 0, [])
    for line, fields in rows:
        identifier = _identifier(line, fields, columns, done)
        if identifier is None:
            continue
        done.accepted += 1
        done.keys.extend((key, version) for version, key in suppression_keys(peppers, "print", identifier).items())
    return done


def _identifier(
    line: int,
    fields: list[str] | LineError,
    columns: Columns,
    done: RowsDone | KeysDone,
    keys_of: PostalKeys | None = None,
) -> str | None:
    """The print identifier of one row (person level), or ``None`` with the row's error recorded."""
    if isinstance(fields, LineError):
        done.reject(line, fields.code, fields.message)
        return None
    count = len(fields)
    if count > columns.width and any(field.strip() for field in fields[columns.width :]):
        extra = too_many_fields(count, columns.width)
        done.reject(line, extra.code, extra.message)
        return None
    if count < columns.width:  # a short row: the missing fields are empty
        fields = fields + [""] * (columns.width - count)
    at = columns.at
    name = (fields[at.name] if at.name >= 0 else "") or f"{_get(fields, at.first)} {_get(fields, at.last)}".strip()
    try:
        key, name_key = (keys_of or postal_keys)(
            street=fields[at.street],
            postcode=fields[at.postcode],
            city=fields[at.city],
            house_number=_get(fields, at.house_number) or None,
            name=name,
            country=_get(fields, at.country) or "DE",
        )
    except InvalidIdentifier as exc:
        done.reject(line, exc.code, str(exc))
        return None
    if name_key is None:
        done.reject(line, "name_missing", "The row has no name (a Robinson entry names the person).")
        return None
    return f"{key}#{name_key}"


#: Binary ``COPY`` (PostgreSQL's format): the stream's header and trailer, and each row's start (two fields, the
#: first a 32-byte key) and end (the key version, a 4-byte integer).
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
COPY_TRAILER = b"\xff\xff"
_ROW_START = struct.pack(">hi", 2, 32)


@dataclass(slots=True)
class KeysDone:
    """Rows done: their keys as binary ``COPY`` rows (``data``), how many were taken, and the first errors.

    ``rejected`` counts every row refused; ``errors`` keeps the first ``keep`` of them ``(line, code, message)``
    in line order (what a report shows), so that memory stays bounded whatever the list holds.
    """

    keep: int
    data: list[bytes] = field(default_factory=list)
    rows: int = 0
    accepted: int = 0
    rejected: int = 0
    errors: list[tuple[int, str, str]] = field(default_factory=list)

    def reject(self, line: int, code: str, message: str) -> None:
        """Count a refused row; keep its error while there are fewer than ``keep``."""
        self.rejected += 1
        if len(self.errors) < self.keep:
            self.errors.append((line, code, message))


class KeyMaker:
    """The keys of a list's rows, as :func:`keys_of_rows` gives them, at a fraction of its cost.

    The same rule per row (:func:`_identifier`, with the parts of the address remembered by
    :class:`~app.domain.identifiers.PostalKeys`), the HMAC with each pepper set up once
    (:class:`~app.lib.keys.PreparedHmac`), and the keys written as binary ``COPY`` rows, not tuples.
    """

    def __init__(self, columns: Columns, peppers: dict[int, bytes]) -> None:
        self.columns = columns
        self._postal = PostalKeys()
        self._peppers = [
            (PreparedHmac(pepper).digest, struct.pack(">ii", 4, version)) for version, pepper in peppers.items()
        ]

    def take(self, rows: Iterable[Row], done: KeysDone) -> None:
        """Add ``rows``' keys to ``done.data`` and their errors to ``done``.

        A row of the header's width with a name and a house number goes the short way
        (:meth:`~app.domain.identifiers.PostalKeys.person`, the country column's value or DE, as
        :func:`_identifier` takes them); any other row, or one the short way does not answer, goes through
        :func:`_identifier`.
        """
        columns, postal, data, peppers = self.columns, self._postal, done.data, self._peppers
        at, width, person = columns.at, columns.width, postal.person
        short = at.name >= 0 and at.house_number >= 0
        for line, fields in rows:
            done.rows += 1
            found = None
            if short and not isinstance(fields, LineError) and len(fields) == width and fields[at.name]:
                country = (fields[at.country] if at.country >= 0 else "") or "DE"
                found = person(
                    fields[at.street],
                    fields[at.postcode],
                    fields[at.city],
                    fields[at.house_number],
                    fields[at.name],
                    country,
                )
            if found is not None:
                message = f"print:{found[0]}#{found[1]}".encode()
            else:
                identifier = _identifier(line, fields, columns, done, postal)
                if identifier is None:
                    continue
                message = f"print:{identifier}".encode()
            done.accepted += 1
            for digest, version in peppers:
                data.append(_ROW_START + digest(message) + version)


def _get(fields: list[str], at: int) -> str:
    return fields[at] if at >= 0 else ""


# -- worker processes (app.imports.robinson_split starts them, app.imports.robinson_worker is one) ----------------

#: A frame from a worker: its kind (``K``: keys, ``S``: the summary, last), the payload's length and the file
#: bytes read since the last frame (for the progress bar).
FRAME = struct.Struct(">cII")
#: The errors a share reports (a report shows the first ones of the whole list).
MAX_SHARE_ERRORS = 100


class Job(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What a worker reads: ``[start, end)`` of ``path``, the header's columns, the peppers it hashes with."""

    path: bytes
    """The file's name as the operating system has it (``os.fsencode``: a name that is not UTF-8 too)."""
    start: int
    end: int
    last: bool
    delimiter: str
    index: dict[str, int]
    width: int
    peppers: dict[int, bytes]
    parent: int = 0
    """The import's process id: a worker whose parent is another one by the time it has its job exits."""
    limit: int = MAX_LINE_BYTES
    keep: int = MAX_SHARE_ERRORS


class Summary(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What a worker found in its share; line numbers count from the share's first line (1).

    ``open``: the share ended inside a quoted field; ``not_utf8``: the first line that is not UTF-8 and why
    (the worker stopped there).
    """

    rows: int
    accepted: int
    rejected: int
    errors: list[tuple[int, str, str]]
    lines: int
    open: bool
    not_utf8: tuple[int, str] | None = None
