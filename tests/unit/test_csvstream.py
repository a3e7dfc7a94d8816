"""The streaming CSV reader: any chunking gives the same records, with the line each starts on; memory stays
bounded whatever the body holds, and a line that cannot be read is that line's error, never the file's."""

from __future__ import annotations

import csv
import io
import time
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.imports.csvstream import MAX_LINE_BYTES, CsvError, LineError, LineSplitter, RecordReader, records

SAMPLE = (
    '\ufeffname;street;note\r\nHans;"Haupt; str. 1";"two\nlines"\r\n\r\nErika;Weg 2;plain\nLast;Row 3;no newline at end'
).encode()


async def collect(data: bytes, sizes: list[int], limit: int | None = None) -> list[tuple[int, list[str] | LineError]]:
    async def chunks():
        start = 0
        for size in sizes:
            yield data[start : start + size]
            start += size
        yield data[start:]

    reading = records(chunks()) if limit is None else records(chunks(), limit)
    return [row async for row in reading]


def codes(rows):
    return [(number, fields.code if isinstance(fields, LineError) else fields) for number, fields in rows]


EXPECTED = [
    (1, ["name", "street", "note"]),
    (2, ["Hans", "Haupt; str. 1", "two\nlines"]),
    (5, ["Erika", "Weg 2", "plain"]),
    (6, ["Last", "Row 3", "no newline at end"]),
]


async def test_records_with_quotes_bom_crlf_and_blank_lines():
    assert await collect(SAMPLE, []) == EXPECTED


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=9), max_size=40))
async def test_any_chunking_gives_the_same_records(sizes):
    assert await collect(SAMPLE, sizes) == EXPECTED


async def test_comma_and_tab_files():
    assert await collect(b"a,b\n1,2\n", []) == [(1, ["a", "b"]), (2, ["1", "2"])]
    assert await collect(b"a\tb\n1\t2\n", []) == [(1, ["a", "b"]), (2, ["1", "2"])]


async def test_a_multibyte_character_split_across_chunks():
    data = "name\nJürgen\n".encode()
    split = data.index("ü".encode()) + 1
    assert await collect(data, [split]) == [(1, ["name"]), (2, ["Jürgen"])]


async def test_not_utf8_is_an_error():
    with pytest.raises(CsvError, match="not UTF-8"):
        await collect("name\nJürgen\n".encode("latin-1"), [])


async def test_quoted_fields_hold_line_breaks_doubled_quotes_and_delimiters_across_chunks():
    data = b'a;b;c\n1;"say ""hi""\n\nbye; now";x\n2;O"Brien;x\n3;"";"z"\n'
    expected = [
        (1, ["a", "b", "c"]),
        (2, ["1", 'say "hi"\n\nbye; now', "x"]),
        (5, ["2", 'O"Brien', "x"]),  # a quote inside an unquoted field is a character, as csv reads it
        (6, ["3", "", "z"]),
    ]
    for size in (1, 2, 3, 5, 7, len(data)):
        assert await collect(data, [size] * (len(data) // size)) == expected, size


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='ab;"\n', max_size=60))
async def test_records_are_what_the_csv_module_reads(body):
    """Where no line is in error, the records are exactly the csv module's, read from the whole file at once."""
    data = "h;i\n" + body
    ours = await collect(data.encode(), [3] * 30)
    if any(isinstance(fields, LineError) for _, fields in ours):
        return
    theirs = [row for row in csv.reader(io.StringIO(data, newline=""), delimiter=";") if any(f.strip() for f in row)]
    assert [fields for _, fields in ours] == theirs


async def test_a_quote_unclosed_at_the_end_of_the_file_is_its_lines_error_and_the_lines_after_it_are_read():
    data = b'a;b\n1;ok\n2;"never closed\n3;fine\n4;also fine'
    assert codes(await collect(data, [4] * 20)) == [
        (1, ["a", "b"]),
        (2, ["1", "ok"]),
        (3, "unclosed_quote"),
        (4, ["3", "fine"]),
        (5, ["4", "also fine"]),
    ]


async def test_an_unclosed_quote_ends_at_the_line_limit_and_the_rest_is_read():
    good = b"x;" + b"y" * 90 + b"\n"
    data = b'a;b\n1;"never closed\n' + good * 40 + b'2;"quoted\nover two lines"\n'
    rows = codes(await collect(data, [64] * 200, limit=1024))
    assert rows[:2] == [(1, ["a", "b"]), (2, "unclosed_quote")]
    assert rows[2:42] == [(number, ["x", "y" * 90]) for number in range(3, 43)]
    assert rows[42:] == [(43, ["2", "quoted\nover two lines"])], "after the swallowed lines, reading goes on as usual"


async def test_reading_again_after_an_unclosed_quote_is_linear():
    """Lines that would each open a quote again are read once more on their own, not each up to the limit."""
    data = b'a;b\n1;"open\n' + b'x";"y\n' * 200_000
    started = time.perf_counter()
    rows = await collect(data, [65536] * 30)
    assert time.perf_counter() - started < 10
    assert len(rows) == 200_002
    assert {fields.code for _, fields in rows[1:] if isinstance(fields, LineError)} == {"unclosed_quote"}


async def test_a_line_without_line_break_beyond_the_limit_is_its_lines_error_in_bounded_memory():
    limit = 64 * 1024
    piece = b"x" * 16384

    async def body():
        yield b"a;b\n1;ok\n2;"
        for _ in range(512):  # 8 MiB without a line break
            yield piece
        yield b"\n3;after\n"

    tracemalloc.start()
    try:
        rows = [row async for row in records(body(), limit)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert codes(rows) == [(1, ["a", "b"]), (2, ["1", "ok"]), (3, "line_too_long"), (4, ["3", "after"])]
    assert peak < 4 * limit, f"{peak} bytes held for an 8 MiB line"


def test_the_splitter_never_holds_more_than_its_limit():
    splitter = LineSplitter(1000)
    out = []
    for chunk in [b"ok\nstart", *([b"z" * 300] * 10), b"end\nnext", b" line"]:
        out += splitter.feed(chunk)
        assert splitter.held <= 1000
    out += splitter.finish()
    assert [(n, line if isinstance(line, bytes) else line.code) for n, line in out] == [
        (1, b"ok"),
        (2, "line_too_long"),
        (3, b"next line"),
    ]


async def test_a_nul_character_is_its_lines_error():
    data = b"a;b\n1;x\x00y\n2;fine\n"
    assert codes(await collect(data, [])) == [(1, ["a", "b"]), (2, "nul_character"), (3, ["2", "fine"])]


async def test_a_line_csv_cannot_read_is_its_lines_error():
    data = b'a;b\n1;"x"\ry\n2;"fine"\n'  # a carriage return in the middle of an unquoted field
    assert codes(await collect(data, [])) == [(1, ["a", "b"]), (2, "malformed_line"), (3, ["2", "fine"])]


# --- the whole-line fast path of RecordReader --------------------------------------------------------------------


def line_by_line(data: bytes, sizes: list[int], limit: int) -> list[tuple[int, list[str] | LineError]]:
    """The records as the splitter and the record rules give them one line at a time (no fast path)."""
    reader = RecordReader(limit)
    out = []
    start = 0
    for size in [*sizes, len(data)]:
        out += reader._slow(data[start : start + size])  # the path the fast one must agree with
        start += size
    return out + reader.finish()


def chunked(data: bytes, sizes: list[int], limit: int) -> list[tuple[int, list[str] | LineError]]:
    reader = RecordReader(limit)
    out = []
    start = 0
    for size in [*sizes, len(data)]:
        out += reader.feed(data[start : start + size])
        start += size
    return out + reader.finish()


_LINES = st.lists(
    st.one_of(
        st.text(alphabet="ab ;", max_size=12),  # plain rows, blank ones, rows of only delimiters
        st.text(alphabet='ab;"\n\r', max_size=12),  # quotes, quoted line breaks, CR
        st.sampled_from(["\x00;x", "ü;ß", "a;b\r", " ;\t", "x" * 40]),
    ),
    max_size=30,
)


@settings(max_examples=400, deadline=None)
@given(
    lines=_LINES,
    sizes=st.lists(st.integers(min_value=1, max_value=64), max_size=20),
    bom=st.booleans(),
    crlf=st.booleans(),
    ending=st.booleans(),
)
def test_the_whole_line_fast_path_gives_the_records_of_the_line_by_line_path(lines, sizes, bom, crlf, ending):
    """Whatever the chunks, quotes, CRLF, BOM, NUL or over-long lines (limit 32 bytes here): the same records."""
    body = ("\r\n" if crlf else "\n").join(["h;i", *lines]) + ("\n" if ending else "")
    data = (b"\xef\xbb\xbf" if bom else b"") + body.encode()
    assert chunked(data, sizes, 32) == line_by_line(data, sizes, 32)


def test_a_file_that_is_not_utf8_is_refused_at_its_line_on_the_fast_path_too():
    data = b"h;i\n" + b"a;b\n" * 5 + b"\xff;x\n" + b"c;d\n"
    with pytest.raises(CsvError, match=r"line 7"):
        chunked(data, [], MAX_LINE_BYTES)


def test_a_reader_may_start_in_the_middle_given_the_delimiter_and_its_first_line():
    reader = RecordReader(delimiter=";", first_line=10)
    assert reader.feed(b'a;b\n\nc;"d\ne"\n') == [(10, ["a", "b"]), (12, ["c", "d\ne"])]
    assert reader.lines == 13
    assert not reader.open
    assert reader.feed(b'x;"open\n') == []
    assert reader.open, "the share ended inside a quoted field"
