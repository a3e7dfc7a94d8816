"""Security headers of the front door's HTML pages.

Every page loads only from this service (``'self'``): no CDN, no web fonts, no analytics. Nothing on them runs
inline script; the API reference starts Swagger UI from a file.
"""

from __future__ import annotations

_COMMON = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",  # older browsers; frame-ancestors below is the rule
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=(), interest-cohort=()",
}

ASSETS = {"X-Content-Type-Options": "nosniff", "Cross-Origin-Resource-Policy": "same-origin"}

LANDING = {
    **_COMMON,
    # a page of text and links: its stylesheet and favicon, nothing else (no script at all)
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
}

REFERENCE = {
    **_COMMON,
    # Swagger UI: its bundle and our starter script, its stylesheet, the SVG icons its CSS embeds as data: URLs,
    # and "Try it out" calls to this same service
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
}
