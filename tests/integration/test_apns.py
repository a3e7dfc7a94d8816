"""iOS app push through APNs: HTTP/2 with an ES256 provider token, against a local HTTP/2 stand-in (hypercorn)."""

from __future__ import annotations

import asyncio
import base64
import json
import socket

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypercorn.asyncio import serve
from hypercorn.config import Config

from channel_providers.apns import ApnsAdapter
from channel_providers.base import Outbound, Outcome

TEAM, KEY_ID, TOPIC = "ABCDE12345", "KEY1234567", "com.acme.app"


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ApnsStandIn:
    """Apple's /3/device/<token>: checks the HTTP version, the provider token and the topic."""

    def __init__(self, key: ec.EllipticCurvePrivateKey):
        self.public = key.public_key()
        self.received: list[dict] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": f"{message['type']}.complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        status, reply = self.check(scope, headers, body)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"apns-id", headers.get("apns-id", "").encode())],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps(reply).encode() if reply else b""})

    def check(self, scope, headers, body):
        assert scope["http_version"] == "2"
        token = headers["authorization"].removeprefix("bearer ")
        header, claims, signature = token.split(".")
        raw = _unb64(signature)
        der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        self.public.verify(der, f"{header}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))
        assert json.loads(_unb64(header))["kid"] == KEY_ID
        assert json.loads(_unb64(claims))["iss"] == TEAM
        if headers.get("apns-topic") != TOPIC:
            return 400, {"reason": "TopicDisallowed"}
        device = scope["path"].removeprefix("/3/device/")
        if device == "gone-ios":
            return 410, {"reason": "Unregistered", "timestamp": 1790000000000}
        self.received.append({"device": device, "payload": json.loads(body), "push_type": headers["apns-push-type"]})
        return 200, None


@pytest.fixture
async def apns():
    key = ec.generate_private_key(ec.SECP256R1())
    stand_in = ApnsStandIn(key)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.loglevel = "WARNING"
    stop = asyncio.Event()
    server = asyncio.create_task(serve(stand_in, config, shutdown_trigger=stop.wait))
    await asyncio.sleep(0.3)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    adapter = ApnsAdapter(
        team_id=TEAM, key_id=KEY_ID, private_key=pem.decode(), topic=TOPIC, base_url=f"http://127.0.0.1:{port}"
    )
    try:
        yield stand_in, adapter
    finally:
        await adapter.aclose()
        stop.set()
        await server


def outbound(token: str) -> Outbound:
    return Outbound(
        id="01900000-0000-7000-8000-000000000001",
        channel="app_push",
        to="inst-ios",
        content={"title": "Herbst", "body": "Neu da", "data": {"deeplink": "acme://herbst"}},
        details={"platform": "ios", "token": token},
    )


async def test_an_alert_is_sent_over_http2_with_a_provider_token(apns):
    stand_in, adapter = apns
    result = await adapter.send(outbound("device-abc"))
    assert result.outcome is Outcome.ACCEPTED, result.detail
    assert result.provider_message_id == "01900000-0000-7000-8000-000000000001"
    [received] = stand_in.received
    assert received["device"] == "device-abc"
    assert received["push_type"] == "alert"
    assert received["payload"] == {"aps": {"alert": {"title": "Herbst", "body": "Neu da"}}, "deeplink": "acme://herbst"}


async def test_410_means_the_token_is_gone_and_other_refusals_are_permanent(apns):
    stand_in, adapter = apns
    gone = await adapter.send(outbound("gone-ios"))
    assert gone.outcome is Outcome.GONE
    assert gone.error_code == "Unregistered"
    adapter.topic = "com.other.app"
    refused = await adapter.send(outbound("device-abc"))
    assert refused.outcome is Outcome.PERMANENT
    assert refused.error_code == "TopicDisallowed"
    assert stand_in.received == []


async def test_an_unreachable_service_is_transient(apns):
    _, adapter = apns
    adapter.base_url = "http://127.0.0.1:1"
    result = await adapter.send(outbound("device-abc"))
    assert result.outcome is Outcome.TRANSIENT


class _Recorder:
    def __init__(self):
        self.seen = []

    async def send(self, outbound):
        from channel_providers.base import SendResult  # noqa: PLC0415

        self.seen.append(outbound.details["platform"])
        return SendResult(Outcome.ACCEPTED)


async def test_ios_goes_to_apns_and_the_rest_to_fcm():
    from channel_providers.apns import AppPushRouter  # noqa: PLC0415

    apns, fcm, files = _Recorder(), _Recorder(), _Recorder()
    router = AppPushRouter(apns=apns, fcm=fcm, fallback=files)
    for platform in ("ios", "android", "ios"):
        await router.send(Outbound(id="x", channel="app_push", to="i", content={}, details={"platform": platform}))
    assert (apns.seen, fcm.seen, files.seen) == (["ios", "ios"], ["android"], [])
    without_apns = AppPushRouter(apns=None, fcm=None, fallback=files)
    await without_apns.send(Outbound(id="y", channel="app_push", to="i", content={}, details={"platform": "ios"}))
    assert files.seen == ["ios"]


async def test_apns_settings_are_checked_and_the_key_is_write_only(client, admin):
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    settings = (await client.get("/v1/workspace/settings", headers=admin)).json()
    settings["app_push"] = {"apns_private_key": pem}
    incomplete = await client.put("/v1/workspace/settings", json=settings, headers=admin)
    assert incomplete.status_code == 422
    assert incomplete.json()["code"] == "apns_incomplete"
    settings["app_push"] = {
        "apns_private_key": "nope",
        "apns_team_id": TEAM,
        "apns_key_id": KEY_ID,
        "apns_topic": TOPIC,
    }
    bad = await client.put("/v1/workspace/settings", json=settings, headers=admin)
    assert bad.json()["code"] == "invalid_apns_key"
    settings["app_push"] = {"apns_private_key": pem, "apns_team_id": TEAM, "apns_key_id": KEY_ID, "apns_topic": TOPIC}
    saved = await client.put("/v1/workspace/settings", json=settings, headers=admin)
    assert saved.status_code == 200, saved.text
    shown = saved.json()["app_push"]
    assert shown["apns_private_key_set"] is True
    assert shown["apns_topic"] == TOPIC
    assert "PRIVATE KEY" not in saved.text
    again = await client.put("/v1/workspace/settings", json=saved.json(), headers=admin)
    assert again.status_code == 200, "GET's answer goes back as is; the key is kept"
    assert again.json()["app_push"]["apns_private_key_set"] is True
