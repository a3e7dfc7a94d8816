"""``GET /``: the landing page, and ``/assets``: the front door's own stylesheets, script and icon."""

from __future__ import annotations

from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from litestar import HttpMethod, Response, route
from litestar.router import Router
from litestar.static_files import create_static_files_router

from app.site import headers

HERE = Path(__file__).parent
ASSETS_DIR = HERE / "assets"


@cache
def templates() -> Environment:
    """The front door's Jinja templates (``app/site/templates``), HTML-escaped."""
    return Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(), auto_reload=False)


@cache
def _landing_html() -> str:
    return templates().get_template("index.html").render(version=version("consent-service"))


@route("/", http_method=[HttpMethod.GET, HttpMethod.HEAD], include_in_schema=False, sync_to_thread=False)
def landing() -> Response[str]:
    """What this service is, with links to the API reference, the OpenAPI document and health. No API key."""
    return Response(_landing_html(), media_type="text/html", headers=headers.LANDING)


def _asset_headers(response: Response[Any]) -> Response[Any]:
    response.headers.update(headers.ASSETS)
    return response


def assets_router() -> Router:
    """``/assets/...``: the files in ``app/site/assets`` (public, not in the OpenAPI document)."""
    return create_static_files_router(
        path="/assets",
        directories=[ASSETS_DIR],
        name="site_assets",
        include_in_schema=False,
        opt={"public": True},
        after_request=_asset_headers,
    )
