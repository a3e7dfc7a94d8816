"""The outbound guard (app/lib/outbound.py): which addresses count as public, URL forms, one resolution, caps."""

from __future__ import annotations

import asyncio
import ipaddress

import httpx
import pytest

from app.lib.outbound import (
    MAX_POOLS,
    DeadlineExceeded,
    GuardedTransport,
    OutboundRefused,
    ResponseTooLarge,
    check_destination,
    check_host_listed,
    check_url,
    host_allowed,
    is_public,
)
from app.settings import KNOWN_PUSH_SERVICES

NOT_PUBLIC = [
    "127.0.0.1",
    "10.0.0.5",
    "172.16.1.1",
    "192.168.0.1",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # CGNAT
    "0.0.0.0",  # noqa: S104
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "192.0.2.1",  # documentation
    "198.51.100.7",
    "203.0.113.9",
    "198.18.0.1",
    "192.0.0.8",
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "fd12::1",
    "ff02::1",
    "2001:db8::1",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:169.254.169.254",
    "::127.0.0.1",  # IPv4-compatible
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b::808:808",  # NAT64 even of a public address: the gateway's network decides where it goes
    "64:ff9b:1::a00:5",
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2001::1",  # Teredo
]
PUBLIC = ["93.184.215.14", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "2002:808:808::1"]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_special_use_addresses_are_not_public(address):
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_global_unicast_addresses_are_public(address):
    assert is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "url",
    [
        "http://93.184.215.14/x",
        "ftp://93.184.215.14/x",
        "https://localhost:x@10.0.0.5:8080/",
        "https://user@93.184.215.14/",
        "https:///nohost",
        "https://93.184.215.14:99999/",
    ],
)
def test_url_forms_refused(url):
    with pytest.raises(OutboundRefused):
        check_url(url, allow_private=False)


def test_plain_http_only_with_the_private_network_allowed():
    assert check_url("http://127.0.0.1:8080/x", allow_private=True) == "127.0.0.1"
    with pytest.raises(OutboundRefused, match="user name"):
        check_url("http://a:b@127.0.0.1/", allow_private=True)


async def _answers(*rounds: list[str]):
    calls: list[str] = []
    queue = list(rounds)

    async def resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return resolver, calls


async def test_a_name_resolving_to_any_private_address_is_refused():
    resolver, _ = await _answers(["93.184.215.14", "10.0.0.5"])
    with pytest.raises(OutboundRefused, match="not a public address"):
        await check_destination("https://hooks.example/x", allow_private=False, resolver=resolver)
    assert await check_destination("https://hooks.example/x", allow_private=True, resolver=resolver) == (
        "93.184.215.14"
    )


def _recording(seen: list[httpx.Request], answer: httpx.Response | None = None):
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer if answer is not None else httpx.Response(200, content=b"ok")

    return lambda: httpx.MockTransport(handler)


async def test_dns_rebinding_the_connection_goes_to_the_checked_address():
    """The name answers a public address first and 127.0.0.1 after: the request goes to the first, resolved once."""
    resolver, calls = await _answers(["93.184.215.14"], ["127.0.0.1"])
    seen: list[httpx.Request] = []
    transport = GuardedTransport(resolver=resolver, inner=_recording(seen))
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.post("https://rebind.example/hook", content=b"{}")
    assert response.status_code == 200
    assert calls == ["rebind.example"]
    [request] = seen
    assert request.url.host == "93.184.215.14"
    assert request.headers["Host"] == "rebind.example"
    assert request.extensions["sni_hostname"] == "rebind.example"
    # the next request resolves again, and is refused: the name now points inside
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(OutboundRefused, match=r"rebind\.example") as refused:
            await client.post("https://rebind.example/hook", content=b"{}")
    assert "127.0.0.1" not in str(refused.value), "a tenant reads this text: it names no internal address"
    assert len(seen) == 1


@pytest.mark.parametrize("url", ["https://[64:ff9b::7f00:1]/x", "https://[::ffff:10.0.0.5]/x", "https://[::1]/"])
async def test_nat64_and_mapped_literals_are_refused_before_any_connection(url):
    seen: list[httpx.Request] = []
    async with httpx.AsyncClient(transport=GuardedTransport(inner=_recording(seen))) as client:
        with pytest.raises(OutboundRefused, match="not a public address"):
            await client.get(url)
    assert seen == []


async def test_redirects_are_not_followed_and_each_hop_would_be_checked():
    seen: list[httpx.Request] = []
    redirect = httpx.Response(307, headers={"Location": "https://169.254.169.254/latest/meta-data/"})
    transport = GuardedTransport(inner=_recording(seen, redirect))
    async with httpx.AsyncClient(transport=transport, follow_redirects=True) as client:
        with pytest.raises(OutboundRefused, match=r"169\.254\.169\.254"):
            await client.get("https://93.184.215.14/start")
    assert [r.url.host for r in seen] == ["93.184.215.14"]


async def test_an_answer_longer_than_the_cap_is_refused_not_buffered():
    async def endless():
        for _ in range(400 * 16):  # 400 MiB were the reader to keep going
            yield b"a" * 65536

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_Stream(endless()))

    transport = GuardedTransport(inner=lambda: httpx.MockTransport(handler), max_bytes=64 * 1024)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(ResponseTooLarge):
            await client.post("https://93.184.215.14/jobs")
    assert _Stream.read_chunks <= 2


class _Stream(httpx.AsyncByteStream):
    read_chunks = 0

    def __init__(self, chunks):
        self._chunks = chunks

    async def __aiter__(self):
        async for chunk in self._chunks:
            _Stream.read_chunks += 1
            yield chunk


async def test_a_declared_length_over_the_cap_is_refused_before_reading():
    answer = httpx.Response(200, headers={"Content-Length": str(400 << 20)}, content=b"")
    transport = GuardedTransport(inner=_recording([], answer))
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(ResponseTooLarge):
            await client.get("https://93.184.215.14/")


async def test_the_deadline_covers_a_body_that_drips():
    async def drip():
        for _ in range(50):
            await asyncio.sleep(0.05)
            yield b" "

    transport = GuardedTransport(
        inner=lambda: httpx.MockTransport(lambda _: httpx.Response(200, stream=_Stream(drip())))
    )
    transport.deadline = 0.3
    started = asyncio.get_running_loop().time()
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(DeadlineExceeded):
            await client.get("https://93.184.215.14/")
    assert asyncio.get_running_loop().time() - started < 1.5


async def test_pools_are_kept_for_the_hosts_used_last_only():
    closed: list[str] = []

    class Pool(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            self.host = ""

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            self.host = request.headers["Host"]
            return httpx.Response(204)

        async def aclose(self) -> None:
            closed.append(self.host)

    async def resolver(host: str, port: int) -> list[str]:
        return ["93.184.215.14"]

    transport = GuardedTransport(resolver=resolver, inner=Pool)
    async with httpx.AsyncClient(transport=transport) as client:
        for n in range(MAX_POOLS + 3):
            await client.get(f"https://h{n}.example/")
        await client.get("https://h3.example/")  # used again: kept
        await client.get("https://new.example/")
        assert closed == ["h0.example", "h1.example", "h2.example", "h4.example"]
    assert len(closed) == MAX_POOLS + 4


def _self_signed(name: str, directory):
    """A certificate for ``name`` (and its key) in ``directory``: the server's chain and the client's trust."""
    import datetime as dt  # noqa: PLC0415

    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.mark.parametrize(("name", "verified"), [("print.test", True), ("other.test", False)])
async def test_tls_is_verified_for_the_name_while_the_connection_goes_to_the_checked_address(tmp_path, name, verified):
    """A real TLS server on 127.0.0.1 with a certificate for print.test: the guard connects to the address it
    resolved and verifies the certificate against the name in the URL (SNI), not against the address."""
    import ssl  # noqa: PLC0415

    cert_path, key_path = _self_signed("print.test", tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert_path, key_path)
    seen: list[str] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head.decode().split("\r\n")[1])
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    client_context = ssl.create_default_context(cafile=str(cert_path))
    transport = GuardedTransport(
        allow_private=True, resolver=resolver, inner=lambda: httpx.AsyncHTTPTransport(verify=client_context)
    )
    try:
        async with httpx.AsyncClient(transport=transport) as client:
            if verified:
                response = await client.get(f"https://{name}:{port}/jobs")
                assert (response.status_code, response.text) == (200, "ok")
                assert seen == [f"Host: {name}:{port}"]
            else:
                with pytest.raises(httpx.ConnectError, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
                    await client.get(f"https://{name}:{port}/jobs")
    finally:
        server.close()


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("fcm.googleapis.com", True),
        ("FCM.googleapis.com.", True),
        ("updates.push.services.mozilla.com", True),
        ("wns2-db5p.notify.windows.com", True),
        ("web.push.apple.com", True),
        ("push.apple.com", False),  # "*." means a name below, not the domain itself
        ("fcm.googleapis.com.evil.example", False),
        ("evilfcm.googleapis.com", False),
        ("notify.windows.com.evil.example", False),
        ("xpush.services.mozilla.com", False),
        ("127.0.0.1", False),
    ],
)
def test_push_service_hosts_match_exactly_or_below_a_wildcard(host, allowed):
    assert host_allowed(host, KNOWN_PUSH_SERVICES) is allowed


def test_a_host_not_on_the_list_is_refused_before_anything_is_resolved():
    with pytest.raises(OutboundRefused, match="not one of the allowed hosts"):
        check_host_listed("https://push.example.net/x", KNOWN_PUSH_SERVICES)
    check_host_listed("https://push.example.net/x", None)  # no list: every host (the address check stays)
