"""Primary keys generated in the process.

Time-ordered UUIDs (version 7, RFC 9562) by default, random ones where a key's age would tell something
(:func:`opaque_id`).
"""

from __future__ import annotations

import os
import time
import uuid


def uuid7() -> uuid.UUID:
    """A UUIDv7: 48-bit Unix milliseconds, then 74 random bits (version and variant set)."""
    millis = time.time_ns() // 1_000_000
    value = (millis & 0xFFFF_FFFF_FFFF) << 80 | int.from_bytes(os.urandom(10), "big")
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return uuid.UUID(int=value)


#: The 74 random bits of a UUIDv7 within its lower 80 bits (the version's 4 and the variant's 2 bits left out).
_RANDOM_BITS = ((1 << 80) - 1) & ~(0xF << 76) & ~(0x3 << 62)


def uuid7s(count: int) -> list[uuid.UUID]:
    """``count`` UUIDv7s as :func:`uuid7` makes them, of one millisecond, their random bits read at once (a batch)."""
    stamp = (time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | 0x2 << 62
    random = os.urandom(10 * count)
    return [
        uuid.UUID(int=stamp | int.from_bytes(random[at : at + 10], "big") & _RANDOM_BITS)
        for at in range(0, 10 * count, 10)
    ]


def opaque_id() -> uuid.UUID:
    """A random UUID (version 4), for ids shown to callers who must not learn when the row was made.

    Contacts and contact points: a sign-up answers their ids to a public form's key whether or not the address was
    known, and a UUIDv7's creation time would tell an old customer from a new sign-up (no enumeration, API.md).
    """
    return uuid.uuid4()


def parse_uuid(value: str | None) -> uuid.UUID | None:
    """``value`` as a UUID, or ``None`` when it is empty or not one (a reference may be an id or an external id)."""
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
