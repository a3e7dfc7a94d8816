"""The Robinson import's per-row work: the fast key path agrees with the plain rule, and shares of a file read by
worker processes give what one reader gives, or say that they cannot."""

from __future__ import annotations

import hmac
import io
import itertools
import os
import tempfile
from pathlib import Path

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from app.imports.csvstream import RecordReader
from app.imports.robinson_rows import FRAME, Job, KeyMaker, KeysDone, Summary, keys_of_rows
from app.imports.robinson_split import header
from app.imports.robinson_worker import read_share
from app.lib.keys import PreparedHmac

PEPPERS = {1: b"p" * 32, 2: b"q" * 32}
HEADER = "name;street;house_number;postcode;city\n"
COLUMNS = header(1, HEADER.strip().split(";"))

ROWS = st.sampled_from(
    [
        "Hans Müller;Hauptstraße;12a;10115;Berlin",
        "Mueller, Hans;Hauptstr.;12 A;10115;Berlin",
        '"Weiß; Jürgen";"Sankt-Georg-Platz";7;20099;Hamburg',
        '"Anna\nKorn";Weg;1;10115;Berlin',  # a quoted line break
        'Anna Korn;"Weg;1;10115;Berlin',  # a quote never closed
        "Otto Normal;Lindenallee;3;1234;Köln",  # not a German postcode
        ";Ringstraße;4;50667;Köln",  # no name
        "Ida;Weg 5;;10115;Berlin",  # the house number in the street
        "Nul\x00 Person;Weg;2;10115;Berlin",
        "Eva Extra;Weg;5;10115;Berlin;DE;more",
        "Kurz;Weg",
        "",
        " ; ",
        "Dr. Erika Musterfrau;Schulstr.;3-5;80331;München\r",
    ]
)


def test_the_prepared_hmac_is_hmac_sha256():
    for key in (b"", b"k" * 32, b"k" * 64, b"k" * 65, bytes(range(200))):
        for message in (b"", b"print:DE|10115|hauptstr|12a#hans mueller", b"x" * 1000):
            assert PreparedHmac(key).digest(message) == hmac.digest(key, message, "sha256")


def copy_rows(data: bytes) -> list[tuple[bytes, int]]:
    """Binary COPY rows back to ``(key, version)``."""
    rows, at = [], 0
    while at < len(data):
        assert data[at : at + 6] == b"\x00\x02\x00\x00\x00\x20"
        key = data[at + 6 : at + 38]
        assert data[at + 38 : at + 42] == b"\x00\x00\x00\x04"
        rows.append((key, int.from_bytes(data[at + 42 : at + 46], "big")))
        at += 46
    return rows


LAYOUTS = [
    HEADER,
    "vorname;nachname;strasse;hausnr;plz;ort;land\n",  # first and last name, a country column
    "name;street;postcode;city;country\n",  # the house number in the street
]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(LAYOUTS), st.lists(ROWS, max_size=40), st.sampled_from(["", ";DE", ";at", ";FR", ";X"]))
def test_the_key_maker_gives_the_keys_and_errors_of_the_plain_rule(layout, lines, country):
    """The short way and the long way of :class:`KeyMaker` against :func:`keys_of_rows`, in several layouts."""
    records = RecordReader().feed((layout + "\n".join(line + country for line in lines) + "\n").encode())
    columns = header(*records[0])
    records = records[1:]
    plain = keys_of_rows(records, columns, PEPPERS)
    done = KeysDone(keep=1000)
    KeyMaker(columns, PEPPERS).take(records, done)
    assert copy_rows(b"".join(done.data)) == plain.keys
    assert (done.rows, done.accepted, done.rejected) == (len(records), plain.accepted, len(plain.rejected))
    assert done.errors == plain.rejected


def one_reader(data: bytes) -> tuple[list[tuple[bytes, int]], KeysDone]:
    reader = RecordReader()
    records = reader.feed(data) + reader.finish()
    done = KeysDone(keep=1000)
    KeyMaker(COLUMNS, PEPPERS).take(records[1:], done)
    return sorted(copy_rows(b"".join(done.data))), done


def shares(path: Path, bounds: list[int]) -> list[tuple[list[tuple[bytes, int]], Summary]]:
    """Each share read as a worker reads it: its keys and its summary."""
    out = []
    for start, end in itertools.pairwise(bounds):
        job = Job(
            path=os.fsencode(path),
            start=start,
            end=end,
            last=end == bounds[-1],
            delimiter=";",
            index=COLUMNS.index,
            width=COLUMNS.width,
            peppers=PEPPERS,
            keep=1000,
        )
        frames = io.BytesIO()
        read_share(job, frames)
        data, keys = frames.getvalue(), []
        while data:
            kind, length, _ = FRAME.unpack(data[: FRAME.size])
            payload, data = data[FRAME.size : FRAME.size + length], data[FRAME.size + length :]
            if kind == b"K":
                keys += copy_rows(payload)
            else:
                summary = msgspec.msgpack.decode(payload, type=Summary)
        out.append((keys, summary))
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(ROWS, min_size=1, max_size=40), st.data())
def test_shares_read_apart_give_what_one_reader_gives_or_say_they_cannot(lines, data):
    """Cut after any line breaks (inside a quoted field too): if no share ends inside a quoted field, the shares'
    rows, keys and errors (line numbers made absolute) are one reader's; a cut inside one is always detected."""
    body = (HEADER + "\n".join(lines) + data.draw(st.sampled_from(["", "\n"]))).encode()
    breaks = [at + 1 for at in range(len(HEADER), len(body)) if body[at : at + 1] == b"\n"]
    cuts = sorted(set(data.draw(st.lists(st.sampled_from(breaks), max_size=4)) if breaks else []))
    bounds = [len(HEADER), *[cut for cut in cuts if cut < len(body)], len(body)]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "list.csv"
        path.write_bytes(body)
        read = shares(path, bounds)
    expected_keys, expected = one_reader(body)
    if any(summary.open for _, summary in read[:-1]):
        return  # the import reads such a file again in one process
    keys = sorted(key for share_keys, _ in read for key in share_keys)
    assert keys == expected_keys
    assert sum(summary.rows for _, summary in read) == expected.rows
    assert sum(summary.accepted for _, summary in read) == expected.accepted
    errors, before = [], 1
    for _, summary in read:
        errors += [(line + before, code, message) for line, code, message in summary.errors]
        before += summary.lines
    assert errors == expected.errors


def test_a_cut_inside_a_quoted_line_break_is_detected():
    body = (
        HEADER + "A B;Weg;1;10115;Berlin\n" + '"Anna\nKorn";Weg;1;10115;Berlin\n' + "C D;Weg;2;10115;Berlin\n"
    ).encode()
    cut = body.index(b"Anna\n") + len(b"Anna\n")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "list.csv"
        path.write_bytes(body)
        read = shares(path, [len(HEADER), cut, len(body)])
    assert read[0][1].open
