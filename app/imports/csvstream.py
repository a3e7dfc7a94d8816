"""CSV records from a byte stream, in constant memory: UTF-8 (BOM tolerated), ``;`` or ``,`` or tab.

Quoted fields may contain the delimiter and line breaks. Each record comes with the line number it starts on,
so a report can point at the line a person has to fix.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import AsyncIterator

_DELIMITERS = (";", ",", "\t")


class CsvError(ValueError):
    """The stream is not CSV we can read (encoding, missing header)."""


class _Records:
    """Joins physical lines into records: a record ends where its quotes are balanced."""

    def __init__(self) -> None:
        self.line_no = 0
        self.start = 1
        self.open: list[str] = []

    def feed(self, lines: list[str]) -> list[tuple[int, str]]:
        complete: list[tuple[int, str]] = []
        for line in lines:
            self.line_no += 1
            if not self.open:
                self.start = self.line_no
            self.open.append(line.rstrip("\r"))
            text = "\n".join(self.open)
            if text.count('"') % 2 == 0:
                complete.append((self.start, text))
                self.open = []
        return complete

    def finish(self) -> list[tuple[int, str]]:
        """What an unterminated quote left open (parsed as it stands)."""
        rest = [(self.start, "\n".join(self.open))] if self.open else []
        self.open = []
        return rest


async def records(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[int, list[str]]]:
    """``(line number, fields)`` for every non-empty record, the header first."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    joiner = _Records()
    pending = ""
    delimiter: str | None = None
    try:
        async for chunk in chunks:
            pending += decoder.decode(chunk)
            *lines, pending = pending.split("\n")
            batch = joiner.feed(lines)
            delimiter = delimiter or (_sniff(batch[0][1]) if batch else None)
            for row in _parse(batch, delimiter):
                yield row
        pending += decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise CsvError(f"The file is not UTF-8 (near line {joiner.line_no + 1}): {exc.reason}.") from None
    batch = [*joiner.feed([pending] if pending else []), *joiner.finish()]
    delimiter = delimiter or (_sniff(batch[0][1]) if batch else None)
    for row in _parse(batch, delimiter):
        yield row


def _sniff(header: str) -> str:
    counts = {candidate: header.count(candidate) for candidate in _DELIMITERS}
    best = max(counts, key=lambda candidate: counts[candidate])
    return best if counts[best] else ","


def _parse(batch: list[tuple[int, str]], delimiter: str | None) -> list[tuple[int, list[str]]]:
    if not batch:
        return []
    rows = csv.reader((text for _, text in batch), delimiter=delimiter or ",")
    return [(number, fields) for (number, _), fields in zip(batch, rows, strict=True) if any(f.strip() for f in fields)]
