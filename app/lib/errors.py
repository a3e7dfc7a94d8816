"""Errors: a small hierarchy with a status and a stable ``code``, mapped by one handler to RFC 9457 problem+json.

Every error the service answers with passes through :func:`problem_response`, so the shape is the same for
domain errors, framework errors (routing, validation, auth) and the last-resort 500.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, get_args, get_origin

import msgspec
import msgspec.inspect
import structlog
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    SerializationException,
    TooManyRequestsException,
    ValidationException,
)
from litestar.params import ParameterKwarg
from litestar.types import ExceptionHandlersMap
from sqlalchemy.exc import DBAPIError

from app.domain.identifiers import EXTERNAL_ID_PATTERN, InvalidIdentifier
from app.domain.transitions import TransitionNotAllowed
from app.lib.text import SINGLE_LINE_MESSAGE, SINGLE_LINE_PATTERN

log = structlog.get_logger(__name__)
T = TypeVar("T")
H = TypeVar("H", bound=Callable[..., Any])

PROBLEM_JSON = "application/problem+json"
_SERVER_ERROR = 500


class AppError(Exception):
    """Base of the service's own errors: ``status``, a stable ``code`` and a message a person can act on."""

    status: int = 400
    code: str = "bad_request"
    title: str = "Bad request"

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})


class InvalidInput(AppError):
    """Well-formed but unacceptable input (422)."""

    status = 422
    code = "validation_failed"
    title = "Invalid input"


class Unauthenticated(AppError):
    """No or an unknown credential (401)."""

    status = 401
    code = "unauthenticated"
    title = "Authentication required"

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail, code=code, headers={"WWW-Authenticate": 'Bearer realm="consent"'})


class Forbidden(AppError):
    """A valid credential without the right (403)."""

    status = 403
    code = "forbidden"
    title = "Forbidden"


class NotFound(AppError):
    """Unknown, or belonging to another workspace: the two are never told apart (404)."""

    status = 404
    code = "not_found"
    title = "Not found"


class Conflict(AppError):
    """The request conflicts with the current state (409)."""

    status = 409
    code = "conflict"
    title = "Conflict"


def contact_merged(merged_into: object) -> Conflict:
    """409 ``contact_merged`` naming the survivor, for a contact merged into another (``merged_into``: its id)."""
    return Conflict(
        f"This contact was merged into {merged_into}; use that id.",
        code="contact_merged",
        extra={"merged_into": str(merged_into)},
    )


class UnsupportedMediaType(AppError):
    """The body's content type is not one the endpoint reads (415)."""

    status = 415
    code = "unsupported_media_type"
    title = "Unsupported media type"


class RateLimited(AppError):
    """Too many requests of this kind for now (429, with ``Retry-After`` in seconds)."""

    status = 429
    code = "rate_limited"
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(
            detail, code=code, extra={"retry_after": retry_after}, headers={"Retry-After": str(retry_after)}
        )
        self.retry_after = retry_after


class Unavailable(AppError):
    """A dependency is not ready (503)."""

    status = 503
    code = "unavailable"
    title = "Service unavailable"


def problem_response(
    request: Request[Any, Any, Any],
    *,
    status: int,
    code: str,
    title: str,
    detail: str,
    extra: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response[dict[str, Any]]:
    """An RFC 9457 body with our extensions ``code`` and ``request_id``."""
    body: dict[str, Any] = {
        "type": f"https://consent.dev/problems/{code.replace('_', '-')}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "instance": request.url.path,
    }
    request_id = request.scope.get("state", {}).get("request_id")
    if request_id:
        body["request_id"] = request_id
    body.update(extra or {})
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=dict(headers or {}))


def _app_error(request: Request[Any, Any, Any], exc: AppError) -> Response[dict[str, Any]]:
    return problem_response(
        request,
        status=exc.status,
        code=exc.code,
        title=exc.title,
        detail=exc.detail,
        extra=exc.extra,
        headers=exc.headers,
    )


#: msgspec's message for a pattern, as a caller reads it (msgspec quotes the regular expression itself).
_PATTERN_MESSAGES = {
    f"Expected `str` matching regex {SINGLE_LINE_PATTERN!r}": SINGLE_LINE_MESSAGE,
    f"Expected `str` matching regex {EXTERNAL_ID_PATTERN!r}": (
        "an external id is 1 to 200 characters, without '/' or control characters, and neither '.' nor '..' "
        "(it names the contact in URLs)"
    ),
}
_MSGSPEC_PATH = re.compile(r" - at (?:`key` in )?`\$\.data(?P<path>[^`]*)`$")
"""msgspec's place of an error: ``- at `$.data.a.b``` (a value), ``- at `key` in `$.data.a``` (a mapping's key)."""
_MSGSPEC_ITEM_PATH = re.compile(r" - at (?:`key` in )?`\$(?P<path>[^`]*)`$")
"""The same within one item of a batch, decoded on its own (``$`` is the item)."""
_NAMED_FIELD = re.compile(r"^Object (?:missing required|contains unknown) field `(?P<name>[^`]*)`$")


def _field_and_message(error: str, place: re.Pattern[str]) -> tuple[str, str]:
    """The field msgspec's ``error`` is about (a dotted path, ``""`` for the whole body) and its message."""
    match = place.search(error)
    field = match.group("path").lstrip(".") if match else ""
    message = place.sub("", error)
    message = _PATTERN_MESSAGES.get(message, message)
    named = _NAMED_FIELD.match(message)  # msgspec names a missing or unknown field in its message, at its parent
    if named:
        field = f"{field}.{named.group('name')}" if field else named.group("name")
    elif match and "`key` in `" in match.group(0):
        message = f"a key: {message}"  # the mapping's key is what is wrong, not one of its values
    return field, message


_ENUM_MESSAGE = re.compile(r"^Invalid enum value ")
_INDEX = re.compile(r"\[\d+\]")


def _field_type(root: Any, field: str) -> Any:
    """The type at ``field`` (``a.b``, ``a[0].b``) of ``root``, as msgspec describes it; ``None``: no such field."""
    info: Any = msgspec.inspect.type_info(root)
    for name in filter(None, _INDEX.sub("", field).split(".")):
        info = _unwrapped(info)
        if not isinstance(info, msgspec.inspect.StructType):
            return None
        found = next((f for f in info.fields if f.encode_name == name), None)
        if found is None:
            return None
        info = found.type
    return info


def choices(root: Any, field: str) -> tuple[str, ...] | None:
    """The values the enum or literal at ``field`` (``a.b``, ``a[0].b``) of type ``root`` takes; ``None``: not one."""
    info = _unwrapped(_field_type(root, field))
    if isinstance(info, msgspec.inspect.EnumType):
        return tuple(str(member.value) for member in info.cls)
    if isinstance(info, msgspec.inspect.LiteralType):
        return tuple(str(value) for value in info.values)
    return None


def _unwrapped(info: Any) -> Any:
    """The one type behind an optional (``X | None``) or a list's items."""
    while True:
        if isinstance(info, msgspec.inspect.UnionType):
            kinds = [t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)]
            if len(kinds) != 1:
                return info
            info = kinds[0]
        elif isinstance(info, (msgspec.inspect.ListType, msgspec.inspect.TupleType)) and hasattr(info, "item_type"):
            info = info.item_type
        else:
            return info


_CHECK_NAMES = re.compile(r"^`?(?P<name>[a-z][a-z0-9_]*)`? ")
"""A struct's own check (``__post_init__``) begins its message with the field it is about: ``ip is not …``."""


def checked_field(message: str, root: Any, field: str) -> str:
    """The field a struct's own check (``__post_init__``) is about, where msgspec names only the struct.

    ``field`` is the struct (``""``: the body); a message beginning with a name the struct has as a field is about
    that field (``evidence.ip``); else ``field`` as it was.
    """
    named = _CHECK_NAMES.match(message)
    if root is None or named is None:
        return field
    checked = f"{field}.{named.group('name')}" if field else named.group("name")
    try:
        return checked if _field_type(root, checked) is not None else field
    except (TypeError, ValueError):  # a type msgspec cannot describe
        return field


def with_choices(message: str, root: Any, field: str) -> str:
    """The message "Invalid enum value 'x'" with the values the field takes (no need to read the schema)."""
    if root is None or not field or not _ENUM_MESSAGE.match(message):
        return message
    try:
        allowed = choices(root, field)
    except (TypeError, ValueError):  # a type msgspec cannot describe: the message as it was
        return message
    return f"{message} (one of: {', '.join(allowed)})" if allowed else message


def body_annotation(request: Request[Any, Any, Any]) -> Any:
    """The annotation of the handler's ``data`` (its body, decoded as JSON), or ``None``: the route takes none."""
    signature = getattr(request.scope.get("route_handler"), "parsed_fn_signature", None)
    data = signature.parameters.get("data") if signature is not None else None
    return None if data is None else data.annotation


def _body_type(request: Request[Any, Any, Any]) -> Any:
    """The type of the handler's ``data`` (its JSON body), or ``None``."""
    annotation = body_annotation(request)
    if annotation is None:
        return None
    while get_origin(annotation) is not None and get_args(annotation) and not isinstance(annotation, type):
        if not hasattr(annotation, "__metadata__"):
            break
        annotation = get_args(annotation)[0]  # JSONBody[X] is Annotated[X, …]
    return annotation if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct) else None


def item_validation_detail(error: str) -> str:
    """The ``detail`` of a body's 422 ``validation_failed`` for msgspec's ``error`` about one item of a batch.

    ``field: message``, the field relative to the item (``variables.name``), as the single call's problem says it.
    """
    field, message = _field_and_message(error, _MSGSPEC_ITEM_PATH)
    detail = f"{field}: {message}" if field else message
    # msgspec quotes what it refuses (an unknown field's name): a batch answer, kept for its key, stays small
    return detail if len(detail) <= _ITEM_DETAIL_MAX else detail[: _ITEM_DETAIL_MAX - 1] + "…"


_ITEM_DETAIL_MAX = 300


def _parameter_message(message: Any) -> str:
    """A parameter's error as the detail says it; a date-time's with an example (a query's ``+`` is a space)."""
    said = str(message).rstrip(".")
    if "datetime" in said:
        said += " (e.g. 2026-11-01T00:00:00Z; write an offset's '+' as %2B in a URL)"
    return said


def _validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[dict[str, Any]]:
    """Body schema errors are 422 with the field path; query/path/header errors are 400."""
    if isinstance(exc.__cause__, KeyError) and exc.__cause__.args:
        # a required query, path or header parameter is absent (Litestar reports the bare key)
        name = str(exc.__cause__.args[0])
        return problem_response(
            request,
            status=400,
            code="missing_parameter",
            title="Missing parameter",
            detail=f"The required parameter '{name}' is missing.",
            extra={"errors": [{"field": name, "message": "required"}]},
        )
    cause = str(exc.__cause__ or "")
    items = exc.extra if isinstance(exc.extra, list) else []
    sources = {item.get("source") for item in items if isinstance(item, dict)}
    if "body" in sources or not sources:
        if not cause or "missing required field `data`" in cause:
            return problem_response(
                request,
                status=400,
                code="body_required",
                title="Body required",
                detail="This endpoint needs a JSON request body.",
            )
        field, message = _field_and_message(cause, _MSGSPEC_PATH)
        root = _body_type(request)
        message = with_choices(message, root, field)
        field = checked_field(message, root, field)
        return problem_response(
            request,
            status=422,
            code="validation_failed",
            title="Invalid input",
            detail=f"{field}: {message}" if field else message,
            extra={"errors": [{"field": field or None, "message": message}]},
        )
    errors = [
        # the source is Litestar's ParamType, a str enum whose f-string form would be "ParamType.QUERY"
        {
            "field": _wire_name(request, item.get("key")),
            "in": str(getattr(source, "value", source)),
            "message": item.get("message"),
        }
        for item in items
        if isinstance(item, dict)
        for source in [item.get("source")]
    ]
    names = "; ".join(  # with what is wrong with it (the range a number must lie in, the form a date takes)
        f"{e['in']} parameter {e['field']!r}" + (f": {_parameter_message(e['message'])}" if e["message"] else "")
        for e in errors
    )
    return problem_response(
        request,
        status=400,
        code="invalid_parameter",
        title="Invalid parameter",
        detail=f"Invalid {names}." if names else "Invalid request parameters.",
        extra={"errors": errors},
    )


def _wire_name(request: Request[Any, Any, Any], key: Any) -> Any:
    """A parameter's name as the caller wrote it (``from``), not the handler's argument it fills (``start``).

    Litestar names the argument in its validation errors; an aliased parameter's caller never saw that name.
    """
    signature = getattr(request.scope.get("route_handler"), "parsed_fn_signature", None)
    if not isinstance(key, str) or signature is None:
        return key
    field = signature.parameters.get(key)  # a dependency's own parameter is not the handler's: left as named
    kwarg = field.kwarg_definition if field is not None else None
    if isinstance(kwarg, ParameterKwarg):
        return kwarg.query or kwarg.header or kwarg.cookie or kwarg.name or key
    return key


_HTTP_CODES: dict[type[HTTPException], tuple[str, str]] = {
    NotFoundException: ("not_found", "Not found"),
    MethodNotAllowedException: ("method_not_allowed", "Method not allowed"),
    NotAuthorizedException: ("unauthenticated", "Authentication required"),
    PermissionDeniedException: ("forbidden", "Forbidden"),
    TooManyRequestsException: ("rate_limited", "Too many requests"),
}


def _http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    if isinstance(exc, ValidationException):
        return _validation_error(request, exc)
    if isinstance(exc.__cause__, SerializationException) or "JSON is malformed" in exc.detail:
        return problem_response(
            request,
            status=400,
            code="malformed_json",
            title="Malformed JSON",
            detail=f"The request body is not valid JSON: {exc.detail.removeprefix('JSON is malformed: ')}",
        )
    code, title = next(
        (pair for cls, pair in _HTTP_CODES.items() if isinstance(exc, cls)),
        ("http_error" if exc.status_code < _SERVER_ERROR else "internal_error", "Error"),
    )
    status = exc.status_code
    detail = exc.detail
    if status >= _SERVER_ERROR:
        log.error("http_exception", status=status, exc_info=exc)
        detail = "The service failed to handle this request."
    return problem_response(request, status=status, code=code, title=title, detail=detail, headers=exc.headers or {})


# PostgreSQL's "character not in repertoire" (a NUL in text) and "untranslatable character" (a NUL in jsonb)
_UNSTORABLE_TEXT = {"22021", "22P05"}


def _database_refused_text(exc: BaseException) -> bool:
    """True when the database refused a character of the input (the input check missed a way in)."""
    seen: BaseException | None = exc
    for _ in range(5):  # SQLAlchemy's error -> the driver adapter's -> asyncpg's
        if seen is None:
            return False
        if getattr(seen, "sqlstate", None) in _UNSTORABLE_TEXT:
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False


#: SQLSTATEs of a server that is going away or not there yet: admin/crash shutdown, cannot connect now
_SERVER_GOING = frozenset({"57P01", "57P02", "57P03", "08000", "08001", "08003", "08004", "08006"})
DATABASE_RETRY_AFTER = "5"


def database_unreachable(exc: BaseException) -> bool:
    """True when the database could not be reached or went away mid-request (an outage, a restart)."""
    seen: BaseException | None = exc
    for _ in range(6):  # SQLAlchemy's error -> the driver adapter's -> asyncpg's -> the socket's
        if seen is None:
            return False
        if isinstance(seen, (ConnectionError, TimeoutError)) or getattr(seen, "connection_invalidated", False):
            return True
        if getattr(seen, "sqlstate", None) in _SERVER_GOING:
            return True
        if type(seen).__name__ in {"ConnectionDoesNotExistError", "InterfaceError"} and "connection" in str(seen):
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__ or seen.__context__
    return False


#: Raised by the trigger of migration 0031: a row for a contact that a merge committed meanwhile
_MERGED_MEANWHILE = "CM001"


def merged_meanwhile(exc: BaseException) -> bool:
    """Whether the database refused a row for a contact that a merge committed meanwhile (migration 0031)."""
    return sqlstate_in_chain(exc, {_MERGED_MEANWHILE})


#: A deadlock PostgreSQL broke by aborting this transaction (the other one went on).
_DEADLOCK = "40P01"

#: A concurrent writer made PostgreSQL abort this transaction: a deadlock it broke, a serialization failure, a lock
#: wait that ran out of ``lock_timeout``. Nothing of the transaction was committed; the same request sent again runs
#: on what the other writer left.
_ABORTED_BY_A_WRITER = frozenset({_DEADLOCK, "40001", "55P03"})
_BUSY_RETRY_AFTER = "1"

#: A foreign key failed: the row it names (a contact an erasure removed) was deleted by a transaction committed
#: after this one read it.
_DELETED_MEANWHILE = "23503"


async def again_if_raced(work: Callable[[], Awaitable[T]], *, what: str) -> T:
    """Run ``work`` (a transaction of its own); run it once more if a race with another writer aborted it.

    For the requests nobody sends again (an inbound SMS, an RFC 8058 one-click POST, a form's POST): a merge of the
    contact committing between finding the address and locking its consents makes the database refuse the row
    (CM001: the second run finds the address under the contact that survived the merge), or PostgreSQL breaks a
    deadlock with that merge by aborting this transaction (40P01: the second run waits for the merge instead), or
    an erasure of the contact committing in that window makes a row's foreign key fail (23503: the second run no
    longer finds the address, which the erasure left suppressed).
    """
    for attempt in range(1, _RACE_ATTEMPTS):
        try:
            return await work()
        except DBAPIError as exc:
            if not (merged_meanwhile(exc) or sqlstate_in_chain(exc, {_DEADLOCK, _DELETED_MEANWHILE})):
                raise
            log.info("taken_again_after_a_race", what=what, attempt=attempt)
    return await work()


#: Tries of :func:`again_if_raced`: a deadlock with a merge, then the merge's CM001 once it has committed, then the
#: survivor's address.
_RACE_ATTEMPTS = 3


def raced(exc: BaseException) -> bool:
    """Whether a race with another writer aborted the transaction behind ``exc`` (nothing of it was recorded).

    A merge of a contact it named (CM001), a deadlock PostgreSQL broke (40P01), a serialization failure (40001), a
    lock wait that ran out (55P03), or a row it named deleted by a transaction committed meanwhile (23503): the same
    work done again finds the other writer's work done (:func:`unhandled_problem` answers each).
    """
    return merged_meanwhile(exc) or sqlstate_in_chain(exc, _ABORTED_BY_A_WRITER | {_DELETED_MEANWHILE})


def answered_as(answer: UnhandledAnswer, detail: str, extra: Mapping[str, Any]) -> AppError:
    """An error answered with ``answer``'s status, code, title and headers, but its own ``detail`` and ``extra``.

    For work committed in parts that an exception cut short (:func:`unhandled_problem` gives ``answer``), to say
    what was done.
    """
    error = AppError(detail, code=answer.code, extra=extra, headers=dict(answer.headers))
    error.status, error.title = answer.status, answer.title
    return error


def sqlstate_in_chain(exc: BaseException, states: frozenset[str] | set[str]) -> bool:
    """Whether the driver's error behind ``exc`` (SQLAlchemy's, the adapter's, asyncpg's) has one of ``states``."""
    return _database_error_in_chain(exc, states) is not None


def _database_error_in_chain(exc: BaseException, states: frozenset[str] | set[str]) -> BaseException | None:
    """The driver's error with one of ``states`` behind ``exc`` (SQLAlchemy's, the adapter's, asyncpg's), or None."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if getattr(seen, "sqlstate", None) in states:
            return seen
        seen = getattr(seen, "orig", None) or seen.__cause__
    return None


def _constraint_name(exc: BaseException) -> str | None:
    """The constraint asyncpg names behind ``exc`` (SQLAlchemy's adapter copies the SQLSTATE only)."""
    seen: BaseException | None = exc
    for _ in range(3):
        if seen is None:
            return None
        name = getattr(seen, "constraint_name", None)
        if isinstance(name, str):
            return name
        seen = seen.__cause__
    return None


@dataclass(frozen=True, slots=True)
class UnhandledAnswer:
    """An answer to an exception no handler took (:func:`unhandled_problem`)."""

    status: int
    code: str
    title: str
    detail: str
    headers: tuple[tuple[str, str], ...] = ()


def unhandled_problem(exc: Exception) -> UnhandledAnswer:
    """What an exception no handler took means for the caller, logged: a database outage or race, or a fault (500).

    The API answers it as problem+json (:func:`unhandled`); the hosted pages as a page (``app.emails.pages``).
    """
    if database_unreachable(exc):
        log.warning("database_unavailable", error_type=type(exc).__name__)
        return UnhandledAnswer(
            status=503,
            code="database_unavailable",
            title="Service unavailable",
            detail="The database cannot be reached right now; nothing was recorded. Try again shortly.",
            headers=(("Retry-After", DATABASE_RETRY_AFTER),),
        )
    if _database_refused_text(exc):
        log.warning("unstorable_text_refused", error_type=type(exc).__name__)
        return UnhandledAnswer(
            status=422,
            code="nul_character",
            title="Invalid input",
            detail="The input contains a character that cannot be stored (a NUL, \\u0000). Remove it and send again.",
        )
    if sqlstate_in_chain(exc, {_MERGED_MEANWHILE}):
        return UnhandledAnswer(
            status=409,
            code="contact_merged",
            title="Conflict",
            detail="The contact was merged into another while this request ran; nothing was recorded. "
            "GET /v1/contacts/{contact} names the survivor: send the request for it.",
        )
    aborted = _database_error_in_chain(exc, _ABORTED_BY_A_WRITER)
    if aborted is not None:
        # a race, not a fault: the same request sent again finds the other writer's work done (docs/security.md)
        log.warning(
            "transaction_aborted_by_a_concurrent_write",
            sqlstate=getattr(aborted, "sqlstate", None),
            error_type=type(exc).__name__,
        )
        return UnhandledAnswer(
            status=503,
            code="database_busy",
            title="Service unavailable",
            detail="The database aborted this request's transaction because of a concurrent write (a deadlock, a "
            "serialization failure or a lock wait that ran out); what it had not committed was rolled back. "
            "Send it again.",
            headers=(("Retry-After", _BUSY_RETRY_AFTER),),
        )
    deleted = _database_error_in_chain(exc, {_DELETED_MEANWHILE})
    if deleted is not None:
        # Every 23503 the service can meet is a row's foreign key naming a row that a transaction committed meanwhile
        # deleted (an erasure, a deletion): the input's ids are looked up before anything references them, and every
        # key is CASCADE or RESTRICT, so none raises 23503 from the parent's side (a RESTRICT key raises 23001; a NO
        # ACTION key would: test_database_races.py checks there is none). The constraint names the race for the log.
        log.warning(
            "referenced_row_deleted_meanwhile",
            constraint=_constraint_name(deleted),
            error_type=type(exc).__name__,
        )
        return UnhandledAnswer(
            status=409,
            code="deleted_meanwhile",
            title="Conflict",
            detail="A record this request refers to was deleted by another request while it ran (an erasure or a "
            "deletion); nothing of this request's transaction was recorded. Look the record up again.",
        )
    log.error("unhandled_exception", error_type=type(exc).__name__, exc_info=exc)
    return UnhandledAnswer(
        status=500,
        code="internal_error",
        title="Internal server error",
        detail="The service failed to handle this request; it has been logged with the request id.",
    )


_PAGE_MARK = "_answers_as_a_page"


def answers_as_a_page(handler: H) -> H:
    """Mark an exception handler that answers with an HTML page (a hosted page's), for the OpenAPI document."""
    setattr(handler, _PAGE_MARK, True)
    return handler


def is_a_page_handler(handler: object) -> bool:
    """Whether ``handler`` was marked by :func:`answers_as_a_page`."""
    return bool(getattr(handler, _PAGE_MARK, False))


def unhandled(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """The API's answer to an exception no handler took: :func:`unhandled_problem` as problem+json."""
    problem = unhandled_problem(exc)
    return problem_response(
        request,
        status=problem.status,
        code=problem.code,
        title=problem.title,
        detail=problem.detail,
        headers=dict(problem.headers),
    )


def _transition_not_allowed(request: Request[Any, Any, Any], exc: TransitionNotAllowed) -> Response[dict[str, Any]]:
    return problem_response(
        request,
        status=409,
        code="transition_not_allowed",
        title="Transition not allowed",
        detail=str(exc),
        extra={"current_state": exc.state.value, "channel": exc.channel.value, "trigger": exc.trigger.value},
    )


def _invalid_identifier(request: Request[Any, Any, Any], exc: InvalidIdentifier) -> Response[dict[str, Any]]:
    return problem_response(request, status=422, code=exc.code, title="Invalid address", detail=exc.message)


def _not_utf8(request: Request[Any, Any, Any], exc: UnicodeDecodeError) -> Response[dict[str, Any]]:
    """A body that is not UTF-8 (msgspec raises this, not its DecodeError, for bad bytes inside a JSON string).

    Only input can be undecodable here: the service's own text is ``str`` throughout.
    """
    return problem_response(
        request,
        status=400,
        code="invalid_utf8",
        title="Body is not UTF-8",
        detail=f"The request body is not valid UTF-8 (byte {exc.start}): JSON text must be UTF-8.",
    )


def exception_handlers() -> ExceptionHandlersMap:
    """The app-wide handler map."""
    return {
        UnicodeDecodeError: _not_utf8,
        TransitionNotAllowed: _transition_not_allowed,
        InvalidIdentifier: _invalid_identifier,
        AppError: _app_error,
        HTTPException: _http_exception,
        Exception: unhandled,
    }
