"""``/p/{token}/preferences``: the preference centre as JSON, for brands that build their own page.

The same reads and changes as the page ``/p/{token}`` (:mod:`app.preferences.controllers`), through the same
functions of :mod:`app.preferences.service`, with the same evidence plus ``"via": "json_api"``. No API key: the
token in the URL is the capability, and no cookie is involved (``Access-Control-Allow-Credentials`` is never sent).

What stands in for the page's form token against cross-site requests:

* a ``POST`` must be ``Content-Type: application/json`` (415 otherwise), which a plain HTML form of another site
  cannot send and which makes every cross-origin ``fetch`` ask first (a CORS preflight);
* a ``POST`` or preflight whose ``Origin`` is neither ours (``PUBLIC_BASE_URL``) nor one of the workspace's
  ``preference_origins`` is refused (403 ``origin_not_allowed``); a ``GET`` from another origin is answered
  without CORS headers, so the browser does not let that page read it.

CORS headers (``Access-Control-Allow-Origin`` with the caller's origin, ``Vary: Origin``) are sent only for a
configured origin, on every answer of the route, errors included, so the brand's page can read a 410 as "expired".
Addresses are only ever shown masked; the JSON API offers no data export or erasure (a link from a marketing mail's
footer may use it like the page: read, withdraw, object, pause).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec
from litestar import Controller, HttpMethod, Request, Response, get, post, route
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.model import Channel
from app.lib.db import Database
from app.lib.errors import AppError, Forbidden, InvalidInput, NotFound, UnsupportedMediaType, exception_handlers
from app.lib.inputs import refuse_nul
from app.lib.keys import Keys
from app.lib.openapi import errors
from app.preferences import service
from app.preferences.models import PreferenceLink
from app.preferences.service import ALL_ADDRESSES, PAUSE_WEEKS, Action, LinkState, Shown
from app.settings import Settings
from app.workspaces import repository as workspaces
from app.workspaces.settings import WorkspaceSettings, normal_origin

MAX_BODY = 4096
"""The largest body a change may have: the biggest valid one is about 200 bytes."""
VIA = "json_api"
_CORS_ORIGIN = "preference_api_origin"  # request.state: the configured origin the answer may be read by
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Resource-Policy": "same-origin",  # CORS reads are not affected; no-cors embedding is refused
    "Vary": "Origin",
}


class LinkGone(AppError):
    """An expired link (410)."""

    status = 410
    code = "link_expired"
    title = "Gone"


# --- schemas -------------------------------------------------------------------------------------------------


PointRef = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^(all|[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})$",
        description="An address's `point_id` from the view, or `all` (pause and end_pause only).",
    ),
]


PurposeRef = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=100,
        description="A purpose's `purpose_id` from the view, or its `key`.",
    ),
]


class PreferenceChange(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One change, as one form of the page makes it.

    * `withdraw`: `point` (an address's `point_id`) and `purpose` (its `purpose_id` or `key`) — stop one marketing
      purpose on one address;
    * `withdraw_all`: nothing else — every marketing purpose on every address, and object to postal advertising;
    * `object_print`: nothing else — object to advertising by post (Art. 21 GDPR);
    * `pause`: `point` (an address or `all`) and `weeks` (1, 4 or 12) — all marketing stops until then;
    * `end_pause`: `point` (an address or `all`) — end a running pause now.
    """

    action: Action
    point: PointRef | None = None
    purpose: PurposeRef | None = None
    weeks: Literal[1, 4, 12] | None = None


class PurposeStateOut(msgspec.Struct, kw_only=True):
    """One marketing purpose on one address."""

    purpose_id: uuid.UUID
    key: str
    name: str
    state: Shown
    """`receiving`, `customer` (received without consent as an existing customer, UWG §7(3); withdrawing objects),
    `pending` (waiting for the person's confirmation), `not_receiving`, `withdrawn` or `objected`."""
    can_withdraw: bool
    """Whether `withdraw` would change anything (something is flowing or about to)."""


class AddressOut(msgspec.Struct, kw_only=True):
    """One address of the person, masked, with its purposes (print: its objection state instead)."""

    point_id: uuid.UUID
    channel: Channel
    masked: str
    paused_until: datetime | None
    """The end of the running pause of all marketing to this address (`null`: not paused)."""
    purposes: list[PurposeStateOut]
    print_state: Literal["objected", "postal_allowed", "postal_blocked"] | None
    """Print only: advertising by post objected to, allowed (legitimate interest), or not objected to but blocked
    all the same (a household's sticker, a Robinson list, what a withdrawn objection left): the person may object."""


class PreferencesOut(msgspec.Struct, kw_only=True):
    """What the person's preference page shows, in machine form."""

    brand: str
    language: Literal["de", "en"]
    """The person's language (their locale, else the workspace's)."""
    link_expires_at: datetime
    addresses: list[AddressOut]
    all_paused_until: datetime | None
    """The earliest end when every address is paused (`null`: some address is not)."""
    print_objected: bool | None
    """Whether advertising by post is objected to (`null`: no postal address is known)."""
    anything_to_withdraw: bool
    """Whether `withdraw_all` would change anything."""
    pause_weeks: list[int]
    """The lengths a pause may have."""
    changed: bool | None = None
    """After a change: whether it recorded anything (`false`: it was already so). Absent on reads."""


def _out(view: service.View, *, changed: bool | None = None) -> PreferencesOut:
    addresses = []
    for address in view.addresses:
        purposes = [
            PurposeStateOut(
                purpose_id=row.purpose.id,
                key=row.purpose.key,
                name=row.purpose.name,
                state=row.shown,
                can_withdraw=row.can_withdraw,
            )
            for row in address.rows
        ]
        print_state: Literal["objected", "postal_allowed", "postal_blocked"] | None = None
        if address.print_state is Shown.OBJECTED:
            print_state = "objected"
        elif address.print_state is Shown.POSTAL_ALLOWED:
            print_state = "postal_allowed"
        elif address.print_state is Shown.POSTAL_BLOCKED:
            print_state = "postal_blocked"
        addresses.append(
            AddressOut(
                point_id=address.point.id,
                channel=address.channel,
                masked=address.masked,
                paused_until=address.paused_until,
                purposes=purposes,
                print_state=print_state,
            )
        )
    prints = [a.print_state for a in view.addresses if a.channel is Channel.PRINT]
    return PreferencesOut(
        brand=view.brand,
        language="de" if view.lang == "de" else "en",
        link_expires_at=view.link.expires_at,
        addresses=addresses,
        all_paused_until=view.all_paused_until,
        print_objected=all(s is Shown.OBJECTED for s in prints) if prints else None,
        anything_to_withdraw=view.anything_to_withdraw,
        pause_weeks=list(PAUSE_WEEKS),
        changed=changed,
    )


# --- origins and CORS ----------------------------------------------------------------------------------------


def _ours(origin: str, request: Request[Any, Any, Any], settings: Settings) -> bool:
    """Whether ``origin`` is this service's own (``PUBLIC_BASE_URL``; in development also the request's host)."""
    base = urlsplit(settings.public_base_url)
    if normal_origin(origin) == normal_origin(f"{base.scheme}://{base.netloc}"):
        return True
    if settings.public_base_url_configured:
        return False  # the Host header is not trusted then (DNS rebinding)
    host = urlsplit(origin).netloc
    return bool(host) and host == request.headers.get("host")


async def _configured(request: Request[Any, Any, Any], origin: str) -> bool:
    """Whether the workspace of the link in the path lists ``origin`` in its ``preference_origins``."""
    token = str(request.path_params.get("token", ""))
    database: Database = request.app.state.database
    async with database.sessionmaker() as session, session.begin():
        _, link = await service.open_link(session, token)  # an expired link's page may still read its 410
        if link is None:
            return False
        workspace = await workspaces.get_workspace(session, link.workspace_id)
        return workspace is not None and WorkspaceSettings.load(workspace.settings).allows_origin(origin)


async def _guard(request: Request[Any, Any, Any]) -> None:
    """``before_request``: the origin (403 ``origin_not_allowed``), the content type (415), then NUL characters.

    Remembers a configured cross-origin caller in ``request.state``, so every answer (errors too) carries its CORS
    headers.
    """
    origin = request.headers.get("origin")
    settings: Settings = request.app.state.settings
    if origin is not None and not _ours(origin, request, settings):
        if await _configured(request, origin):
            request.state[_CORS_ORIGIN] = origin
        elif request.method != HttpMethod.GET:
            raise Forbidden(
                "This origin may not change preferences: the brand lists the origins of its own pages in the "
                "workspace setting preference_origins.",
                code="origin_not_allowed",
            )
    if request.method == HttpMethod.POST:
        media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            raise UnsupportedMediaType(
                "Send the change as JSON (Content-Type: application/json).", code="unsupported_media_type"
            )
    await refuse_nul(request)  # the app-wide hook, which this route's own hook replaces


def _cors_headers(request: Request[Any, Any, Any]) -> dict[str, str]:
    origin = request.state.get(_CORS_ORIGIN)
    return {**_HEADERS, **({"Access-Control-Allow-Origin": origin} if origin else {})}


def _with_cors(handler: Callable[[Any, Any], Response[Any]]) -> Callable[[Any, Any], Response[Any]]:
    """An app-wide exception handler whose answer also carries this route's headers (CORS for a configured origin)."""

    def handle(request: Request[Any, Any, Any], exc: Any) -> Response[Any]:
        response = handler(request, exc)
        response.headers.update(_cors_headers(request))
        return response

    return handle


# --- the route -----------------------------------------------------------------------------------------------


async def _valid_link(db: AsyncSession, token: str) -> PreferenceLink:
    status, link = await service.open_link(db, token)
    if status is LinkState.EXPIRED:
        raise LinkGone("This link has expired: preference links work for 30 days.")
    if status is not LinkState.VALID or link is None:
        raise NotFound("This link opens nothing.", code="link_not_found")
    return link


def _require(change: PreferenceChange, *, point: bool = False, purpose: bool = False, weeks: bool = False) -> None:
    """The fields ``change.action`` needs, and none that it does not take (strict, like the page's forms)."""
    given = {
        "point": change.point is not None,
        "purpose": change.purpose is not None,
        "weeks": change.weeks is not None,
    }
    wanted = {"point": point, "purpose": purpose, "weeks": weeks}
    for name, present in given.items():
        if present and not wanted[name]:
            raise InvalidInput(f"{name}: not taken by the action {change.action.value}.", code="validation_failed")
        if wanted[name] and not present:
            raise InvalidInput(f"{name}: required by the action {change.action.value}.", code="validation_failed")
    if change.point == ALL_ADDRESSES and purpose:
        raise InvalidInput("point: withdraw names one address (`all` is for pauses).", code="validation_failed")


def _point(change: PreferenceChange) -> str:
    assert change.point is not None
    return ALL_ADDRESSES if change.point == ALL_ADDRESSES else str(uuid.UUID(change.point))


async def _apply(
    db: AsyncSession, keys: Keys, link: PreferenceLink, change: PreferenceChange, proof: dict[str, Any]
) -> bool:
    """Make the change through the page's own service functions; answers whether anything was recorded."""
    action = change.action
    if action is Action.WITHDRAW:
        _require(change, point=True, purpose=True)
        applied = await service.withdraw(db, link, point_id=_point(change), purpose_id=str(change.purpose), proof=proof)
        return any(a.event_id for a in applied)
    if action is Action.WITHDRAW_ALL:
        _require(change)
        return any(a.event_id for a in await service.withdraw_everything(db, keys, link, proof))
    if action is Action.OBJECT_PRINT:
        _require(change)
        return any(a.event_id for a in await service.object_to_print(db, keys, link, proof))
    if action is Action.PAUSE:
        _require(change, point=True, weeks=True)
        paused = await service.pause(db, keys, link, point_id=_point(change), weeks=str(change.weeks), proof=proof)
        return bool(paused.event_ids)
    _require(change, point=True)
    ended = await service.end_pause(db, keys, link, point_id=_point(change), proof=proof)
    return bool(ended.event_ids)


class PreferenceApi(Controller):
    """``/p/{token}/preferences``: the preference centre as JSON (CORS for the workspace's configured origins)."""

    path = "/p/{token:str}/preferences"
    tags = ["preference centre"]  # noqa: RUF012  # Litestar reads class attributes
    before_request = _guard  # type: ignore[assignment]  # Litestar unbinds it (Controller.__init__)
    exception_handlers = {kind: _with_cors(handler) for kind, handler in exception_handlers().items()}  # noqa: RUF012
    request_max_body_size = MAX_BODY

    # named to sort first: Litestar registers a controller's handlers by name, and a path whose first handler is
    # not an OPTIONS one gets its own automatic OPTIONS handler, which then shadows ours
    @route(http_method=HttpMethod.OPTIONS, include_in_schema=False, status_code=204)
    async def answer_preflight(self, request: Request[Any, Any, Any]) -> Response[None]:
        """The CORS preflight: allowed for the workspace's configured origins only (others: 403)."""
        headers = {"Allow": "GET, POST, OPTIONS", **_cors_headers(request)}
        if "Access-Control-Allow-Origin" in headers:
            headers |= {
                "Access-Control-Allow-Methods": "GET, POST",
                "Access-Control-Allow-Headers": "Content-Type",
                "Access-Control-Max-Age": "600",
            }
        return Response(None, status_code=204, headers=headers)

    @get(operation_id="getPreferences", responses=errors(403, 404, 410))
    async def read(
        self, request: Request[Any, Any, Any], token: FromPath[str], db: NamedDependency[AsyncSession]
    ) -> Response[PreferencesOut]:
        """The person's addresses (masked), each marketing purpose's state, pauses and the print objection.

        Changes nothing. Readable from the browser by the workspace's `preference_origins` (CORS).
        """
        async with db.begin():
            link = await _valid_link(db, token)
            view = await service.view(db, link)
        return Response(_out(view), headers=_cors_headers(request))

    @post(operation_id="changePreferencesJson", status_code=200, responses=errors(403, 404, 410, 415, 422))
    async def change(
        self,
        request: Request[Any, Any, Any],
        token: FromPath[str],
        data: JSONBody[PreferenceChange],
        *,
        db: NamedDependency[AsyncSession],
        keys: NamedDependency[Keys],
    ) -> Response[PreferencesOut]:
        """Make one change, as the page's forms do; answers the new view.

        The same rules as the page: withdrawing and objecting are one request; an address or purpose that is not
        this person's is refused (403 `not_this_contact`) and changes nothing. Each change is a ledger event with
        the person as actor and the link's id, IP, user agent and `"via": "json_api"` as evidence. Needs
        `Content-Type: application/json` and an `Origin` that is ours or one of the workspace's
        `preference_origins` (403 `origin_not_allowed`).
        """
        agent = request.headers.get("user-agent")
        meta = {"ip": request.client.host if request.client else None, "user_agent": agent[:1000] if agent else None}
        try:
            async with db.begin():
                link = await _valid_link(db, token)
                proof = {**service.evidence(link, meta, data.action), "via": VIA}
                changed = await _apply(db, keys, link, data, proof)
                view = await service.view(db, link)
        except InvalidInput as exc:  # rolled back: nothing changed
            if exc.code == "not_this_contact":
                raise Forbidden(exc.detail, code="not_this_contact") from None
            raise
        return Response(_out(view, changed=changed), headers=_cors_headers(request))
