"""The operator's limit on an import body (``CONSENT_IMPORT_MAX_BYTES``), enforced while the body streams.

Imports are streamed in constant memory, so the limit is not about our memory but about how long one client may
keep a worker and the ledger busy. It is checked without buffering: a declared ``Content-Length`` beyond it is
refused before anything is read, and a body sent without one (chunked) is counted as it arrives and cut where it
passes the limit. What the import had taken by then stays taken; importing is idempotent, so the remainder (or
the whole file, split) can simply be sent again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from app.lib.errors import AppError


class BodyLimitReached(Exception):  # an outcome: the import answers it with what it had done
    """The body went beyond the limit; reading stopped there."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"body larger than {limit} bytes")
        self.limit = limit


class ImportTooLarge(AppError):
    """An import body beyond ``CONSENT_IMPORT_MAX_BYTES`` (413)."""

    status = 413
    code = "request_too_large"
    title = "Request too large"


def too_large(limit: int, done: str, extra: Mapping[str, Any] | None = None) -> ImportTooLarge:
    """The 413 answer: the limit, who sets it, what was done before reading stopped (``done``), what to do."""
    return ImportTooLarge(
        f"The body is larger than this server takes for one import ({size_text(limit)}, the operator's "
        f"CONSENT_IMPORT_MAX_BYTES). {done} Importing is idempotent: split the file and import the parts (lines "
        "already recorded record nothing again).",
        extra={"max_bytes": limit, **(extra or {})},
    )


def size_text(size: int) -> str:
    """``size`` bytes for a person: ``1 GiB``, ``512 MiB``, ``300 KiB``, ``999 bytes``."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor:
            whole, rest = divmod(size, factor)
            return f"{whole} {unit}" if not rest else f"{size / factor:.1f} {unit}"
    return f"{size} bytes"


def declared_too_large(content_length: str | None, limit: int) -> bool:
    """Whether a declared ``Content-Length`` is beyond ``limit`` (refused before a byte is read)."""
    return content_length is not None and content_length.strip().isdigit() and int(content_length) > limit


async def limited(chunks: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """``chunks`` as they come, raising :class:`BodyLimitReached` as soon as more than ``limit`` bytes came."""
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise BodyLimitReached(limit)
        yield chunk
