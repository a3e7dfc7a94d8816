"""The streaming CSV reader: any chunking gives the same records, with the line each starts on."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.imports.csvstream import CsvError, records

SAMPLE = (
    '\ufeffname;street;note\r\nHans;"Haupt; str. 1";"two\nlines"\r\n\r\nErika;Weg 2;plain\nLast;Row 3;no newline at end'
).encode()


async def collect(data: bytes, sizes: list[int]) -> list[tuple[int, list[str]]]:
    async def chunks():
        start = 0
        for size in sizes:
            yield data[start : start + size]
            start += size
        yield data[start:]

    return [row async for row in records(chunks())]


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
