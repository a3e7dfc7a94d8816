"""A Robinson list's rows to keys: normalise each row's postal address and name, and HMAC it (the per-row work).

Kept apart from :mod:`app.imports.robinson` so that a worker process imports only this (the domain's
normalisation and the HMAC), not the database layers: beyond its first batch, a list's batches are done by
worker processes (:class:`RowBatches`) while this process reads the file and copies the keys. One function,
:func:`keys_of_rows`, does a batch either way, so the keys and the errors are the same in both.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.context
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field

from app.domain.identifiers import InvalidIdentifier, postal_keys
from app.imports.csvstream import LineError, too_many_fields
from app.lib.keys import suppression_keys

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


def _identifier(line: int, fields: list[str] | LineError, columns: Columns, done: RowsDone) -> str | None:
    """The print identifier of one row (person level), or ``None`` with the row's error recorded."""
    if isinstance(fields, LineError):
        done.rejected.append((line, fields.code, fields.message))
        return None
    count = len(fields)
    if count > columns.width and any(field.strip() for field in fields[columns.width :]):
        extra = too_many_fields(count, columns.width)
        done.rejected.append((line, extra.code, extra.message))
        return None
    if count < columns.width:  # a short row: the missing fields are empty
        fields = fields + [""] * (columns.width - count)
    at = columns.at
    name = (fields[at.name] if at.name >= 0 else "") or f"{_get(fields, at.first)} {_get(fields, at.last)}".strip()
    try:
        key, name_key = postal_keys(
            street=fields[at.street],
            postcode=fields[at.postcode],
            city=fields[at.city],
            house_number=_get(fields, at.house_number) or None,
            name=name,
            country=_get(fields, at.country) or "DE",
        )
    except InvalidIdentifier as exc:
        done.rejected.append((line, exc.code, str(exc)))
        return None
    if name_key is None:
        done.rejected.append((line, "name_missing", "The row has no name (a Robinson entry names the person)."))
        return None
    return f"{key}#{name_key}"


def _get(fields: list[str], at: int) -> str:
    return fields[at] if at >= 0 else ""


# -- worker processes ----------------------------------------------------------------------------------------------

_peppers: dict[int, bytes] = {}


def _start_worker(peppers: dict[int, bytes]) -> None:
    """A worker's start: the peppers it hashes with (only these; no other key of the service)."""
    _peppers.update(peppers)


def _work(rows: Sequence[Row], columns: Columns) -> RowsDone:
    return keys_of_rows(rows, columns, _peppers)


def _context() -> multiprocessing.context.BaseContext:
    """``fork`` where this process runs one thread, else ``spawn``.

    The CLI reads its file on a thread, so it spawns too (docs/security.md, "Open"): the fork path is taken only
    by a one-thread caller (the tests).

    A forked worker starts at once and runs only :func:`keys_of_rows` (no I/O, no logging; it never touches the
    inherited event loop or connections, and leaves with ``os._exit``): with a single thread no lock can be held
    at the fork. ``spawn`` (a server with threads) starts a fresh interpreter, which imports the main module
    first: about 3 s for the CLI's, during which the first batches wait.
    """
    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


class RowBatches:
    """Full batches of rows done by ``workers`` worker processes, their results taken in the order given.

    The first full batch starts the workers (a list shorter than a batch never starts them; ``workers`` < 2:
    every batch is done here). At most two batches per worker are out at a time, so memory stays
    bounded whatever the list's length. How the workers start: see :func:`_context`.
    """

    def __init__(self, workers: int, peppers: dict[int, bytes]) -> None:
        self._workers = workers
        self._peppers = peppers
        self._pool: ProcessPoolExecutor | None = None
        self._out: deque[Future[RowsDone]] = deque()

    async def full(self, rows: Sequence[Row], columns: Columns) -> list[RowsDone]:
        """Give a full batch; answers the results to take now (the oldest ones, once enough are out)."""
        if self._workers < 2:  # noqa: PLR2004  # one worker would only add the pickling
            return [keys_of_rows(rows, columns, self._peppers)]
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self._workers,
                mp_context=_context(),
                initializer=_start_worker,
                initargs=(self._peppers,),
            )
        self._out.append(self._pool.submit(_work, rows, columns))
        taken = []
        while len(self._out) > 2 * self._workers:
            taken.append(await asyncio.wrap_future(self._out.popleft()))
        return taken

    async def last(self, rows: Sequence[Row], columns: Columns) -> list[RowsDone]:
        """Every batch still out, then the last (partial) one, done here."""
        taken = [await asyncio.wrap_future(self._out.popleft()) for _ in range(len(self._out))]
        return [*taken, keys_of_rows(rows, columns, self._peppers)]

    def close(self) -> None:
        """Stop the workers (batches not taken are dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
