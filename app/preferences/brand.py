"""The brand on the hosted pages: logo, colours, and the Content-Security-Policy that allows exactly the logo.

A workspace's ``branding`` settings (:class:`~app.workspaces.settings.BrandingSettings`) reach the pages in two
ways, neither of which runs anything of the tenant's:

- the **logo** is an ``<img>`` with the brand name as its alt text; the person's browser loads it (this service
  never fetches it), and the page's ``img-src`` names exactly the logo's origin, only when a logo is set;
- the **colours** come in a stylesheet of this service, ``GET /brand/v1/{primary}-{accent}.css``, generated from
  the two ``#rrggbb`` values in its name and nothing else (no inline style: the pages' CSP has ``style-src 'self'``).
  The name is the content, so the stylesheet is the same for every workspace with the same colours, immutable and
  cached for a year; its ``v1`` changes when the generator does.

Contrast (WCAG 2.2 AA, 4.5:1): the primary colour carries the buttons' white text and is the colour of links and
of the outlined buttons' text on the white content area, so the settings refuse one below 4.5:1 against white
(``422 invalid_branding`` naming the ratio). The header's text on the accent colour is black or white, whichever
contrasts more, which is never below 4.58:1, so any accent colour is taken.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from typing import Any

from litestar import Controller, HttpMethod, Request, Response, route
from litestar.openapi import ResponseSpec
from litestar.params import FromPath
from sqlalchemy.ext.asyncio import AsyncSession

from app.workspaces import repository as workspaces
from app.workspaces.settings import WorkspaceSettings, logo_origin, text_on

DEFAULT_PRIMARY = "#1a4f9c"
"""The pages' own link and button colour (``preferences.css``), used when only the accent is set."""
DEFAULT_ACCENT = "#f4f4f4"
"""The pages' own background, used when only the primary colour is set."""
STYLESHEET_VERSION = "v1"
_NAME = re.compile(r"([0-9a-f]{6})-([0-9a-f]{6})\.css")  # whole name: fullmatch, "$" would pass a final LF


@dataclass(frozen=True, slots=True)
class Look:
    """What a page shows of the brand: the name, the logo (with its origin for the CSP), the colour stylesheet."""

    name: str
    logo_url: str | None = None
    logo_origin: str | None = None
    stylesheet: str | None = None
    """The path of the colour stylesheet, ``None`` when the workspace sets no colour."""


def look_of(settings: WorkspaceSettings, name: str) -> Look:
    """The look of a workspace's pages from its settings; a logo URL that no longer passes the checks is left out."""
    branding = settings.branding
    origin = logo_origin(branding.logo_url) if branding.logo_url else None
    stylesheet = None
    if branding.primary_color or branding.accent_color:
        primary = (branding.primary_color or DEFAULT_PRIMARY).lower()
        accent = (branding.accent_color or DEFAULT_ACCENT).lower()
        stylesheet = f"/brand/{STYLESHEET_VERSION}/{primary[1:]}-{accent[1:]}.css"
    return Look(name, branding.logo_url if origin else None, origin, stylesheet)


async def look_for(session: AsyncSession, workspace_id: uuid.UUID) -> Look | None:
    """The look of a workspace's pages (``None``: no such workspace). Usually no query: the page loaded it."""
    workspace = await workspaces.get_workspace(session, workspace_id)
    if workspace is None:
        return None
    settings = WorkspaceSettings.load(workspace.settings)
    return look_of(settings, settings.brand or workspace.name)


def page_headers(headers: dict[str, str], look: Look | None) -> dict[str, str]:
    """``headers`` with ``img-src`` of exactly the logo's origin added to the CSP when the page shows a logo."""
    if look is None or look.logo_origin is None:
        return headers
    policy = headers["Content-Security-Policy"]
    return {**headers, "Content-Security-Policy": f"{policy}; img-src {look.logo_origin}"}


def stylesheet(primary: str, accent: str) -> str:
    """The colour rules for ``#rrggbb`` ``primary`` and ``accent``, after ``preferences.css``."""
    header = text_on(accent)
    return (
        "/* Brand colours (generated from two validated #rrggbb values; contrast: see app/preferences/brand.py). */\n"
        f"body {{ background: {accent}; }}\n"
        f".top, .top .brand, .top .langs a {{ color: {header}; }}\n"
        f".top a:focus-visible {{ outline-color: {header}; }}\n"
        f"main a {{ color: {primary}; }}\n"
        f"button {{ background: {primary}; border-color: {primary}; color: #ffffff; }}\n"
        f"button.secondary {{ background: #ffffff; color: {primary}; }}\n"
        "button.danger { background: #a11d1d; border-color: #a11d1d; color: #ffffff; }\n"
    )


class BrandStylesheet(Controller):
    """``/brand/v1/{primary}-{accent}.css``: the colours of branded hosted pages."""

    path = "/brand/v1/{name:str}"
    tags = ["hosted pages"]  # noqa: RUF012  # Litestar reads class attributes

    @route(
        http_method=[HttpMethod.GET, HttpMethod.HEAD],
        operation_id=lambda _h, method, _p: "brandStylesheet" if method == HttpMethod.GET else "brandStylesheetHead",
        media_type="text/css",
        responses={
            304: ResponseSpec(data_container=None, description="Not modified (the `ETag` of `If-None-Match`)."),
            404: ResponseSpec(
                data_container=str, media_type="text/css", description="No such stylesheet.", generate_examples=False
            ),
        },
    )
    async def show(self, request: Request[Any, Any, Any], name: FromPath[str]) -> Response[str]:
        """The stylesheet of two colours, `{primary}-{accent}.css` as lower-case `rrggbb`; the same for everyone."""
        headers = {"X-Content-Type-Options": "nosniff", "Cross-Origin-Resource-Policy": "same-origin"}
        found = _NAME.fullmatch(name)
        if found is None:
            return Response(
                "/* not found */\n",
                status_code=404,
                media_type="text/css",
                headers={**headers, "Cache-Control": "no-store"},
            )
        body = stylesheet(f"#{found[1]}", f"#{found[2]}")
        etag = '"' + hashlib.sha256(body.encode()).hexdigest()[:32] + '"'
        headers |= {"Cache-Control": "public, max-age=31536000, immutable", "ETag": etag}
        if etag in [tag.strip() for tag in request.headers.get("if-none-match", "").split(",")]:
            return Response("", status_code=304, headers=headers)
        return Response(body, media_type="text/css", headers=headers)
