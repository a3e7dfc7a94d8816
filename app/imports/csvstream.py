"""Lines and CSV records from a byte stream a client sends, in bounded memory and linear time.

An import body comes from outside, so nothing in it may decide how much we hold: a line is at most
:data:`MAX_LINE_BYTES` long (an over-long line is reported as that line's error and skipped without being kept),
a quoted CSV field that is never closed ends at that length too (the whole body is cut at the operator's limit,
:mod:`app.imports.limits`). What cannot be read in one line is that line's error, never the whole file's: the
import reports it by line number and takes the rest.

CSV: UTF-8 (BOM tolerated), ``;`` or ``,`` or tab (taken from the header line), quoted fields with the
delimiter, doubled quotes and line breaks, read as Python's :mod:`csv` reads them (``strict=False``). Each
record comes with the line it starts on, so a report points at the line a person has to fix.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

#: The longest line (or quoted record over several lines) taken, in bytes. Every line the consent import can
#: accept fits: a 20,000-character notice text with each character JSON-escaped (``\\uXXXX``, 120 KB) plus
#: the longest evidence and postal fields.
MAX_LINE_BYTES = 256 * 1024

_DELIMITERS = (";", ",", "\t")
_QUOTE = '"'


class CsvError(ValueError):
    """The stream is not CSV we can read as a whole (encoding, missing header)."""


class NotUtf8(CsvError):
    """A line that is not UTF-8 (the first one): the whole file is refused."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"The file is not UTF-8 (line {line}): {reason}.")
        self.line = line
        self.reason = reason


@dataclass(frozen=True, slots=True)
class LineError:
    """A line (or a record over several lines) that cannot be read; the lines around it can."""

    code: str
    message: str


def too_long(limit: int) -> LineError:
    """The error of a line longer than ``limit`` bytes."""
    return LineError(
        "line_too_long",
        f"The line is longer than {limit // 1024} KiB; it was skipped. Is a line break missing, or a field "
        "far too long?",
    )


def too_many_fields(found: int, expected: int) -> LineError:
    """The error of a record with more (non-empty) fields than its header names."""
    return LineError(
        "too_many_fields",
        f"The line has {found} fields where the header has {expected}: a delimiter too many, or a quote that "
        "runs into the next line?",
    )


NUL_IN_LINE = LineError(
    "nul_character", "The line contains a NUL character (\\u0000), which cannot be stored. Remove it."
)


class LineSplitter:
    """Splits chunks into numbered lines (line breaks dropped), holding at most ``limit`` bytes of an open line.

    The parts of a line that spans chunks are joined once, when it ends (no re-joining per chunk). A line that
    grows beyond ``limit`` is reported as a :class:`LineError` the moment it does, and the rest of it is dropped
    as it arrives.
    """

    def __init__(self, limit: int = MAX_LINE_BYTES) -> None:
        self.limit = limit
        self.number = 0
        self._parts: list[bytes] = []
        self._size = 0
        self._skipping = False

    @property
    def skipping(self) -> bool:
        """Whether the rest of an over-long line is being dropped."""
        return self._skipping

    @property
    def held(self) -> int:
        """Bytes of the open line held now (never more than ``limit``)."""
        return self._size

    def feed(self, chunk: bytes) -> list[tuple[int, bytes | LineError]]:
        """The lines ``chunk`` completes (an over-long one as its error, once)."""
        pieces = chunk.split(b"\n")
        rest = pieces.pop()  # the start of a line the next chunk continues
        out: list[tuple[int, bytes | LineError]] = []
        limit = self.limit
        if pieces and (self._parts or self._skipping):  # the first piece ends the line the last chunk left open
            first = pieces.pop(0)
            self.number += 1
            if not self._skipping:  # (a skipped line's error was reported when it grew too long)
                self._parts.append(first)
                fits = self._size + len(first) <= limit
                out.append((self.number, b"".join(self._parts) if fits else too_long(limit)))
            self._parts, self._size, self._skipping = [], 0, False
        if pieces:
            start, self.number = self.number + 1, self.number + len(pieces)
            if max(map(len, pieces)) <= limit:  # the usual case, without a loop in Python
                out.extend(zip(range(start, self.number + 1), pieces, strict=True))
            else:
                out.extend(
                    (number, piece if len(piece) <= limit else too_long(limit))
                    for number, piece in enumerate(pieces, start)
                )
        if rest and not self._skipping:
            self._size += len(rest)
            if self._size > limit:
                out.append((self.number + 1, too_long(limit)))
                self._parts, self._size, self._skipping = [], 0, True
            else:
                self._parts.append(rest)
        return out

    def finish(self) -> list[tuple[int, bytes | LineError]]:
        """The last line, if the stream did not end with a line break."""
        parts, self._parts, self._size = self._parts, [], 0
        if self._skipping or not parts:
            return []
        self.number += 1
        return [(self.number, b"".join(parts))]


Record = tuple[int, list[str] | LineError]

UNCLOSED_AFTER_UNCLOSED = LineError(
    "unclosed_quote",
    "The quote opened on this line is not closed on it; it follows a quote that was never closed, so it is read "
    "on its own and not taken.",
)


class _Records:
    """Physical lines to CSV records: a record ends at the first line break outside a quoted field.

    Where a line ends inside a quoted field (a quote opened at the start of a field and not closed), the record
    goes on with the next line, up to ``limit`` bytes. A quote that is never closed within that (or before the
    end of the file) is the error of the line it opened on; the lines it swallowed are then read again, each on
    its own (one that again ends inside a quote is its own error), so every line is scanned at most twice.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.delimiter: str | None = None
        self.first = True
        self.open: list[tuple[int, str, int]] = []  # (number, text, bytes) of the record's lines so far
        self.size = 0

    def feed(self, items: Iterable[tuple[int, bytes | LineError]]) -> list[Record]:
        out: list[Record] = []
        for number, raw in items:
            if isinstance(raw, LineError):
                self._line(number, raw, 0, out)
                continue
            data = raw.removeprefix(codecs.BOM_UTF8) if self.first else raw
            self.first = False
            try:
                text = data.decode()
            except UnicodeDecodeError as exc:
                raise NotUtf8(number, exc.reason) from None
            self._line(number, text.removesuffix("\r"), len(raw), out)
        return out

    def finish(self) -> list[Record]:
        out: list[Record] = []
        if self.open:
            self._give_up("The quote opened on this line is not closed before the end of the file.", out)
        return out

    def _line(self, number: int, text: str | LineError, size: int, out: list[Record], *, alone: bool = False) -> None:
        if self.open:
            if isinstance(text, LineError) or self.size + size > self.limit:
                self._give_up(
                    f"The quote opened on this line is not closed within {self.limit // 1024} KiB.",
                    out,
                    (number, text, size),
                )
                return
            self.open.append((number, text, size))
            self.size += size + 1
            if not _ends_in_quotes(text, self.delimiter or ",", in_quotes=True):
                start = self.open[0][0]
                record = "\n".join(part for _, part, _ in self.open)
                self.open, self.size = [], 0
                out.append((start, _fields(record, self.delimiter or ",")))
            return
        if isinstance(text, LineError):
            out.append((number, text))
            return
        if self.delimiter is None:
            if not text.strip():
                return
            self.delimiter = _sniff(text)
        if _QUOTE in text and _ends_in_quotes(text, self.delimiter, in_quotes=False):
            if alone:
                out.append((number, UNCLOSED_AFTER_UNCLOSED))
            else:
                self.open, self.size = [(number, text, size)], size + 1
            return
        out.append((number, _fields(text, self.delimiter)))

    def _give_up(self, why: str, out: list[Record], then: tuple[int, str | LineError, int] | None = None) -> None:
        """Report the line the open quote started on; read the lines it swallowed (and ``then``) on their own."""
        (start, _, _), *swallowed = self.open
        self.open, self.size = [], 0
        out.append((start, LineError("unclosed_quote", f"{why} The line was not taken; the lines after it were read.")))
        for number, text, size in [*swallowed, *([then] if then else [])]:
            self._line(number, text, size, out, alone=True)  # opens no record: nothing is read a third time


def _ends_in_quotes(text: str, delimiter: str, *, in_quotes: bool) -> bool:
    """Whether ``text`` ends inside a quoted field, read as :mod:`csv` reads it (``doublequote``, not strict).

    A quote opens a quoted field only at the start of a field; elsewhere it is a character of the field. In a
    quoted field a doubled quote is a quote; a single one closes the field, and what follows up to the next
    delimiter belongs to the field as it stands.
    """
    i, n = 0, len(text)
    while True:
        if in_quotes:
            j = text.find(_QUOTE, i)
            if j < 0:
                return True
            if j + 1 < n and text[j + 1] == _QUOTE:
                i = j + 2
                continue
            in_quotes = False
            j = text.find(delimiter, j + 1)
            if j < 0:
                return False
            i = j + 1
        if i < n and text[i] == _QUOTE:  # the start of a field
            in_quotes = True
            i += 1
            continue
        j = text.find(delimiter, i)
        if j < 0:
            return False
        i = j + 1


def _fields(record: str, delimiter: str) -> list[str] | LineError:
    if "\0" in record:
        return NUL_IN_LINE
    if _QUOTE not in record:
        return record.split(delimiter)
    try:
        return next(csv.reader((record,), delimiter=delimiter, strict=False))
    except csv.Error as exc:
        return LineError("malformed_line", f"The line is not valid CSV: {exc}.")


async def records(chunks: AsyncIterator[bytes], limit: int = MAX_LINE_BYTES) -> AsyncIterator[Record]:
    """``(line number, fields or the line's error)`` for every non-empty record, the header first."""
    reader = RecordReader(limit)
    async for chunk in chunks:
        for record in reader.feed(chunk):
            yield record
    for record in reader.finish():
        yield record


class RecordReader:
    """:func:`records` fed by hand: every non-empty record of the chunks given, in order.

    Whole lines without a quote or a NUL character, in a chunk that is valid UTF-8, once the header is read and no
    record is open, are split here in one pass (the plain rows of a long list, several times cheaper); everything
    else goes through :class:`LineSplitter` and the record rules one line at a time. Both give the same records:
    such a line is a record of its fields split at the delimiter (what :func:`_fields` does), numbered as the
    splitter numbers it. ``tests/unit/test_csvstream.py`` holds the two paths to the same answers.

    A reader may start in the middle of a file (a worker's share of it, :mod:`app.imports.robinson_rows`): given
    the header's ``delimiter``, it reads as if a header had been read on the lines before ``first_line``.
    :attr:`open` then tells whether the share ended inside a quoted field (the next share did not start on a
    record boundary).
    """

    def __init__(self, limit: int = MAX_LINE_BYTES, *, delimiter: str | None = None, first_line: int = 1) -> None:
        self.limit = limit
        self.splitter = LineSplitter(limit)
        self.splitter.number = first_line - 1
        self.reader = _Records(limit)
        if delimiter is not None:
            self.reader.delimiter, self.reader.first = delimiter, False

    @property
    def open(self) -> bool:
        """Whether the lines read so far end inside a quoted field (or a line not ended)."""
        return bool(self.reader.open) or self.splitter.held > 0

    @property
    def lines(self) -> int:
        """The number of the last line read in full."""
        return self.splitter.number

    def feed(self, chunk: bytes) -> list[Record]:
        """The records ``chunk`` completes."""
        out: list[Record] = []
        if not self._clean():  # a line or a record goes on from the last chunk: up to its line's end, line by line
            end = chunk.find(b"\n") + 1
            if not end:
                return self._slow(chunk)
            out += self._slow(chunk[:end])
            chunk = chunk[end:]
            if not self._clean():
                return out + self._slow(chunk)
        end = chunk.rfind(b"\n") + 1
        if end:
            out += self._whole_lines(chunk[:end])
        if end < len(chunk):
            out += self._slow(chunk[end:])
        return out

    def finish(self) -> list[Record]:
        """The last records: a last line without a line break, a quote never closed."""
        out = [*self.reader.feed(self.splitter.finish()), *self.reader.finish()]
        return [record for record in out if _kept(record)]

    def _clean(self) -> bool:
        reader = self.reader
        return not (
            reader.open or reader.first or reader.delimiter is None or self.splitter.held or self.splitter.skipping
        )

    def _slow(self, chunk: bytes) -> list[Record]:
        return [record for record in self.reader.feed(self.splitter.feed(chunk)) if _kept(record)]

    def _whole_lines(self, chunk: bytes) -> list[Record]:
        """Records of ``chunk``, whole lines (it ends with a line break) read from a clean state."""
        try:
            text = chunk.decode()
        except UnicodeDecodeError:
            return self._slow(chunk)  # the line at fault is reported by its number
        if _QUOTE in text or "\0" in text or (len(chunk) > self.limit and _longest_line(chunk) > self.limit):
            return self._slow(chunk)
        lines = text.split("\n")
        lines.pop()  # after the last line break
        if "\r" in text:
            lines = [line.removesuffix("\r") for line in lines]
        delimiter = self.reader.delimiter
        assert delimiter is not None  # _clean
        first = self.splitter.number + 1
        self.splitter.number += len(lines)
        out: list[Record] = []
        for number, line in enumerate(lines, first):
            fields = line.split(delimiter)
            start = line[:1]
            if (start and start != delimiter and not start.isspace()) or any(field.strip() for field in fields):
                out.append((number, fields))
        return out


def _longest_line(chunk: bytes) -> int:
    return max(map(len, chunk.split(b"\n")))


def _kept(record: Record) -> bool:
    fields = record[1]
    return isinstance(fields, LineError) or any(field.strip() for field in fields)


def _sniff(header: str) -> str:
    counts = {candidate: header.count(candidate) for candidate in _DELIMITERS}
    best = max(counts, key=lambda candidate: counts[candidate])
    return best if counts[best] else ","
