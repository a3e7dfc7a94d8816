"""Input PostgreSQL cannot store, refused once for every route before any handler runs.

A NUL character (U+0000) is valid in JSON strings, URLs and forms, but ``text`` and ``jsonb`` columns refuse it:
let through, it fails the statement that writes it (a 500, or an import half written). So a request carrying
one in its path, its query, a JSON body or a form body is answered 422 ``nul_character`` before the handler
runs. Bodies of other types (the streamed imports) are not read here.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from litestar import Request

from app.lib.errors import AppError, InvalidInput

# A JSON ``\u0000`` escape that is not itself escaped (``\\u0000`` is a backslash followed by the text "u0000"):
# an even number of backslashes before it, counted from a character that is not one.
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_JSON = re.compile(r"^application/(?:[\w.+-]*\+)?json\b", re.IGNORECASE)
_FORM = "application/x-www-form-urlencoded"


def json_has_nul(body: bytes) -> bool:
    """True when a JSON text holds a NUL character (only an escape can: raw control characters are malformed)."""
    return b"\\u0000" in body and _JSON_NUL.search(body) is not None


#: How deep a JSON body may nest (the service's bodies nest a few levels): msgspec's decoder recurses per level, and
#: thousands of levels ran it out of stack (a ``RecursionError``: a 500 instead of a 400, hostile review).
MAX_JSON_DEPTH = 64
#: How many arrays and objects a JSON body may hold. Bodies are decoded into Python objects before their schema is
#: checked, so ten megabytes of ``[],`` cost seconds of CPU and hundreds of megabytes (hostile review of the batch
#: runs); the largest legitimate body (a 1,000-run batch, every run with its variables) holds a few thousand.
MAX_JSON_CONTAINERS = 100_000
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_BRACKET = re.compile(rb"[\[\]{}]")


def json_too_complex(body: bytes) -> str | None:
    """Why a JSON text is refused before it is decoded (``json_too_deep``, ``json_too_large``), or ``None``.

    Two counts in C for every body; strings are taken out (brackets in them do not count) only when the counts are
    above a limit at all, and the brackets walked for the depth only when there are at most
    :data:`MAX_JSON_CONTAINERS` of them (so the walk is bounded too).
    """
    opened = body.count(b"[") + body.count(b"{")
    if opened <= MAX_JSON_DEPTH:
        return None
    bare = _JSON_STRING.sub(b'""', body) if b'"' in body else body
    opened = bare.count(b"[") + bare.count(b"{")
    if opened > MAX_JSON_CONTAINERS:
        return "json_too_large"
    if opened <= MAX_JSON_DEPTH:
        return None
    depth = 0
    for bracket in _JSON_BRACKET.finditer(bare):
        depth += 1 if bracket.group() in (b"[", b"{") else -1
        if depth > MAX_JSON_DEPTH:
            return "json_too_deep"
    return None


def json_too_deep(body: bytes) -> bool:
    """True when a JSON text is refused before it is decoded (:func:`json_too_complex`)."""
    return json_too_complex(body) is not None


def form_has_nul(body: bytes) -> bool:
    """True when a URL-encoded text holds a NUL character."""
    return b"%00" in body or b"\0" in body


async def refuse_nul(request: Request[Any, Any, Any]) -> None:
    """``before_request`` hook: 422 when the path, the query, or a JSON or form body carries a NUL character.

    Also 400 ``json_too_deep`` for a JSON body nested deeper than :data:`MAX_JSON_DEPTH` levels, and 400
    ``json_too_large`` for one holding more than :data:`MAX_JSON_CONTAINERS` arrays and objects.
    """
    place = None
    if "\0" in request.scope["path"]:
        place = "path"
    elif form_has_nul(request.scope.get("query_string", b"")):
        place = "query"
    elif request.route_handler.resolve_request_max_body_size() is not None:  # a streamed body is not read here
        content_type = request.headers.get("content-type", "")
        if _JSON.match(content_type):
            body = await request.body()
            refused = json_too_complex(body)
            if refused == "json_too_deep":
                raise AppError(
                    f"The JSON body nests deeper than {MAX_JSON_DEPTH} levels; no request of this service needs that.",
                    code="json_too_deep",
                )
            if refused == "json_too_large":
                raise AppError(
                    f"The JSON body holds more than {MAX_JSON_CONTAINERS:,} arrays and objects; no request of this "
                    "service needs that.",
                    code="json_too_large",
                )
            place = "JSON body" if json_has_nul(body) else None
        elif content_type.lower().startswith(_FORM):
            place = "form body" if form_has_nul(await request.body()) else None
    if place is not None:
        raise InvalidInput(
            f"The {place} contains a NUL character (\\u0000), which cannot be stored. Remove it and send again.",
            code="nul_character",
        )


def in_utc(moment: datetime, field: str) -> datetime:
    """``moment`` in UTC; 422 ``invalid_datetime`` for a time outside the UTC calendar (year 1 at +14:00).

    Comparing or storing one raises ``OverflowError`` deep in the service (a 500, hostile review); every instant a
    caller gives is converted here first.
    """
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(f"'{field}' lies outside the calendar.", code="invalid_datetime") from None
