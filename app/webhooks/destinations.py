"""Where webhooks may go: public addresses only, unless the operator allows the private network.

A workspace admin chooses the URL, but the request leaves from the service's own network. The checks are the
outbound guard's (:mod:`app.lib.outbound`): the URL's form and every address of its host when the subscription is
made, and again at every delivery by the guarded client, which connects to the address it checked.
``CONSENT_WEBHOOKS_ALLOW_PRIVATE=on`` lifts this for self-hosted setups whose receivers live inside.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from app.lib import outbound

_GUARD_WORDS = "requests to addresses given by tenants or browsers"


class DestinationRefused(Exception):  # an outcome the caller reports
    """The URL's host is, or resolves to, an address webhooks may not go to; the message says which."""


async def check_destination(url: str, *, allow_private: bool, resolver: outbound.Resolver | None = None) -> None:
    """Raise :class:`DestinationRefused` unless every address of the URL's host is public (or private is allowed).

    The scheme is the subscription's own rule (``check_url`` in the service, with its http switch); this checks
    the addresses, as the guard does at every delivery.
    """
    if allow_private:
        return
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        await outbound.resolve_checked(
            host, port, allow_private=allow_private, resolver=resolver or outbound.system_resolver
        )
    except (outbound.OutboundRefused, ValueError) as exc:
        raise DestinationRefused(str(exc).replace(_GUARD_WORDS, "webhooks")) from None
