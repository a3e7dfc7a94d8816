"""Issue 16, points 1-3: every URL a tenant or a browser gave is requested through the outbound guard.

The scenarios of the hostile review: a print house, a web push endpoint or a token URI pointing inside (loopback,
cloud metadata, private ranges, NAT64 and IPv4-mapped forms), a redirect to an internal address, a 400 MiB answer,
a name re-pointed between the check and the connect (DNS rebinding), and answer bodies kept as error texts.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import resource
import socket
import time
import uuid

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import text

from app.channels import app_push, web_push
from app.channels import print as print_channel
from app.channels.adapters import Adapters
from app.lib.auth import Scope
from app.lib.keys import Keys
from app.settings import KNOWN_PUSH_SERVICES, Settings
from app.webhooks import service as webhooks
from app.webhooks.schemas import SubscriptionIn
from app.webhooks.sender import SenderConfig, WebhookSender
from app.workspaces.service import FCM_SERVICE_ACCOUNT, sealing_context
from app.workspaces.settings import AppPushSettings, PrintHouseSettings, WebPushSettings, WorkspaceSettings
from channel_providers.base import Outbound, Outcome
from tests.conftest import TEST_SECRET, local_http

NOT_PUBLIC_URLS = [
    "https://169.254.169.254/latest/",
    "https://10.0.0.5/admin",
    "https://[::1]/x",
    "http://127.0.0.1:5432/",
    "https://127.0.0.1/jobs",
    "https://localhost:9200/_cluster/settings",
    "http://localhost:x@10.0.0.5:8080/",
    "https://user:pw@93.184.215.14/jobs",
    "https://[64:ff9b::a9fe:a9fe]/latest/",  # NAT64 of the metadata address
    "https://[::ffff:10.0.0.5]/admin",  # IPv4-mapped
    "https://100.64.0.1/",  # CGNAT
    "http://93.184.215.14/jobs",  # public, but not https
]


@pytest.fixture
def settings(tmp_path, request):
    """The service's settings; ``@pytest.mark.parametrize("settings", [True], indirect=True)`` allows private.

    The address checks are under test here, so web push endpoints are not limited to the known push services
    unless a test passes ``{"web_push_services": (...)}`` as its parameter (with ``"allow_private"`` if wanted).
    """
    param = getattr(request, "param", False)
    options = param if isinstance(param, dict) else {"allow_private": param}
    return Settings(
        data_dir=tmp_path / "data",
        secret_key=TEST_SECRET,
        public_base_url="https://consent.example.com",
        webhooks_allow_private=options.get("allow_private", False),
        web_push_services=options.get("web_push_services"),
    )


@pytest.fixture
async def adapters(settings, app):
    made = Adapters(settings, Keys(TEST_SECRET), app.state.mail_sender)
    yield made
    await made.aclose()


class Recorder:
    """A local HTTP server that records every request (method and path) it sees."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.application = web.Application()

    def route(self, path: str, handler) -> None:
        async def recorded(request: web.Request) -> web.StreamResponse:
            self.hits.append(request.path)
            await request.read()
            return await handler(request)

        self.application.router.add_route("*", path, recorded)


def _letter() -> Outbound:
    return Outbound(id=str(uuid.uuid4()), channel="print", to="k", content={"template": "t"}, details={"city": "Köln"})


def _print_house(adapters: Adapters, url: str):
    return print_channel.adapter(adapters, uuid.uuid4(), WorkspaceSettings(print_house=PrintHouseSettings(url=url)))


# --- at PUT /v1/workspace/settings ------------------------------------------------------------------------------


@pytest.mark.parametrize("url", NOT_PUBLIC_URLS)
async def test_settings_refuse_a_print_house_that_is_not_https_to_a_public_host(client, admin, url):
    current = (await client.get("/v1/workspace/settings", headers=admin)).json()
    current["print_house"] = {"url": url}
    refused = await client.put("/v1/workspace/settings", json=current, headers=admin)
    assert refused.status_code == 422, refused.text
    assert refused.json()["code"] == "print_house_url_not_allowed"
    assert (await client.get("/v1/workspace/settings", headers=admin)).json()["print_house"]["url"] is None


async def test_settings_take_a_print_house_on_a_public_address(client, admin):
    current = (await client.get("/v1/workspace/settings", headers=admin)).json()
    current["print_house"] = {"url": "https://93.184.215.14/jobs"}
    assert (await client.put("/v1/workspace/settings", json=current, headers=admin)).status_code == 200


@pytest.mark.parametrize("settings", [True], indirect=True)
async def test_the_operator_may_allow_a_print_house_inside_but_never_userinfo(client, admin):
    current = (await client.get("/v1/workspace/settings", headers=admin)).json()
    current["print_house"] = {"url": "http://127.0.0.1:8080/jobs"}
    assert (await client.put("/v1/workspace/settings", json=current, headers=admin)).status_code == 200
    current["print_house"] = {"url": "http://localhost:x@10.0.0.5:8080/"}
    refused = await client.put("/v1/workspace/settings", json=current, headers=admin)
    assert (refused.status_code, refused.json()["code"]) == (422, "print_house_url_not_allowed")


# --- at send ----------------------------------------------------------------------------------------------------


async def test_a_print_house_stored_inside_is_refused_at_send_without_a_connection(adapters):
    recorder = Recorder()

    async def internal(_: web.Request) -> web.Response:
        return web.json_response({"id": "INTERNAL-SECRET-42"})

    recorder.route("/internal/admin", internal)
    async with local_http(recorder.application) as base:
        results = [
            await _print_house(adapters, url).send(_letter())
            for url in (
                f"{base}/internal/admin",
                f"{base.replace('http://', 'https://')}/internal/admin",
                "https://169.254.169.254/latest/meta-data/",
                "https://10.0.0.5/admin",
                "https://[64:ff9b::7f00:1]/admin",
            )
        ]
    assert recorder.hits == []
    for result in results:
        assert result.outcome is not Outcome.ACCEPTED
        assert "INTERNAL-SECRET" not in (result.provider_message_id or "")
        assert "OutboundRefused" in result.detail


@pytest.mark.parametrize("settings", [True], indirect=True)
async def test_a_redirect_is_not_followed_and_the_body_is_never_kept(adapters):
    recorder = Recorder()

    async def moved(_: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("/internal/elsewhere")

    async def elsewhere(_: web.Request) -> web.Response:
        return web.json_response({"id": "INTERNAL-SECRET-42"})

    async def failing(_: web.Request) -> web.Response:
        return web.Response(status=400, text="SECRET-BODY-OF-THE-FAR-SIDE")

    recorder.route("/jobs", moved)
    recorder.route("/internal/elsewhere", elsewhere)
    recorder.route("/failing", failing)
    async with local_http(recorder.application) as base:
        redirected = await _print_house(adapters, f"{base}/jobs").send(_letter())
        failed = await _print_house(adapters, f"{base}/failing").send(_letter())
    assert recorder.hits == ["/jobs", "/failing"]
    assert (redirected.outcome, redirected.detail) == (Outcome.PERMANENT, "HTTP 307")
    assert (failed.outcome, failed.detail) == (Outcome.PERMANENT, "HTTP 400")


@pytest.mark.parametrize("settings", [True], indirect=True)
async def test_a_400_mib_answer_is_cut_at_the_cap(adapters):
    chunk, written = b"a" * (1 << 20), []

    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            for _ in range(400):  # 400 MiB
                await response.write(chunk)
                written.append(1)
        return response

    recorder = Recorder()
    recorder.route("/jobs", big)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    async with local_http(recorder.application) as base:
        result = await _print_house(adapters, f"{base}/jobs").send(_letter())
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert result.outcome is Outcome.TRANSIENT
    assert result.detail.startswith("ResponseTooLarge")
    assert grown_mib < 32, f"max RSS grew by {grown_mib:.0f} MiB"
    assert len(written) < 400, "the reader stopped"
    assert time.monotonic() - started < 10


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _push(endpoint: str) -> Outbound:
    browser = ec.generate_private_key(ec.SECP256R1())
    p256 = browser.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    vapid = ec.generate_private_key(ec.SECP256R1())
    return Outbound(
        id=str(uuid.uuid4()),
        channel="web_push",
        to=endpoint,
        content={"title": "t"},
        details={"p256dh": _b64(p256), "auth": _b64(b"0123456789abcdef")},
        extras={
            "vapid_private_key": _b64(vapid.private_numbers().private_value.to_bytes(32, "big")),
            "vapid_subject": "mailto:push@example.com",
        },
    )


def _web_push(adapters: Adapters):
    settings = WorkspaceSettings(web_push=WebPushSettings(subject="mailto:push@example.com"))
    return web_push.adapter(adapters, uuid.uuid4(), settings)


@pytest.mark.parametrize("settings", [True], indirect=True)
async def test_web_push_does_not_follow_redirects_nor_keep_the_body(adapters):
    recorder = Recorder()

    async def start(_: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("/internal/elsewhere")

    async def elsewhere(_: web.Request) -> web.Response:
        return web.Response(status=201)

    async def refusing(_: web.Request) -> web.Response:
        return web.Response(status=403, text="SECRET-BODY-OF-THE-FAR-SIDE")

    recorder.route("/push/1", start)
    recorder.route("/internal/elsewhere", elsewhere)
    recorder.route("/push/2", refusing)
    adapter = _web_push(adapters)
    async with local_http(recorder.application) as base:
        redirected = await adapter.send(_push(f"{base}/push/1"))
        refused = await adapter.send(_push(f"{base}/push/2"))
    assert recorder.hits == ["/push/1", "/push/2"]
    assert (redirected.outcome, redirected.detail) == (Outcome.PERMANENT, "HTTP 307")
    assert (refused.outcome, refused.detail) == (Outcome.PERMANENT, "HTTP 403")


async def test_a_web_push_endpoint_stored_inside_is_refused_at_send(adapters):
    recorder = Recorder()

    async def push(_: web.Request) -> web.Response:
        return web.Response(status=201)

    recorder.route("/push/1", push)
    adapter = _web_push(adapters)
    async with local_http(recorder.application) as base:
        result = await adapter.send(_push(f"{base.replace('http://', 'https://')}/push/1"))
    assert recorder.hits == []
    assert result.outcome is Outcome.TRANSIENT
    assert "not a public address" in result.detail


async def test_an_fcm_token_uri_that_is_not_googles_is_never_asked(adapters):
    recorder = Recorder()

    async def token(_: web.Request) -> web.Response:
        return web.Response(status=418)

    recorder.route("/internal/token", token)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    workspace_id = uuid.uuid4()
    async with local_http(recorder.application) as base:
        account = {
            "type": "service_account",
            "project_id": "p",
            "client_email": "a@b",
            "private_key": pem,
            "token_uri": f"{base}/internal/token",
        }
        sealed = Keys(TEST_SECRET).seal(json.dumps(account), sealing_context(workspace_id, FCM_SERVICE_ACCOUNT))
        settings = WorkspaceSettings(app_push=AppPushSettings(fcm_service_account_sealed=sealed, fcm_project_id="p"))
        adapter = app_push.adapter(adapters, workspace_id, settings)
        result = await adapter.send(
            Outbound(
                id="d1",
                channel="app_push",
                to="i",
                content={"title": "t", "body": "b"},
                details={"platform": "android", "token": "x"},
            )
        )
    assert recorder.hits == []
    assert (result.outcome, result.error_code) == (Outcome.PERMANENT, "auth")
    assert "https://oauth2.googleapis.com/token" in result.detail


@pytest.mark.parametrize(
    "settings", [{"allow_private": True, "web_push_services": ("fcm.googleapis.com", "127.0.0.1")}], indirect=True
)
async def test_web_push_goes_only_to_the_listed_push_services_at_send(adapters):
    """An endpoint stored before the operator narrowed the list is not pushed to; a listed host is."""
    recorder = Recorder()

    async def push(_: web.Request) -> web.Response:
        return web.Response(status=201)

    recorder.route("/push/1", push)
    adapter = _web_push(adapters)
    async with local_http(recorder.application) as base:
        listed = await adapter.send(_push(f"{base}/push/1"))
        unlisted = await adapter.send(_push(f"{base.replace('127.0.0.1', 'localhost')}/push/1"))
    assert recorder.hits == ["/push/1"]
    assert listed.outcome is Outcome.ACCEPTED
    assert unlisted.outcome is Outcome.TRANSIENT
    assert "not one of the allowed hosts" in unlisted.detail


# --- web push subscriptions ------------------------------------------------------------------------------------


async def subscribe(client, admin, tenant, ledger, endpoint):
    """A browser's subscription at ``endpoint`` to a purpose with its notice, sent with the form key."""
    await ledger.purpose("offers")
    notice = await client.post(
        "/v1/notices",
        json={"purpose": "offers", "channels": ["web_push"], "locale": "de", "text": "Push"},
        headers=admin,
    )
    browser = ec.generate_private_key(ec.SECP256R1())
    p256 = browser.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    body = {
        "subscription": {"endpoint": endpoint, "keys": {"p256dh": _b64(p256), "auth": _b64(b"0123456789abcdef")}},
        "purposes": ["offers"],
        "notice_id": notice.json()["notice_id"],
    }
    return await client.post("/v1/push/web-subscriptions", json=body, headers=await tenant.key(Scope.SIGNUP))


@pytest.mark.parametrize("settings", [{"web_push_services": KNOWN_PUSH_SERVICES}], indirect=True)
@pytest.mark.parametrize(
    ("endpoint", "taken"),
    [
        ("https://fcm.googleapis.com/fcm/send/abc", True),
        ("https://updates.push.services.mozilla.com/wpush/v2/abc", True),
        ("https://wns2-db5p.notify.windows.com/w/?token=abc", True),
        ("https://web.push.apple.com/QAbc", True),
        ("https://push.example.net/abc", False),  # any other host, public or not
        ("https://fcm.googleapis.com.attacker.example/abc", False),
        ("https://[fcm.googleapis.com]/abc", False),  # brackets without an IPv6 literal: was a 500
        ("https://[::1/abc", False),
        ("https://push.apple.com/abc", False),  # the pattern is *.push.apple.com
    ],
)
async def test_a_web_push_endpoint_must_be_on_a_known_push_service(client, admin, tenant, ledger, endpoint, taken):
    answer = await subscribe(client, admin, tenant, ledger, endpoint)
    if taken:
        assert answer.status_code == 201, answer.text
    else:
        assert answer.status_code == 422, answer.text
        assert answer.json()["code"] == "push_endpoint_not_allowed"
        assert "known push service" in answer.json()["detail"]


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://fcm.googleapis.com?" + "x" * 2000,  # no path: the audience export would read it into Python
        "https://fcm.googleapis.com",
        "https://fcm.googleapis.com:443?token",
        "https://fcm.googleapis.com#x",
    ],
)
async def test_a_web_push_endpoint_not_spelled_as_browsers_spell_it_is_refused(client, admin, tenant, ledger, endpoint):
    refused = await subscribe(client, admin, tenant, ledger, endpoint)
    assert refused.status_code == 422, refused.text
    assert refused.json()["code"] == "push_endpoint_not_allowed"
    assert "https://host[:port]/path" in refused.json()["detail"]


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://127.0.0.1/push/1",
        "https://localhost/push/1",
        "https://169.254.169.254/latest/",
        "https://10.0.0.5/push",
        "https://[::ffff:127.0.0.1]/push",
        "https://[64:ff9b::a00:5]/push",
        "https://[fd00::1]/push",
    ],
)
async def test_a_web_push_endpoint_on_a_private_host_is_refused_at_subscription(
    client, admin, tenant, ledger, endpoint
):
    refused = await subscribe(client, admin, tenant, ledger, endpoint)
    assert refused.status_code == 422, refused.text
    assert refused.json()["code"] == "push_endpoint_not_allowed"


# --- webhooks: DNS rebinding ------------------------------------------------------------------------------------


async def test_a_webhook_name_re_pointed_after_the_check_is_not_connected_to(database, tenant, ledger, monkeypatch):
    """The receiver's name answers a public address to the check and 127.0.0.1 afterwards: nothing connects there."""
    connections: list[int] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    real = socket.getaddrinfo
    answers = iter(["93.184.215.14"])

    def rebinding(host, *args, **kwargs):
        if (host.decode() if isinstance(host, bytes) else host) != "hooks.rebind.test":  # anyio asks in bytes
            return real(host, *args, **kwargs)
        address = next(answers, "127.0.0.1")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    keys = Keys(TEST_SECRET)
    async with database.sessionmaker() as session, session.begin():
        data = SubscriptionIn(url=f"https://hooks.rebind.test:{port}/hooks", events=["consent.changed"])
        await webhooks.create(session, keys, tenant.id, data, allow_http=False, allow_private=True)
    purpose = await ledger.purpose("newsletter")
    await ledger.apply(await ledger.point("sms", "+4915112345678"), purpose.id, "start_word")
    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    try:
        await WebhookSender(database, keys, SenderConfig(timeout=2.0, max_attempts=1)).run_once()
    finally:
        server.close()
    assert connections == [], "no connection to the address the name was re-pointed to"
    async with database.sessionmaker() as session:
        error = (await session.execute(text("SELECT last_error FROM webhook_deliveries"))).scalar_one()
    assert "not a public address" in error
    assert "127.0.0.1" not in error, "the tenant reading last_error learns no internal address"


async def test_settings_refuse_an_fcm_token_uri_that_is_not_googles(client, admin):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    account = {"type": "service_account", "project_id": "p", "client_email": "a@b", "private_key": pem}
    current = (await client.get("/v1/workspace/settings", headers=admin)).json()
    for token_uri in ("http://127.0.0.1:8080/internal/token", "https://169.254.169.254/token", "https://a.example/t"):
        current["app_push"] = {"fcm_service_account": json.dumps({**account, "token_uri": token_uri})}
        refused = await client.put("/v1/workspace/settings", json=current, headers=admin)
        assert (refused.status_code, refused.json()["code"]) == (422, "fcm_token_uri_not_allowed"), token_uri
    current["app_push"] = {
        "fcm_service_account": json.dumps({**account, "token_uri": "https://oauth2.googleapis.com/token"})
    }
    assert (await client.put("/v1/workspace/settings", json=current, headers=admin)).status_code == 200
