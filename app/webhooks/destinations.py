"""Where webhooks may go: public addresses only, unless the operator allows the private network.

A workspace admin chooses the URL, but the request leaves from the service's own network: without this check a
subscription could make the service call its own metadata endpoint, database admin pages or other internal
services (server-side request forgery). The host is resolved when the subscription is made and again before
every delivery (a name can be pointed elsewhere later); every address it resolves to must be public.
``CONSENT_WEBHOOKS_ALLOW_PRIVATE=on`` lifts this for self-hosted setups whose receivers live inside.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit


class DestinationRefused(Exception):  # an outcome the caller reports
    """The URL's host is, or resolves to, an address webhooks may not go to; the message says which."""


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


async def check_destination(url: str, *, allow_private: bool) -> None:
    """Raise :class:`DestinationRefused` unless every address of the URL's host is public (or private is allowed)."""
    if allow_private:
        return
    host = urlsplit(url).hostname or ""
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise DestinationRefused(f"The host '{host}' does not resolve ({exc.strerror or exc}).") from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    for address in addresses:
        if not _public(address):
            raise DestinationRefused(
                f"The host '{host}' is or resolves to {address}, which is not a public address; webhooks go to "
                "public addresses only (the operator can allow the private network: CONSENT_WEBHOOKS_ALLOW_PRIVATE)."
            )
