"""ISO 8601 durations of chain steps (``PT2H``, ``P3D``, ``P1W``, ``PT0S``): fixed lengths only, bounded."""

from __future__ import annotations

import re
from datetime import timedelta

#: The longest delay a step may have.
MAXIMUM = timedelta(days=365)

_DURATION = re.compile(
    r"^P(?:(?P<weeks>\d{1,4})W)?(?:(?P<days>\d{1,4})D)?"
    r"(?:T(?:(?P<hours>\d{1,5})H)?(?:(?P<minutes>\d{1,6})M)?(?:(?P<seconds>\d{1,8})S)?)?$"
)


class DurationError(ValueError):
    """Not a duration a step can wait (the message says why)."""


def parse(value: str) -> timedelta:
    """The length of an ISO 8601 duration of weeks, days, hours, minutes and seconds, at most :data:`MAXIMUM`.

    Years and months are refused: their length depends on the calendar (write days).
    """
    match = _DURATION.match(value)
    if match is None or value in {"P", "PT"} or value.endswith("T"):
        date_part = value.split("T", maxsplit=1)[0]
        if value.startswith("P") and ("Y" in date_part or "M" in date_part):
            raise DurationError("years and months have no fixed length; write days (P30D)")
        raise DurationError("must be an ISO 8601 duration such as PT2H, P3D or PT0S")
    parts = {name: int(number) for name, number in match.groupdict().items() if number is not None}
    length = timedelta(**parts)
    if length > MAXIMUM:
        raise DurationError(f"must be at most {MAXIMUM.days} days")
    return length
