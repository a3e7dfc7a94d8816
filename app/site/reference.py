"""``/schema``: the interactive API reference (Swagger UI, vendored) and the OpenAPI document.

Litestar's own :class:`SwaggerRenderPlugin` takes ``js_url``/``css_url``, but its page starts Swagger UI with an
inline script holding the whole document, loads a favicon from a CDN and adds an OAuth2 redirect page of inline
script. This plugin renders our own page instead: the vendored bundle and a starter script from this service,
the document fetched from ``/schema/openapi.json``, so the Content-Security-Policy can forbid inline script.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import version
from typing import Any

from litestar import Request, Router
from litestar.openapi.plugins import JsonRenderPlugin, OpenAPIRenderPlugin, SwaggerRenderPlugin

from app.site import headers
from app.site.controllers import templates

SWAGGER_UI = "/static/vendor/swagger-ui-dist"


class ApiReference(SwaggerRenderPlugin):
    """Swagger UI at ``/schema`` and ``/schema/swagger``, from the files vendored in ``app/static/vendor``."""

    def __init__(self) -> None:
        super().__init__(
            js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js",
            css_url=f"{SWAGGER_UI}/swagger-ui.css",
            path=["/", "/swagger"],
            favicon='<link rel="icon" href="/assets/favicon.svg" type="image/svg+xml">',
        )

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:  # noqa: ARG002
        """The reference page; Swagger UI fetches the document itself (``openapi_schema`` is not inlined)."""
        return _page(self.get_openapi_json_route(request), self.js_url, self.css_url)

    def receive_router(self, router: Router) -> None:
        """Add nothing: the OAuth2 redirect page is for OAuth flows, and the API uses bearer keys."""


@cache
def _page(spec_url: str, js_url: str, css_url: str) -> bytes:
    page = templates().get_template("reference.html")
    html = page.render(spec_url=spec_url, js_url=js_url, css_url=css_url, version=version("consent-service"))
    return html.encode()


def render_plugins() -> list[OpenAPIRenderPlugin]:
    """The reference at ``/schema`` (and ``/schema/swagger``) and the document at ``/schema/openapi.json``."""
    return [ApiReference(), JsonRenderPlugin()]


def openapi_router() -> Router:
    """The router Litestar puts the OpenAPI handlers on: public, with the reference's security headers."""
    return Router(
        "/schema", route_handlers=[], include_in_schema=False, opt={"public": True}, response_headers=headers.REFERENCE
    )
