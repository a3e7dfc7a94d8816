"""What every hosted page answers: its headers, and a page for an error no handler took (not problem+json).

A person who opened a link from a mail, or sent a page's form, gets a page in their language saying what happened
and what to do, with the status (and ``Retry-After``) the API would answer; never the API's JSON.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response
from litestar.types import ExceptionHandlersMap

from app.emails.render import locale_of, page
from app.lib.errors import answers_as_a_page, unhandled_problem

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'",
}

#: the API's code of an unhandled error → the page that says it (``render.PAGES``: ``<name>_title``, ``_text``)
_PAGE_OF = {
    "database_unavailable": "busy",
    "database_busy": "busy",
    "contact_merged": "changed_meanwhile",
    "deleted_meanwhile": "changed_meanwhile",
    "nul_character": "unstorable",
}


def html(body: str, status: int = 200, headers: dict[str, str] | None = None) -> Response[str]:
    """A hosted page with the pages' headers."""
    return Response(body, status_code=status, media_type="text/html", headers={**PAGE_HEADERS, **(headers or {})})


def browser_locale(request: Request[Any, Any, Any]) -> str:
    """For pages that know no contact: the browser's first language we speak."""
    accepted = [part.split(";")[0].strip() for part in request.headers.get("accept-language", "").split(",")]
    return locale_of(*accepted)


#: What an error page adds to :data:`PAGE_HEADERS`: the strictest of every hosted page's (the preference centre's
#: among them), as the error page stands in for each; its inline style is the only thing it needs.
_ERROR_PAGE_HEADERS = {
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'",
}


@answers_as_a_page
def page_error(request: Request[Any, Any, Any], exc: Exception) -> Response[str]:
    """An exception no handler took, as a page: the API's status and ``Retry-After``, its meaning in words."""
    problem = unhandled_problem(exc)  # logged there, as for the API
    name = _PAGE_OF.get(problem.code, "failed")
    body = page(browser_locale(request), name)
    return html(body, problem.status, {**_ERROR_PAGE_HEADERS, **dict(problem.headers)})


#: A page controller's (or route's) ``exception_handlers``: its other errors keep their own handlers (``AppError``,
#: ``HTTPException`` come first in an exception's MRO).
PAGE_ERRORS: ExceptionHandlersMap = {Exception: page_error}
