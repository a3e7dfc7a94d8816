"""Input PostgreSQL cannot store, refused once for every route before any handler runs.

A NUL character (U+0000) is valid in JSON strings, URLs and forms, but ``text`` and ``jsonb`` columns refuse it:
let through, it fails the statement that writes it (a 500, or an import half written). So a request carrying
one in its path, its query, a JSON body or a form body is answered 422 ``nul_character`` before the handler
runs. Bodies of other types (the streamed imports) are not read here.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import cache
from typing import Any

import msgspec
import msgspec.inspect as mi
from litestar import Request

from app.lib.errors import AppError, InvalidInput, body_annotation

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

    Also 400 ``json_too_deep`` for a JSON body nested deeper than :data:`MAX_JSON_DEPTH` levels, 400
    ``json_too_large`` for one holding more than :data:`MAX_JSON_CONTAINERS` arrays and objects, and 422
    ``validation_failed`` for a number where the body's schema asks for a date-time
    (:func:`refuse_numeric_datetimes`).
    """
    place = None
    if "\0" in request.scope["path"]:
        place = "path"
    elif form_has_nul(request.scope.get("query_string", b"")):
        place = "query"
    elif request.route_handler.resolve_request_max_body_size() is not None:  # a streamed body is not read here
        content_type = request.headers.get("content-type", "")
        # a route with a ``data`` parameter decodes its body as JSON whatever the Content-Type says (a text/plain
        # body, which any web page can make a browser send, went past these checks: a 500 for deep nesting and
        # seconds of CPU for a large one; a date-time given as a number was taken: hostile review 2026-12-06)
        if _JSON.match(content_type) or body_annotation(request) is not None:
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
            if place is None:
                refuse_numeric_datetimes(request, body)
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


# --- date-times given as numbers -----------------------------------------------------------------------------------
#
# Litestar converts a handler's parameters, its JSON body among them, with msgspec's lax rules (``strict=False``: the
# query's and the path's values are text). Those rules also take a number, or a string holding one, as a Unix
# timestamp for a ``datetime``: ``"purchased_at": 5`` was a sale in 1970 (hostile review of 2026-12-05). Strict
# decoding of the whole body would refuse that, and also what callers send today and the lax rules take ("5" for a
# number, "true" or 1 for a boolean, "null" for an absent value), so only the date-time fields are held to text.


def refuse_numeric_datetimes(request: Request[Any, Any, Any], body: bytes) -> None:
    """422 ``validation_failed`` naming the field when the JSON ``body`` gives a number for one of its date-times.

    Only for a route whose body type has a date-time anywhere (the others are not decoded here); a body that is not
    JSON is left to the route, which answers it as it always did.
    """
    try:
        shape = datetime_shape(body_annotation(request))
    except TypeError:  # an annotation that cannot be a cache key (none of ours): left to the route as before
        return
    if shape is None or not body:
        return
    try:
        decoded = msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return
    field = numeric_datetime(shape, decoded)
    if field is None:
        return
    message = NUMERIC_DATETIME
    raise InvalidInput(
        f"{field}: {message}" if field else message,
        extra={"errors": [{"field": field or None, "message": message}]},
    )


NUMERIC_DATETIME = "Expected an RFC 3339 date-time such as `2026-12-06T10:00:00Z`, got a number"


def numeric_datetime(info: Any, value: Any, path: str = "") -> str | None:  # noqa: C901, PLR0911, PLR0912
    """Where in ``value`` (decoded JSON of the type ``info`` describes) a date-time is given as a number, or ``None``.

    The place is named as the schema errors name it (``steps[0].send_at``; ``""`` for the value itself). A string
    holding a number counts as one (the lax rules read ``"5"`` as 1970 as well); ``"null"`` and text that is no
    date-time are left to the schema check, which answers them as before.
    """
    if isinstance(info, mi.DateTimeType):
        return path if _a_number(value) else None
    if isinstance(info, mi.UnionType):
        if value is None:
            return None
        kinds = [_bare(t) for t in info.types]
        only_datetime = not any(isinstance(t, (mi.IntType, mi.FloatType, mi.StrType, mi.AnyType)) for t in kinds)
        if only_datetime and any(isinstance(t, mi.DateTimeType) for t in kinds) and _a_number(value):
            return path
        for kind in kinds:  # the one member a JSON object, or array, is decoded as
            if isinstance(value, dict) and isinstance(kind, _OBJECTS) and _tag_fits(kind, value):
                return numeric_datetime(kind, value, path)
            if isinstance(value, list) and isinstance(kind, _ARRAYS):
                return numeric_datetime(kind, value, path)
        return None
    if isinstance(info, mi.Metadata):
        return numeric_datetime(info.type, value, path)
    if isinstance(info, _OBJECTS):
        if not isinstance(value, dict):
            return None
        for field in info.fields:
            if field.encode_name in value:
                found = numeric_datetime(field.type, value[field.encode_name], _joined(path, field.encode_name))
                if found is not None:
                    return found
        return None
    if isinstance(info, (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)):
        if isinstance(value, list):
            for index, item in enumerate(value):
                found = numeric_datetime(info.item_type, item, f"{path}[{index}]")
                if found is not None:
                    return found
        return None
    if isinstance(info, mi.TupleType):
        if isinstance(value, list):
            for index, (kind, item) in enumerate(zip(info.item_types, value, strict=False)):
                found = numeric_datetime(kind, item, f"{path}[{index}]")
                if found is not None:
                    return found
        return None
    if isinstance(info, mi.DictType) and isinstance(value, dict):
        for key, item in value.items():
            found = numeric_datetime(info.value_type, item, _joined(path, str(key)))
            if found is not None:
                return found
    return None


_OBJECTS = (mi.StructType, mi.TypedDictType, mi.DataclassType)
_ARRAYS = (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType, mi.TupleType)


def _bare(info: Any) -> Any:
    """The type behind ``Annotated`` metadata (a description, an example)."""
    while isinstance(info, mi.Metadata):
        info = info.type
    return info


def _joined(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _tag_fits(kind: Any, value: dict[str, Any]) -> bool:
    """Whether the object ``value`` is the member ``kind`` of a tagged union (always, for an untagged one)."""
    tag_field = getattr(kind, "tag_field", None)
    return tag_field is None or value.get(tag_field) == kind.tag


def _a_number(value: Any) -> bool:
    """A JSON number, or a string msgspec's lax rules read as a Unix timestamp."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    if not isinstance(value, str):
        return False
    try:
        msgspec.convert(value, datetime)
    except msgspec.ValidationError:
        pass
    else:
        return False  # a date-time as text
    try:
        msgspec.convert(value, datetime, strict=False)
    except msgspec.ValidationError:
        return False  # neither: the schema check says what is wrong
    return True


@cache
def datetime_shape(annotation: Any) -> Any:
    """The msgspec description of ``annotation`` if it holds a date-time anywhere, else ``None`` (once per type)."""
    if annotation is None:
        return None
    try:
        info = mi.type_info(annotation)
    except (TypeError, ValueError):  # a type msgspec cannot describe is not decoded by it either
        return None
    return info if _holds_datetime(info, set()) else None


def _holds_datetime(info: Any, seen: set[int]) -> bool:  # noqa: PLR0911  # one answer per kind of type
    if isinstance(info, mi.DateTimeType):
        return True
    if id(info) in seen:  # a recursive type
        return False
    seen.add(id(info))
    if isinstance(info, mi.UnionType):
        return any(_holds_datetime(t, seen) for t in info.types)
    if isinstance(info, mi.Metadata):
        return _holds_datetime(info.type, seen)
    if isinstance(info, _OBJECTS):
        return any(_holds_datetime(f.type, seen) for f in info.fields)
    if isinstance(info, mi.TupleType):
        return any(_holds_datetime(t, seen) for t in info.item_types)
    if isinstance(info, (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)):
        return _holds_datetime(info.item_type, seen)
    if isinstance(info, mi.DictType):
        return _holds_datetime(info.value_type, seen)
    return False
