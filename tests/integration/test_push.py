"""App push installations, web push subscriptions, the VAPID key and the shipped JavaScript (§4, §5)."""

from __future__ import annotations

import asyncio
import base64
import shutil
import subprocess
import uuid

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from app.ledger.models import ConsentEvent
from app.lib.auth import Scope
from app.lib.db import Database
from tests.conftest import own_database

INSTALL = "/v1/push/app-installations/inst-001"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def browser_keys() -> dict[str, str]:
    point = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    return {"p256dh": b64(point), "auth": b64(b"0123456789abcdef")}


@pytest.fixture
async def app_setup(client, admin, ledger, tenant):
    await ledger.purpose("newsletter")
    await ledger.purpose("offers")
    notices = {}
    for purpose in ("newsletter", "offers"):
        response = await client.post(
            "/v1/notices",
            json={"purpose": purpose, "channels": ["app_push", "web_push"], "locale": "de", "text": f"Push: {purpose}"},
            headers=admin,
        )
        notices[purpose] = response.json()["notice_id"]
    return {"notices": notices, "key": await tenant.key(Scope.SIGNUP)}


def install(setup, permission="granted", purposes=("newsletter",), token="tok-1", **extra):  # noqa: S107
    return {
        "platform": "ios",
        "token": token,
        "permission": permission,
        "purposes": list(purposes),
        "notice_ids": [setup["notices"][p] for p in purposes],
        "app_version": "3.2.0",
        **extra,
    }


def states(body):
    return {c["purpose"]: c["state"] for c in body["consents"]}


async def events(session, tenant):
    return await session.scalar(
        select(func.count()).select_from(ConsentEvent).where(ConsentEvent.workspace_id == tenant.id)
    )


async def test_a_granted_permission_with_its_notice_opts_in(client, admin, app_setup, session, tenant):
    response = await client.put(INSTALL, json=install(app_setup), headers=app_setup["key"])
    assert response.status_code == 200, response.text
    body = response.json()
    assert states(body) == {"newsletter": "opted_in"}
    assert body["reachability"] == "reachable"
    [event] = (await client.get(f"/v1/contacts/{body['contact_id']}/events", headers=admin)).json()
    assert event["trigger"] == "permission_granted"
    assert event["notice_id"] == app_setup["notices"]["newsletter"]
    assert event["evidence"]["os_permission"] == "granted"
    assert event["evidence"]["platform"] == "ios"
    assert event["legal_basis"] == "consent"

    count = await events(session, tenant)
    again = await client.put(INSTALL, json=install(app_setup), headers=app_setup["key"])
    assert again.status_code == 200
    assert await events(session, tenant) == count, "the app reports at every start: no new events"


async def test_the_os_permission_alone_is_not_consent(client, app_setup, session, tenant):
    body = install(app_setup)
    body["notice_ids"] = []
    response = await client.put(INSTALL, json=body, headers=app_setup["key"])
    assert response.status_code == 422
    assert response.json()["code"] == "notice_required"
    assert await events(session, tenant) == 0


async def test_provisional_counts_as_permission_with_the_notice(client, app_setup):
    response = await client.put(INSTALL, json=install(app_setup, "provisional"), headers=app_setup["key"])
    assert states(response.json()) == {"newsletter": "opted_in"}


async def test_denied_then_revoked(client, admin, app_setup):
    denied = await client.put(INSTALL, json=install(app_setup, "denied"), headers=app_setup["key"])
    assert states(denied.json()) == {"newsletter": "declined"}
    granted = await client.put(
        INSTALL, json=install(app_setup, purposes=("newsletter", "offers")), headers=app_setup["key"]
    )
    assert states(granted.json()) == {"newsletter": "opted_in", "offers": "opted_in"}
    revoked = await client.put(INSTALL, json=install(app_setup, "denied", purposes=()), headers=app_setup["key"])
    assert states(revoked.json()) == {"newsletter": "opted_out", "offers": "opted_out"}
    triggers = [
        e["trigger"]
        for e in (await client.get(f"/v1/contacts/{revoked.json()['contact_id']}/events", headers=admin)).json()
    ]
    assert triggers.count("permission_revoked") == 2


async def test_a_purpose_no_longer_listed_is_withdrawn(client, app_setup):
    await client.put(INSTALL, json=install(app_setup, purposes=("newsletter", "offers")), headers=app_setup["key"])
    fewer = await client.put(INSTALL, json=install(app_setup, purposes=("offers",)), headers=app_setup["key"])
    assert states(fewer.json()) == {"newsletter": "opted_out", "offers": "opted_in"}


async def test_a_new_token_updates_the_address_and_makes_it_reachable(client, app_setup, session):
    from app.ledger.models import ContactPoint  # noqa: PLC0415

    first = (await client.put(INSTALL, json=install(app_setup), headers=app_setup["key"])).json()
    await client.put(INSTALL, json=install(app_setup, token="tok-2"), headers=app_setup["key"])
    details = await session.scalar(
        select(ContactPoint.details).where(ContactPoint.id == uuid.UUID(first["contact_point_id"]))
    )
    assert details["token"] == "tok-2"
    assert details["platform"] == "ios"


async def test_uninstall_ends_consent_and_reachability(client, tenant, app_setup):
    body = (await client.put(INSTALL, json=install(app_setup), headers=app_setup["key"])).json()
    assert (await client.delete(INSTALL, headers=app_setup["key"])).status_code == 204
    reader = await tenant.key(Scope.ELIGIBILITY_READ)
    decision = await client.get(
        "/v1/eligibility",
        params={"contact": body["contact_id"], "channel": "app_push", "purpose": "newsletter"},
        headers=reader,
    )
    assert decision.json()["eligible"] is False
    assert (await client.delete("/v1/push/app-installations/unknown-1", headers=app_setup["key"])).status_code == 404
    reinstalled = await client.put(INSTALL, json=install(app_setup, token="tok-9"), headers=app_setup["key"])
    assert states(reinstalled.json())["newsletter"] == "opted_in"
    assert reinstalled.json()["reachability"] == "reachable"


async def test_an_installation_belongs_to_one_contact(client, admin, app_setup, ledger):
    await ledger.point("email", "a@example.com", external_id="crm-a")
    await ledger.point("email", "b@example.com", external_id="crm-b")
    assert (
        await client.put(INSTALL, json=install(app_setup, contact="crm-a"), headers=app_setup["key"])
    ).status_code == 200
    other = await client.put(INSTALL, json=install(app_setup, contact="crm-b"), headers=app_setup["key"])
    assert other.status_code == 409
    assert other.json()["code"] == "push_point_of_another_contact"


async def test_bad_installation_ids_and_unknown_purposes(client, app_setup):
    bad = await client.put("/v1/push/app-installations/has%20space", json=install(app_setup), headers=app_setup["key"])
    assert bad.status_code == 422
    assert bad.json()["code"] == "invalid_installation_id"
    unknown = install(app_setup)
    unknown["purposes"] = ["nope"]
    assert (await client.put(INSTALL, json=unknown, headers=app_setup["key"])).status_code == 404


# --- web push ------------------------------------------------------------------------------------------------


async def test_the_vapid_public_key_is_a_p256_point_and_stays_the_same(client, tenant, admin):
    first = await client.get("/v1/push/web/vapid-public-key", params={"workspace": str(tenant.id)})
    assert first.status_code == 200
    assert first.headers["access-control-allow-origin"] == "*"
    key = first.json()["public_key"]
    raw = base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))
    assert len(raw) == 65
    assert raw[0] == 4
    ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)  # raises if not on the curve
    again = await client.get("/v1/push/web/vapid-public-key", params={"workspace": str(tenant.id)})
    assert again.json()["public_key"] == key
    settings = (await client.get("/v1/workspace/settings", headers=admin)).json()
    assert settings["web_push"]["vapid_public_key"] == key
    assert settings["web_push"]["vapid_private_key_set"] is True
    assert "private_key_sealed" not in str(settings)
    unknown = await client.get("/v1/push/web/vapid-public-key", params={"workspace": str(uuid.uuid4())})
    assert unknown.status_code == 404


async def test_the_private_key_is_sealed_at_rest_and_opens_for_sending(client, tenant, database, session):
    from app.lib import vapid  # noqa: PLC0415
    from app.lib.keys import Keys  # noqa: PLC0415
    from app.push import service  # noqa: PLC0415
    from app.workspaces.models import Workspace  # noqa: PLC0415
    from app.workspaces.settings import WorkspaceSettings  # noqa: PLC0415
    from tests.conftest import TEST_SECRET  # noqa: PLC0415

    public = (await client.get("/v1/push/web/vapid-public-key", params={"workspace": str(tenant.id)})).json()[
        "public_key"
    ]
    stored = await session.scalar(select(Workspace.settings).where(Workspace.id == tenant.id))
    settings = WorkspaceSettings.load(stored)
    private = service.private_key(Keys(TEST_SECRET), tenant.id, settings)
    assert private is not None
    assert private not in str(stored)
    assert vapid.public_of(vapid.load_private(private)) == public


async def test_a_supplied_vapid_key_is_used(client, admin, tenant):
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    settings = (await client.get("/v1/workspace/settings", headers=admin)).json()
    settings["web_push"] = {"subject": "mailto:push@acme.example", "vapid_private_key": pem}
    response = await client.put("/v1/workspace/settings", json=settings, headers=admin)
    assert response.status_code == 200, response.text
    expected = b64(
        private.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    assert response.json()["web_push"]["vapid_public_key"] == expected
    served = await client.get("/v1/push/web/vapid-public-key", params={"workspace": str(tenant.id)})
    assert served.json()["public_key"] == expected
    settings["web_push"] = {"vapid_private_key": "not-a-key"}
    bad = await client.put("/v1/workspace/settings", json=settings, headers=admin)
    assert bad.status_code == 422
    assert bad.json()["code"] == "invalid_vapid_key"


def subscription(**overrides):
    keys = browser_keys()
    sub = {"endpoint": "https://fcm.googleapis.com/fcm/send/abc123", "expirationTime": None, "keys": keys}
    sub.update(overrides)
    return sub


async def test_a_subscription_opts_in_and_unsubscribing_ends_it(client, admin, tenant, app_setup):
    body = {"subscription": subscription(), "purposes": ["offers"], "notice_id": app_setup["notices"]["offers"]}
    created = await client.post("/v1/push/web-subscriptions", json=body, headers=app_setup["key"])
    assert created.status_code == 201, created.text
    assert states(created.json()) == {"offers": "opted_in"}
    reader = await tenant.key(Scope.ELIGIBILITY_READ)
    params = {"contact": created.json()["contact_id"], "channel": "web_push", "purpose": "offers"}
    assert (await client.get("/v1/eligibility", params=params, headers=reader)).json()["eligible"] is True

    gone = await client.request(
        "DELETE",
        "/v1/push/web-subscriptions",
        json={"endpoint": body["subscription"]["endpoint"]},
        headers=app_setup["key"],
    )
    assert gone.status_code == 204
    decision = (await client.get("/v1/eligibility", params=params, headers=reader)).json()
    assert decision["eligible"] is False
    missing = await client.request(
        "DELETE",
        "/v1/push/web-subscriptions",
        json={"endpoint": "https://push.example/unknown"},
        headers=app_setup["key"],
    )
    assert missing.status_code == 404


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"endpoint": "http://push.example/x"}, "invalid_push_endpoint"),
        ({"endpoint": "https://push.example/has space"}, "invalid_push_endpoint"),
        ({"keys": {"p256dh": b64(b"\x04" + b"\x01" * 64), "auth": b64(b"0123456789abcdef")}}, "invalid_p256dh"),
        ({"keys": {"p256dh": "***", "auth": b64(b"0123456789abcdef")}}, "invalid_p256dh"),
        ({"keys": {"p256dh": browser_keys()["p256dh"], "auth": b64(b"short")}}, "invalid_auth_secret"),
    ],
)
async def test_malformed_subscriptions_are_refused_with_a_code(client, app_setup, session, tenant, change, code):
    body = {"subscription": subscription(**change), "purposes": ["offers"], "notice_id": app_setup["notices"]["offers"]}
    response = await client.post("/v1/push/web-subscriptions", json=body, headers=app_setup["key"])
    assert response.status_code == 422
    assert response.json()["code"] == code
    assert await events(session, tenant) == 0


async def test_push_reports_need_a_writing_scope(client, tenant, app_setup):
    reader = await tenant.key(Scope.ELIGIBILITY_READ)
    assert (await client.put(INSTALL, json=install(app_setup), headers=reader)).status_code == 403
    assert (await client.put(INSTALL, json=install(app_setup))).status_code == 401


# --- the shipped JavaScript ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["consent-web-push.js", "consent-sw.js"])
async def test_the_javascript_is_served_as_javascript(client, name):
    response = await client.get(f"/static/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] in {"text/javascript", "application/javascript"}
    assert "use strict" in response.text


@pytest.mark.skipif(shutil.which("node") is None, reason="node is needed to parse the JavaScript")
@pytest.mark.parametrize("name", ["consent-web-push.js", "consent-sw.js"])
def test_the_javascript_parses(project_root, name):
    result = subprocess.run(
        ["node", "--check", str(project_root / "app" / "static" / name)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_the_button_script_subscribes_with_the_vapid_key_and_posts_the_subscription(project_root):
    script = (project_root / "app" / "static" / "consent-web-push.js").read_text()
    assert "Notification.requestPermission()" in script
    assert "pushManager.subscribe" in script
    assert "userVisibleOnly: true" in script
    assert "applicationServerKey" in script
    assert "subscription.toJSON()" in script


class TestAPushUnsubscribeRacingARealMerge:
    """On a database of the class's own, where the merge really commits in another transaction."""

    @pytest.fixture
    async def own_engine(self, pg_server):
        async with own_database(pg_server) as own:
            yield own

    @pytest.fixture
    def database(self, own_engine):
        return Database(own_engine, async_sessionmaker(own_engine, expire_on_commit=False))

    @pytest.mark.parametrize("channel", ["web_push", "app_push"])
    async def test_a_push_unsubscribe_raced_by_a_merge_is_taken_again(
        self, client, admin, ledger, database, app_setup, monkeypatch, channel
    ):
        """The subscription's contact is merged into another while the unsubscribe runs: it deadlocked with the merge
        (500) or met the committed merge's CM001 (409), nothing recorded. Taken again, as the one-click unsubscribe
        is: 204, the permission ends on the address, now under the survivor."""
        from app.domain.model import ActorType  # noqa: PLC0415
        from app.ledger import merge as merging  # noqa: PLC0415
        from app.ledger.service import Actor  # noqa: PLC0415
        from app.push import service  # noqa: PLC0415

        body = {"subscription": subscription(), "purposes": ["offers"], "notice_id": app_setup["notices"]["offers"]}
        if channel == "web_push":
            created = await client.post("/v1/push/web-subscriptions", json=body, headers=app_setup["key"])
        else:  # the app's uninstall (DELETE /v1/push/app-installations/{id}) has the same window
            created = await client.put(INSTALL, json=install(app_setup, purposes=("offers",)), headers=app_setup["key"])
        assert created.status_code in (200, 201), created.text
        survivor = await ledger.point("email", "other@example.com", external_id="crm-2")
        real_withdraw, real_move = service.withdraw_point, merging.repository.move_contact_references
        calls: list[uuid.UUID] = []
        merges: list[asyncio.Task[None]] = []

        async def merge(workspace_id, duplicate):
            async with database.sessionmaker() as db, db.begin():
                await merging.merge(
                    db,
                    workspace_id,
                    survivor_ref=str(survivor.contact_id),
                    duplicate_ref=str(duplicate),
                    evidence={},
                    actor=Actor(ActorType.SYSTEM),
                )

        async def merged_first(session, workspace_id, point, **kwargs):
            calls.append(point.contact_id)
            if len(calls) == 1:
                merges.append(asyncio.create_task(merge(workspace_id, point.contact_id)))
                await asyncio.sleep(0.1)  # the merge has locked the contact
            return await real_withdraw(session, workspace_id, point, **kwargs)

        async def slow_move(*args, **kwargs):
            await asyncio.sleep(0.4)  # the merge reads both histories before it moves the addresses
            return await real_move(*args, **kwargs)

        monkeypatch.setattr(service, "withdraw_point", merged_first)
        monkeypatch.setattr(merging.repository, "move_contact_references", slow_move)
        if channel == "web_push":
            gone = await client.request(
                "DELETE",
                "/v1/push/web-subscriptions",
                json={"endpoint": body["subscription"]["endpoint"]},
                headers=app_setup["key"],
            )
        else:
            gone = await client.delete(INSTALL, headers=app_setup["key"])
        await merges[0]
        assert gone.status_code == 204, gone.text
        assert len(calls) > 1, "the race happened"
        assert calls[-1] == survivor.contact_id, "the last try found the endpoint under the survivor"
        contact = (await client.get(f"/v1/contacts/{survivor.contact_id}", headers=admin)).json()
        [web] = [p for p in contact["contact_points"] if p["channel"] == channel]
        assert web["reachability"] == "expired"
        assert {c["purpose"]: c["state"] for c in web["consents"]}["offers"] != "opted_in"
