"""The one outbound-request guard: every request to a URL a tenant or a browser gave us goes through it.

A workspace admin chooses webhook receivers, the print house and a service account's token URI; a browser chooses
its web push endpoint. The requests leave from the service's own network, so without a guard such a URL could make
the service call its metadata endpoint, its database or any other internal service (server-side request
forgery). What the guard does, for each request (each redirect hop too, were a client to follow them):

- the URL is ``https://`` (``http://`` only where the operator allows the private network), without userinfo;
- the host is resolved **once**; every address it resolves to must be globally routable (:func:`is_public`);
- the connection goes to the address that was checked (the host name stays in the ``Host`` header and in TLS SNI
  and certificate verification), so a name re-pointed between the check and the connect (DNS rebinding) changes
  nothing;
- the answer is read up to :data:`MAX_RESPONSE_BYTES` and the whole exchange, body included, ends by a deadline;
- where a list of hosts is given (web push: the known push services, :data:`app.settings.KNOWN_PUSH_SERVICES`),
  the host must match one of its patterns before anything is resolved.

``CONSENT_WEBHOOKS_ALLOW_PRIVATE=on`` (:attr:`app.settings.Settings.webhooks_allow_private`) lifts the address
and scheme checks for self-hosted setups whose receivers live inside; the size cap and the deadline stay.
Refusals and caps are ``httpx.RequestError`` subclasses, so code that handles "the far side could not be asked"
handles them too. Their texts name the host (never its addresses, nor anything the far side answered).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import httpx

MAX_RESPONSE_BYTES = 64 * 1024
"""How much of an answer is read at most: providers answer a few hundred bytes; more is refused, not buffered."""

DEFAULT_DEADLINE = 15.0
"""Seconds for a whole exchange (resolve, connect, send, answer, body) unless the caller says otherwise."""

MAX_POOLS = 32
"""Connection pools kept per guard, one per host name, the least recently used closed beyond this."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""Resolves a host name and port to its addresses (strings); the default asks the system's resolver."""

#: Special-use ranges Python's ``is_global`` counts as global, or that embed an address to be checked instead.
_NOT_PUBLIC = tuple(
    ipaddress.ip_network(n)
    for n in (
        "100.64.0.0/10",  # shared address space (carrier-grade NAT)
        "192.0.0.0/24",  # IETF protocol assignments
        "198.18.0.0/15",  # benchmarking
        "64:ff9b::/96",  # NAT64, well-known prefix: reaches IPv4 addresses, private ones included
        "64:ff9b:1::/48",  # NAT64, local-use prefix
        "::/96",  # IPv4-compatible IPv6 (deprecated)
        "2001::/32",  # Teredo
        "2001:db8::/32",  # documentation
        "100::/64",  # discard-only
        "fec0::/10",  # site-local (deprecated)
    )
)


class OutboundRefused(httpx.RequestError):
    """The URL may not be requested: its scheme, its userinfo, or an address of its host is not allowed."""

    before_sending = True
    """Nothing left the service: a delivery refused here cannot have reached anyone (see ``SendResult``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


class HostUnresolved(OutboundRefused):
    """The host does not resolve (now): nothing is requested; a check made ahead of time may let it pass."""


class ResponseTooLarge(httpx.RequestError):
    """The answer was longer than the guard reads."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


class DeadlineExceeded(httpx.TimeoutException):
    """The exchange, answer included, took longer than its deadline."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


def is_public(address: IPAddress) -> bool:
    """Whether ``address`` is globally routable unicast.

    Not: private, loopback, link-local, multicast, reserved, unspecified, shared (CGNAT), documentation or NAT64
    addresses, nor IPv6 forms embedding a non-public IPv4 one (mapped, compatible, 6to4).
    """
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return is_public(address.ipv4_mapped)
        if address.sixtofour is not None:
            return is_public(address.sixtofour) and not address.sixtofour.is_multicast
    if any(address in network for network in _NOT_PUBLIC):
        return False
    return address.is_global and not (
        address.is_multicast
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_unspecified
    )


def check_url(url: str, *, allow_private: bool, allow_http: bool | None = None) -> str:
    """The URL's host, if its form is allowed: ``https://``, no userinfo.

    ``http://`` too with ``allow_http`` (by default: with ``allow_private``).
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # raises for a port out of range
    except ValueError:
        raise OutboundRefused("The URL is not a valid URL.") from None
    schemes = ("https", "http") if (allow_private if allow_http is None else allow_http) else ("https",)
    if parts.scheme not in schemes:
        raise OutboundRefused(
            "The URL must start with https:// (plain http only where the operator allows the private network: "
            "CONSENT_WEBHOOKS_ALLOW_PRIVATE)."
        )
    if "@" in parts.netloc:
        raise OutboundRefused("The URL must not carry a user name or password (user@host).")
    host = parts.hostname or ""
    if not host:
        raise OutboundRefused("The URL has no host.")
    return host


#: A web push endpoint as browsers give them: ``https://``, a host name of ASCII letters, digits, dots and hyphens,
#: perhaps a port, then its path. A subscription must be spelled so (:func:`plain_push_endpoint`); the audience export
#: matches such an endpoint's host in SQL (``app.eligibility.repository``), and only endpoints stored before the rule
#: (or by hand) are read into Python there.
PLAIN_PUSH_ENDPOINT = "^[Hh][Tt][Tt][Pp][Ss]://[A-Za-z0-9.-]+(:[0-9]*)?(/|$)"
_PLAIN_PUSH_SUBSCRIPTION = re.compile(r"https://[A-Za-z0-9.-]+(:[0-9]{1,5})?/")


def plain_push_endpoint(url: str) -> bool:
    """Whether a new subscription's ``url`` is spelled as browsers' push services spell endpoints.

    ``https://host[:port]/path``: no user info, no brackets, no percent signs in the host, a path after it. Every
    endpoint a browser's ``PushManager`` gives (FCM, Mozilla, Apple, Windows) is; anything else came from a client
    that made it up.
    """
    return _PLAIN_PUSH_SUBSCRIPTION.match(url) is not None


def host_allowed(host: str, patterns: tuple[str, ...]) -> bool:
    """Whether ``host`` is one of ``patterns``: a name matches itself, ``*.example.com`` any name below it.

    Compared in lower case and without a trailing dot, so ``FCM.googleapis.com.`` is ``fcm.googleapis.com``; an
    address literal matches only a pattern that spells it.
    """
    names, suffixes = split_patterns(patterns)
    name = host.lower().rstrip(".")
    return name in names or name.endswith(suffixes)


def split_patterns(patterns: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``patterns`` as :func:`host_allowed` reads them: names matched whole, and the endings ``*.`` patterns match.

    In lower case and without a trailing dot; ``*.example.com`` gives the ending ``.example.com`` (so not the name
    ``example.com`` itself). The audience export matches hosts in SQL with these (``app.eligibility.repository``).
    """
    names: list[str] = []
    suffixes: list[str] = []
    for given in patterns:
        pattern = given.lower().rstrip(".")
        if pattern.startswith("*."):
            suffixes.append(pattern[1:])
        else:
            names.append(pattern)
    return tuple(names), tuple(suffixes)


def listed(url: str, hosts: tuple[str, ...] | None) -> bool:
    """Whether the URL's host is on ``hosts`` (``None``: no list, every host); a URL that cannot be read: no."""
    if hosts is None:
        return True
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return False
    return host_allowed(host, hosts)


def check_host_listed(url: str, hosts: tuple[str, ...] | None) -> None:
    """Refuse a URL whose host is not on ``hosts`` (``None``: no list, every public host)."""
    if not listed(url, hosts):
        try:
            host = urlsplit(url).hostname or ""
        except ValueError:  # brackets that do not make an IPv6 literal: refused as any host off the list
            raise OutboundRefused("The URL's host cannot be read (for web push: a known push service).") from None
        raise OutboundRefused(f"'{host}' is not one of the allowed hosts (for web push: a known push service).")


async def system_resolver(host: str, port: int) -> list[str]:
    """The host's addresses from the system's resolver (run off the event loop by asyncio)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def resolve_checked(host: str, port: int, *, allow_private: bool, resolver: Resolver = system_resolver) -> str:
    """Resolve ``host`` once; the address to connect to, after every address it resolves to was checked."""
    try:
        addresses = [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        try:
            found = await resolver(host, port)
        except OSError as exc:
            raise HostUnresolved(f"The host '{host}' does not resolve ({exc.strerror or exc}).") from None
        try:
            addresses = [ipaddress.ip_address(a.split("%")[0]) for a in found]
        except ValueError:
            raise OutboundRefused(f"The host '{host}' resolves to something that is not an address.") from None
        if not addresses:
            raise HostUnresolved(f"The host '{host}' does not resolve.") from None
    if not allow_private:
        for address in addresses:
            if not is_public(address):
                raise OutboundRefused(
                    # the address itself is not named: these texts reach tenants, and the names of an internal
                    # network and their addresses are none of their business
                    f"The host '{host}' is not a public address, or resolves to one that is not; requests to "
                    "addresses given by tenants or browsers go to public addresses only (the operator can allow "
                    "the private network: CONSENT_WEBHOOKS_ALLOW_PRIVATE)."
                )
    return str(addresses[0])


async def check_destination(url: str, *, allow_private: bool, resolver: Resolver = system_resolver) -> str:
    """Check a URL as the guard will when it is requested (form and addresses); the address it would connect to.

    For checks ahead of time (a URL being stored): :class:`HostUnresolved` says only that the name does not resolve
    now, which the caller may accept, since the guard checks again at every request.
    """
    host = check_url(url, allow_private=allow_private)
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return await resolve_checked(host, port, allow_private=allow_private, resolver=resolver)


class _Capped(httpx.AsyncByteStream):
    """The answer's body, read up to a limit and by a deadline (loop time)."""

    def __init__(self, inner: httpx.AsyncByteStream, limit: int, deadline: float, host: str) -> None:
        self._inner, self._limit, self._deadline, self._host = inner, limit, deadline, host

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        chunks = self._inner.__aiter__()
        while True:
            try:
                async with asyncio.timeout_at(self._deadline):
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise DeadlineExceeded(f"The answer from '{self._host}' did not end in time.") from None
            seen += len(chunk)
            if seen > self._limit:
                raise ResponseTooLarge(f"The answer from '{self._host}' is longer than {self._limit} bytes.")
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that checks every request's URL and connects to the address it checked.

    One inner connection pool per host name, so a TLS connection verified for one name never carries another's
    requests. ``inner`` (a factory) is for tests; ``resolver`` too.
    """

    def __init__(
        self,
        *,
        allow_private: bool = False,
        allow_http: bool | None = None,
        max_bytes: int = MAX_RESPONSE_BYTES,
        deadline: float = DEFAULT_DEADLINE,
        resolver: Resolver = system_resolver,
        inner: Callable[[], httpx.AsyncBaseTransport] | None = None,
        hosts: tuple[str, ...] | None = None,
    ) -> None:
        self.allow_private = allow_private
        self.hosts = hosts
        """Host patterns a request's host must match (:func:`host_allowed`); ``None``: any public host."""
        self.allow_http = allow_http
        """Whether plain http is requested (``None``: with ``allow_private``); the addresses are checked anyway."""
        self.max_bytes = max_bytes
        self.deadline = deadline
        self._resolver = resolver
        self._inner = inner or (lambda: httpx.AsyncHTTPTransport(retries=0))
        self._pools: dict[str, httpx.AsyncBaseTransport] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Check, resolve once, connect to the checked address; the answer's body is capped and on the clock."""
        url = str(request.url)
        host = check_url(url, allow_private=self.allow_private, allow_http=self.allow_http)
        check_host_listed(url, self.hosts)
        port = request.url.port or (443 if request.url.scheme == "https" else 80)
        deadline = asyncio.get_running_loop().time() + self.deadline
        try:
            async with asyncio.timeout_at(deadline):
                address = await resolve_checked(host, port, allow_private=self.allow_private, resolver=self._resolver)
                request.url = request.url.copy_with(host=address)
                if request.url.scheme == "https":
                    request.extensions = {**request.extensions, "sni_hostname": host}
                pool = await self._pool(host)
                response = await pool.handle_async_request(request)
        except TimeoutError:
            raise DeadlineExceeded(f"'{host}' did not answer in time.") from None
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            await response.aclose()
            raise ResponseTooLarge(f"The answer from '{host}' is longer than {self.max_bytes} bytes.")
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Capped(response.stream, self.max_bytes, deadline, host)
        return response

    async def _pool(self, host: str) -> httpx.AsyncBaseTransport:
        """The host's pool, kept among the :data:`MAX_POOLS` used last (browsers choose endpoints: not unbounded)."""
        pool = self._pools.pop(host, None)
        if pool is None:
            pool = self._inner()
            while len(self._pools) >= MAX_POOLS:
                oldest = next(iter(self._pools))
                await self._pools.pop(oldest).aclose()
        self._pools[host] = pool  # the most recently used last
        return pool

    async def aclose(self) -> None:
        """Close every pool."""
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.aclose()


def guarded_client(
    *,
    allow_private: bool,
    timeout: float = DEFAULT_DEADLINE,
    headers: dict[str, str] | None = None,
    resolver: Resolver = system_resolver,
) -> httpx.AsyncClient:
    """An httpx client whose every request goes through :class:`GuardedTransport`; redirects are not followed."""
    transport = GuardedTransport(allow_private=allow_private, deadline=timeout, resolver=resolver)
    return httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=False, headers=headers)
