"""The console (issue 18 item 4): login links, sessions, CSRF, CSV downloads, contact lookup, erasure, audit."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, quote, urlsplit

import asyncpg
import httpx
import pytest
from sqlalchemy import select, text, update
from sqlalchemy.engine import make_url

from app.console.models import ConsoleLink, ConsoleSession
from app.console.render import DASH
from app.domain.model import Trigger
from app.ledger.models import Contact
from app.lib.auth import Scope
from app.reports import service as reports
from tests.conftest import consent_cli

BASE = "https://consent.example.com"
SAME_ORIGIN = {"Origin": BASE, "Sec-Fetch-Site": "same-origin"}


@pytest.fixture
async def jane(ledger, client, admin):
    """Jane (external id ``crm-7``): newsletter by email (double opt-in), newsletter by SMS, then STOP by SMS."""
    newsletter = await ledger.purpose("newsletter")
    email = await ledger.point("email", "jane.doe@example.com", external_id="crm-7")
    sms = await ledger.point("sms", "+4915112345678", contact_id=email.contact_id)
    await ledger.apply(email, newsletter.id, "signup", "confirm")
    await ledger.apply(sms, newsletter.id, "start_word", "stop_word")
    return {"contact_id": email.contact_id, "email": email, "sms": sms, "newsletter": newsletter}


async def new_link(client, headers) -> str:
    answer = await client.post("/v1/console-links", headers=headers)
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["url"].startswith(f"{BASE}/console/login?token=")
    return parse_qs(urlsplit(body["url"]).query)["token"][0]


async def sign_in(client, headers) -> httpx.Response:
    """Open a link and press its button; the client keeps the cookie."""
    token = await new_link(client, headers)
    page = await client.get("/console/login", params={"token": token})
    assert page.status_code == 200
    assert f'value="{token}"' in page.text
    return await client.post("/console/login", data={"token": token}, headers=SAME_ORIGIN)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([A-Za-z0-9_-]+)"', html)
    assert found is not None, html[:500]
    return found.group(1)


async def test_a_link_needs_audit_read_or_admin_and_only_its_hash_is_stored(client, tenant, session):
    sender = await tenant.key(Scope.MESSAGES_SEND)
    assert (await client.post("/v1/console-links", headers=sender)).status_code == 403
    assert (await client.post("/v1/console-links")).status_code == 401
    token = await new_link(client, await tenant.key(Scope.AUDIT_READ))
    assert len(token) >= 43  # 256 bits, base64url
    stored = (await session.scalars(select(ConsoleLink))).all()
    assert [row.token_hash for row in stored] == [hashlib.sha256(token.encode()).digest()]
    answer = await client.post("/v1/console-links", headers=await tenant.key(Scope.ADMIN))
    expires = answer.json()["expires_at"]
    assert expires is not None


async def test_opening_a_link_changes_nothing_and_its_button_signs_in_once(client, admin, session):
    token = await new_link(client, admin)
    for _ in range(3):  # a mail scanner fetching the link does not use it up
        assert (await client.get("/console/login", params={"token": token})).status_code == 200
    assert (await session.scalar(select(ConsoleLink.used_at))) is None
    signed_in = await client.post("/console/login", data={"token": token}, headers=SAME_ORIGIN)
    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == "/console"
    cookie = signed_in.headers["set-cookie"]
    assert "consent_console=" in cookie
    assert "HttpOnly" in cookie
    assert "Secure" in cookie
    assert "SameSite=Strict" in cookie or "samesite=strict" in cookie.lower()
    assert "Path=/console" in cookie
    secret = signed_in.cookies["consent_console"]
    row = await session.scalar(select(ConsoleSession))
    assert row is not None
    assert row.id_hash == hashlib.sha256(secret.encode()).digest()
    assert (await client.get("/console")).status_code == 200
    # the same link again: refused, from another browser too
    fresh = httpx.AsyncClient(transport=client._transport, base_url=BASE)
    async with fresh:
        again = await fresh.post("/console/login", data={"token": token}, headers=SAME_ORIGIN)
        assert again.status_code == 403
        assert "consent_console" not in again.cookies
        assert (await fresh.get("/console/login", params={"token": token})).status_code == 410
        assert (await fresh.get("/console")).status_code == 401


async def test_an_expired_link_signs_nobody_in(client, admin, session):
    token = await new_link(client, admin)
    await session.execute(update(ConsoleLink).values(expires_at=ConsoleLink.expires_at - timedelta(minutes=11)))
    assert (await client.get("/console/login", params={"token": token})).status_code == 410
    refused = await client.post("/console/login", data={"token": token}, headers=SAME_ORIGIN)
    assert refused.status_code == 403
    assert (await client.get("/console")).status_code == 401
    assert (await client.get("/console/login", params={"token": "x" * 43})).status_code == 404


async def test_a_login_posted_from_another_site_is_refused(client, admin, session):
    token = await new_link(client, admin)
    refused = await client.post(
        "/console/login",
        data={"token": token},
        headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
    )
    assert refused.status_code == 403
    assert (await session.scalar(select(ConsoleLink.used_at))) is None  # not used up by the refused attempt


async def test_a_session_idle_too_long_is_over(client, admin, session):
    await sign_in(client, admin)
    assert (await client.get("/console")).status_code == 200
    await session.execute(update(ConsoleSession).values(last_seen_at=ConsoleSession.last_seen_at - timedelta(hours=9)))
    over = await client.get("/console")
    assert over.status_code == 401
    assert "sign" in over.text.lower() or "anmelden" in over.text.lower()


async def test_a_session_ends_after_its_lifetime_even_in_use(client, admin, session):
    await sign_in(client, admin)
    assert (await client.get("/console")).status_code == 200
    await session.execute(update(ConsoleSession).values(expires_at=ConsoleSession.created_at))
    assert (await client.get("/console")).status_code == 401


async def test_revoking_the_key_ends_the_session(client, tenant, admin):
    reader = await tenant.key(Scope.AUDIT_READ)
    await sign_in(client, reader)
    assert (await client.get("/console/contacts")).status_code == 200
    keys = (await client.get("/v1/api-keys", headers=admin)).json()
    listed = keys["api_keys"] if isinstance(keys, dict) else keys
    reader_id = next(k["id"] for k in listed if k["id"] and "audit:read" in k["scopes"] and "admin" not in k["scopes"])
    assert (await client.delete(f"/v1/api-keys/{reader_id}", headers=admin)).status_code in (200, 204)
    for path in ("/console", "/console/contacts", "/console/audit", "/console/reports/consents.csv"):
        assert (await client.get(path)).status_code == 401, path


async def test_without_a_session_nothing_is_shown(client, jane):
    for path in (
        "/console",
        f"/console/contacts?q={jane['contact_id']}",
        f"/console/contacts/{jane['contact_id']}/export",
        "/console/audit",
        "/console/audit/events",
        "/console/reports/consents.csv",
    ):
        answer = await client.get(path)
        assert answer.status_code == 401, path
        assert "jane" not in answer.text
    client.cookies.set("consent_console", "forged-value", domain="consent.example.com", path="/console")
    assert (await client.get("/console")).status_code == 401


async def test_another_workspace_sees_nothing_of_this_one(client, jane, other_tenant):
    await sign_in(client, await other_tenant.key(Scope.ADMIN))
    for q in (str(jane["contact_id"]), "crm-7", "jane.doe@example.com", "+4915112345678"):
        answer = await client.get("/console/contacts", params={"q": q})
        assert answer.status_code == 404, q
        assert "j***@example.com" not in answer.text
    assert (await client.get(f"/console/contacts/{jane['contact_id']}/export")).status_code == 404
    rows = list(csv.DictReader(io.StringIO((await client.get("/console/reports/consents.csv")).text)))
    assert sum(int(r["opt_ins"]) for r in rows) == 0
    assert "Opt" in (await client.get("/console?lang=en")).text


@pytest.mark.parametrize(
    "query", ["contact_id", "crm-7", " Jane.Doe@EXAMPLE.com ", "+49 151 12345678", "0151 12345678"]
)
async def test_a_contact_is_found_by_each_identifier(client, admin, jane, query):
    await sign_in(client, admin)
    q = str(jane["contact_id"]) if query == "contact_id" else query
    page = await client.get("/console/contacts", params={"q": q, "lang": "en"})
    assert page.status_code == 200, page.text[:300]
    assert str(jane["contact_id"]) in page.text
    assert "j***@example.com" in page.text  # masked
    assert "jane.doe@example.com" not in page.text
    assert "+49151******78" in page.text
    assert "STOP word" in page.text  # the timeline
    assert "198.51.100.4" in page.text  # with its evidence
    assert "opted_in" in page.text
    assert "opted_out" in page.text


async def test_an_unknown_or_malformed_query_finds_nothing(client, admin, jane):
    await sign_in(client, admin)
    for q in ("nobody@example.com", "not an address", "+1", "x" * 400):
        answer = await client.get("/console/contacts", params={"q": q})
        assert answer.status_code == 404, q


async def test_the_art_15_export_downloads_as_the_api_answers_it(client, admin, jane):
    await sign_in(client, admin)
    answer = await client.get(f"/console/contacts/{jane['contact_id']}/export")
    assert answer.status_code == 200
    assert "attachment" in answer.headers["content-disposition"]
    exported = json.loads(answer.content)
    api = (await client.get(f"/v1/contacts/{jane['contact_id']}/export", headers=admin)).json()
    assert exported["events"] == api["events"]
    assert exported["contact"] == api["contact"]


async def test_the_overview_shows_the_eligible_audience_of_the_last_snapshot(client, tenant, jane, database):
    reader = await tenant.key(Scope.AUDIT_READ)
    await sign_in(client, reader)

    def eligible_row(page: str) -> list[str]:
        row = re.search(r"<tr><th scope=\"row\">Eligible \([^<]*</th>(.*?)</tr>", page)
        assert row is not None
        return re.findall(r"<td>([^<]*)</td>", row.group(1))

    before = eligible_row((await client.get("/console", params={"lang": "en"})).text)
    assert set(before) == {"\N{EN DASH}"}, "no snapshot yet: no figure, not zero"
    async with database.sessionmaker() as session, session.begin():
        await reports.take_standing(session, tenant.id, push_services=None)
    after = eligible_row((await client.get("/console", params={"lang": "en"})).text)
    # email, SMS, WhatsApp, app push, web push, print: Jane's email is eligible, her SMS sent STOP
    assert after == ["1", "0", "0", "0", "0", "0"]


AUDIENCE = re.escape("Opted-in audience (end of period)")


async def test_the_overview_narrows_to_one_purpose_or_campaign(client, tenant, jane, ledger):
    offers = await ledger.purpose("offers")
    max_ = await ledger.point("email", "max@example.com", external_id="max")
    await ledger.apply(max_, offers.id, "signup", "confirm")
    await sign_in(client, await tenant.key(Scope.AUDIT_READ))

    def row(page: str, label: str) -> list[str]:
        found = re.search(rf"<tr><th scope=\"row\">{label}</th>(.*?)</tr>", page)
        assert found is not None, label
        return re.findall(r"<td>([^<]*)</td>", found.group(1))[:2]  # email, SMS

    everything = (await client.get("/console", params={"lang": "en"})).text
    assert row(everything, "Opt-ins") == ["2", "1"]
    only_offers = await client.get("/console", params={"lang": "en", "purpose": "offers"})
    assert only_offers.status_code == 200
    assert (row(only_offers.text, "Opt-ins"), row(only_offers.text, "Opt-outs")) == (["1", "0"], ["0", "0"])
    assert '<option value="offers" selected>' in only_offers.text
    assert "purpose=offers" in only_offers.text  # the CSV downloads keep the filter
    newsletter = (await client.get("/console", params={"lang": "en", "purpose": "newsletter"})).text
    assert (row(newsletter, "Opt-ins"), row(newsletter, "Opt-outs")) == (["1", "1"], ["0", "1"])

    unknown = await client.get("/console", params={"lang": "en", "purpose": "nope"})
    assert unknown.status_code == 422
    assert re.search(r'role="alert">No purpose [^<]*nope', unknown.text)
    assert row(unknown.text, "Opt-ins") == ["2", "1"], "everything is shown instead"

    spring = await client.get("/console", params={"lang": "en", "campaign": "spring"})
    assert spring.status_code == 200
    assert 'value="spring"' in spring.text
    assert "campaign=spring" in spring.text
    assert row(spring.text, "Opt-ins") == ["0", "0"], "no opt-in belongs to a campaign"
    # the audience is not kept per campaign: unknown, not 0 (newcomer review); without the filter it is counted
    assert row(spring.text, AUDIENCE) == [DASH, DASH]
    assert row(everything, AUDIENCE) == ["2", "0"]

    today = datetime.now(UTC).date()
    csv_rows = await client.get(
        "/console/reports/consents.csv",
        params={"from": str(today - timedelta(days=2)), "to": str(today), "group_by": "channel,purpose",
                "purpose": "offers"},
    )  # fmt: skip
    assert csv_rows.status_code == 200
    assert {r["purpose"] for r in csv.DictReader(io.StringIO(csv_rows.text))} == {"offers"}


async def test_the_overview_shows_the_channels_and_its_csv_is_the_reports_csv(client, tenant, jane):
    reader = await tenant.key(Scope.AUDIT_READ)
    await sign_in(client, reader)
    page = await client.get("/console", params={"lang": "en"})
    assert page.status_code == 200
    for name in ("Email", "SMS", "WhatsApp", "App push", "Web push", "Print", "STOP word", "DOI confirmation rate"):
        assert name in page.text, name
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "default-src 'none'" in csp
    assert "unsafe-inline" not in csp
    assert "/static/vendor/chart.js/dist/chart.umd.min.js" in page.text
    german = await client.get("/console", params={"lang": "de"})
    assert "Abmeldungen nach Ursache" in german.text
    assert "Abmeldungen nach Ursache" in (await client.get("/console")).text  # the choice is remembered

    today = datetime.now(UTC).date()
    period = {"from": str(today - timedelta(days=2)), "to": str(today)}
    downloaded = await client.get("/console/reports/consents.csv", params={**period, "group_by": "channel,trigger"})
    assert downloaded.status_code == 200
    assert downloaded.headers["content-type"] == "text/csv; charset=utf-8"
    assert "attachment" in downloaded.headers["content-disposition"]
    bounds = {"from": f"{period['from']}T00:00:00Z", "to": f"{today + timedelta(days=1)}T00:00:00Z"}
    api = await client.get(
        "/v1/reports/consents",
        params={**bounds, "group_by": "channel,trigger"},
        headers={**reader, "Accept": "text/csv"},
    )
    rows = list(csv.DictReader(io.StringIO(downloaded.text)))
    stops = [r for r in rows if r["channel"] == "sms" and r["trigger"] == "stop_word"]
    assert sum(int(r["opt_outs"]) for r in stops) == 1
    assert rows == list(csv.DictReader(io.StringIO(api.text)))
    messages = await client.get("/console/reports/messages.csv")
    assert messages.status_code == 200
    assert messages.text.startswith("bucket,channel,accepted,sent")
    assert (await client.get("/console/reports/secrets.csv")).status_code == 404
    assert (await client.get("/console", params={"from": "2026-13-01"})).status_code == 422
    assert (await client.get("/console/reports/consents.csv", params={"group_by": "x"})).status_code == 422


async def test_state_changing_forms_need_the_sessions_token_and_our_origin(client, admin, jane, session):
    await sign_in(client, admin)
    page = await client.get(f"/console/contacts/{jane['contact_id']}/erase")
    assert page.status_code == 200
    token = csrf_of(page.text)
    url = f"/console/contacts/{jane['contact_id']}/erase"
    for data, headers in (
        ({"confirm": "yes"}, SAME_ORIGIN),  # no token
        ({"confirm": "yes", "csrf": "forged"}, SAME_ORIGIN),
        ({"confirm": "yes", "csrf": token}, {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}),
    ):
        refused = await client.post(url, data=data, headers=headers)
        assert refused.status_code == 403
    assert (await session.get(Contact, jane["contact_id"])) is not None
    assert (await client.post("/console/audit/verify", data={}, headers=SAME_ORIGIN)).status_code == 403
    unconfirmed = await client.post(url, data={"csrf": token}, headers=SAME_ORIGIN)
    assert unconfirmed.status_code == 422
    erased = await client.post(url, data={"csrf": token, "confirm": "yes", "request_ref": "T-1"}, headers=SAME_ORIGIN)
    assert erased.status_code == 200, erased.text[:300]
    session.expunge_all()
    assert (await session.get(Contact, jane["contact_id"])) is None


async def test_a_token_of_another_session_is_refused(client, admin, tenant, jane):
    await sign_in(client, admin)
    other = httpx.AsyncClient(transport=client._transport, base_url=BASE)
    async with other:
        await sign_in(other, await tenant.key(Scope.ADMIN))
        foreign = csrf_of((await other.get("/console/audit")).text)
    url = f"/console/contacts/{jane['contact_id']}/erase"
    refused = await client.post(url, data={"csrf": foreign, "confirm": "yes"}, headers=SAME_ORIGIN)
    assert refused.status_code == 403


async def test_a_key_without_admin_cannot_erase(client, tenant, jane, session):
    await sign_in(client, await tenant.key(Scope.AUDIT_READ))
    page = await client.get(f"/console/contacts?q={jane['contact_id']}")
    assert "/erase" not in page.text
    assert (await client.get(f"/console/contacts/{jane['contact_id']}/erase")).status_code == 403
    token = csrf_of((await client.get("/console/audit")).text)
    url = f"/console/contacts/{jane['contact_id']}/erase"
    refused = await client.post(url, data={"csrf": token, "confirm": "yes"}, headers=SAME_ORIGIN)
    assert refused.status_code == 403
    assert (await session.get(Contact, jane["contact_id"])) is not None


async def test_the_audit_page_verifies_the_chain_and_streams_the_period(client, admin, jane):
    await sign_in(client, admin)
    page = await client.get("/console/audit", params={"lang": "en"})
    assert "not been verified" in page.text
    checked = await client.post("/console/audit/verify", data={"csrf": csrf_of(page.text)}, headers=SAME_ORIGIN)
    assert checked.status_code == 303
    page = await client.get("/console/audit")
    assert "all 4 events hold" in page.text
    assert "Last check:" in page.text
    stream = await client.get("/console/audit/events", params={"format": "csv"})
    assert stream.status_code == 200
    assert "attachment" in stream.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(stream.text)))
    assert [r["trigger"] for r in rows] == ["signup", "confirm", "start_word", "stop_word"]
    ndjson = await client.get("/console/audit/events", params={"format": "ndjson"})
    assert len(ndjson.text.strip().splitlines()) == 4
    assert (await client.get("/console/audit/events", params={"from": "yesterday"})).status_code == 422


async def test_signing_out_ends_the_session(client, admin):
    await sign_in(client, admin)
    token = csrf_of((await client.get("/console")).text)
    out = await client.post("/console/logout", data={"csrf": token}, headers=SAME_ORIGIN)
    assert out.status_code == 200
    assert (await client.get("/console")).status_code == 401


async def test_the_console_link_command_makes_a_link_through_a_key_of_its_own(pg_server):
    url = await pg_server.create_database("consent_cli_console", migrated=True)
    run = consent_cli(url)
    try:
        assert run("migrate").returncode == 0
        workspace = json.loads(run("workspace", "create", "Acme", "--json").stdout.strip().splitlines()[-1])
        made = run("console-link", "--workspace", workspace["id"], "--json")
        assert made.returncode == 0, made.stderr
        answer = json.loads(made.stdout.strip().splitlines()[-1])
        token = parse_qs(urlsplit(answer["url"]).query)["token"][0]
        assert urlsplit(answer["url"]).path == "/console/login"
        assert token not in made.stderr, "the token must never reach the logs"
        conn = await asyncpg.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False))
        try:
            link = await conn.fetchrow("SELECT token_hash, api_key_id, used_at FROM console_links")
            key = await conn.fetchrow("SELECT id, name, scopes FROM api_keys")
        finally:
            await conn.close()
        assert bytes(link["token_hash"]) == hashlib.sha256(token.encode()).digest()
        assert link["used_at"] is None
        assert (str(key["id"]), key["name"], key["scopes"]) == (answer["api_key_id"], "console-link", ["audit:read"])
        admin = run("console-link", "--workspace", workspace["id"], "--admin")
        assert admin.returncode == 0
        assert "api_key_id:" in admin.stdout
        missing = run("console-link", "--workspace", "0193a7e0-0000-7000-8000-000000000000")
        assert missing.returncode != 0
        assert "No workspace" in missing.stderr
    finally:
        await pg_server.drop_database(url)


async def test_wrong_input_gets_a_page_never_a_server_error(client, admin, jane):
    await sign_in(client, admin)
    for path, params in (
        ("/console", {"from": "9999-12-31", "to": "9999-12-31"}),
        ("/console", {"from": "0001-01-01", "to": "0001-01-02"}),
        ("/console", {"from": "2026-12-04", "to": "2026-01-01"}),
        ("/console", {"from": "2020-01-01", "to": "2026-01-01"}),
        ("/console/reports/consents.csv", {"to": "9999-12-31"}),
        ("/console/reports/messages.csv", {"group_by": "trigger"}),
        ("/console/audit/events", {"from": "9999-12-31", "to": "9999-12-31"}),
    ):
        answer = await client.get(path, params=params)
        assert answer.status_code == 422, (path, params, answer.status_code)
        assert "text/html" in answer.headers["content-type"]
    for ref in ("\x00", "%", "a" * 400, "../../etc/passwd", "' OR 1=1 --"):
        answer = await client.get("/console/contacts", params={"q": ref})
        assert answer.status_code == (422 if ref == "\x00" else 404), ref  # NUL: refused before any handler
        exported = await client.get(f"/console/contacts/{quote(ref, safe='')}/export")
        assert exported.status_code in (404, 422), ref


def test_vendored_chart_js_is_the_version_in_package_lock(project_root):
    vendored = project_root / "app" / "static" / "vendor" / "chart.js"
    manifest = json.loads((vendored / "VENDORED.json").read_text())
    lock = json.loads((project_root / "package-lock.json").read_text())["packages"]["node_modules/chart.js"]
    assert (manifest["package"], manifest["version"], manifest["integrity"]) == (
        "chart.js",
        lock["version"],
        lock["integrity"],
    )
    assert json.loads((project_root / "package.json").read_text())["devDependencies"]["chart.js"] == lock["version"]
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((vendored / name).read_bytes()).hexdigest() == digest, name
    assert set(manifest["files"]) == {"dist/chart.umd.min.js", "LICENSE.md"}
    installed = project_root / "node_modules" / "chart.js"
    if installed.is_dir():  # npm ci: the committed copy is the package's own file
        for name in manifest["files"]:
            assert (vendored / name).read_bytes() == (installed / name).read_bytes(), name


async def test_the_vendored_chart_library_is_served_to_the_console(client):
    answer = await client.get("/static/vendor/chart.js/dist/chart.umd.min.js")
    assert answer.status_code == 200
    assert "Chart.js v4" in answer.text[:200]
    assert (await client.get("/console/assets/console.js")).status_code == 200
    assert (await client.get("/console/assets/console.css")).status_code == 200


async def test_the_audit_page_lists_pending_erasure_requests_of_this_workspace_only(
    client, admin, jane, tenant, other_tenant, session
):
    for workspace_id, contact_id in ((tenant.id, jane["contact_id"]), (other_tenant.id, uuid.uuid4())):
        await session.execute(
            text(
                "INSERT INTO erasure_requests (id, workspace_id, contact_id, requested_at, due_at, source, status)"
                " VALUES (gen_random_uuid(), :ws, :c, now() - interval '40 days', now() - interval '9 days',"
                " 'preference_centre', 'pending')"
            ),
            {"ws": workspace_id, "c": contact_id},
        )
    await session.commit()
    await sign_in(client, admin)
    page = (await client.get("/console/audit")).text
    assert "Pending erasure requests" in page
    assert str(jane["contact_id"]) in page
    assert "overdue" in page
    assert page.count("/console/contacts?q=") == 1, "another workspace's request is not shown"


async def test_a_login_link_is_never_kept_for_an_idempotency_replay(client, tenant, admin, session):
    """Hostile review: a replay by another key of the workspace handed out the admin's link (and a session)."""
    first = await client.post("/v1/console-links", headers={**admin, "Idempotency-Key": "console-link-1"})
    assert first.status_code == 201
    reader = await tenant.key(Scope.AUDIT_READ)
    again = await client.post("/v1/console-links", headers={**reader, "Idempotency-Key": "console-link-1"})
    assert (again.status_code, again.json()["code"]) == (409, "idempotency_answer_not_kept")
    token = first.json()["url"].rsplit("token=", 1)[1]
    stored = (await session.execute(text("SELECT body FROM idempotency_keys"))).scalars().all()
    assert all(token.encode() not in (body or b"") for body in stored)


async def test_a_merged_contact_is_shown_as_its_survivor(client, admin, jane, ledger):
    """Hostile review: the console answered a raw 409 for a merged duplicate's id."""
    duplicate = await ledger.point("email", "jane.old@example.com", external_id="crm-old")
    merged = await client.post("/v1/contacts/crm-7/merge", json={"duplicate": "crm-old"}, headers=admin)
    assert merged.status_code == 200, merged.text
    await sign_in(client, admin)
    for ref in (str(duplicate.contact_id), "crm-old"):
        page = await client.get("/console/contacts", params={"q": ref})
        assert page.status_code == 200
        assert str(jane["contact_id"]) in page.text
    export = await client.get(f"/console/contacts/{duplicate.contact_id}/export")
    assert export.status_code == 200
    assert export.json()["contact"]["id"] == str(jane["contact_id"])
    erase_page = await client.get(f"/console/contacts/{duplicate.contact_id}/erase")
    assert erase_page.status_code == 200
    assert f"/console/contacts/{jane['contact_id']}/erase" in erase_page.text


async def test_a_channel_whose_provider_reports_no_delivery_has_no_delivery_rate(tenant, database):
    """Email, push and print never hear of a delivery: their rate is unknown (a dash), not 0 % (newcomer review);
    SMS and WhatsApp (Twilio's status callbacks) have one."""
    from app.console import service as console  # noqa: PLC0415

    today = datetime.now(UTC).date()
    async with database.sessionmaker() as session, session.begin():
        shown = await console.overview(session, tenant.id, console.Period(today - timedelta(days=7), today))
    reporting = {channel for channel, figures in shown.channels.items() if figures.reports_delivery}
    assert reporting == {"sms", "whatsapp"}
    email = shown.channels["email"]
    email.sent, email.delivered = 10, 0
    assert email.delivery_rate is None
    sms = shown.channels["sms"]
    sms.sent, sms.delivered = 10, 4
    assert sms.delivery_rate == 0.4


async def test_opt_outs_by_cause_count_under_the_link_only_what_came_through_a_mails_link(
    client, tenant, ledger, database
):
    """The unsubscribe trigger is also what ``POST /v1/withdrawals`` and the preference centre record: those are
    causes of their own, told apart by the evidence (the link's method) and the actor; a rebuild counts the same."""
    from app.console import service as console  # noqa: PLC0415
    from app.emails.service import SUBJECT  # noqa: PLC0415
    from app.ledger.service import Change, apply_changes  # noqa: PLC0415
    from app.preferences.service import PERSON, SOURCE  # noqa: PLC0415

    newsletter = await ledger.purpose("newsletter")
    points = {}
    for way in ("api", "page", "one_click", "preference_centre"):
        points[way] = await ledger.point("email", f"{way}@example.com", external_id=f"by-{way}")
        await ledger.apply(points[way], newsletter.id, "signup", "confirm")
    withdrawn = await client.post(
        "/v1/withdrawals",
        json={"contact": "by-api", "channel": "email", "purpose": "newsletter", "evidence": {"form_id": "footer"}},
        headers=await tenant.key(Scope.CONSENTS_WRITE),
    )
    assert withdrawn.status_code == 200, withdrawn.text
    by_subject = [  # as the email unsubscribe path and the preference centre record them
        (points["page"], SUBJECT, {"ip": "198.51.100.4", "method": "unsubscribe_page", "scope": "purpose"}),
        (points["one_click"], SUBJECT, {"ip": "198.51.100.4", "method": "rfc8058_one_click"}),
        (points["preference_centre"], PERSON, {"ip": "198.51.100.4", "source": SOURCE, "method": "withdraw"}),
    ]
    for point, actor, evidence in by_subject:
        async with database.sessionmaker() as session, session.begin():
            change = Change(point, newsletter.id, Trigger.UNSUBSCRIBE, evidence)
            await apply_changes(session, tenant.id, [change], actor)

    today = datetime.now(UTC).date()
    period = console.Period(today - timedelta(days=1), today)
    expected = {"unsubscribe": 2, "unsubscribe_api": 1, "unsubscribe_preference_centre": 1}
    async with database.sessionmaker() as session, session.begin():
        shown = await console.overview(session, tenant.id, period)
    assert shown.channels["email"].opt_outs_by_trigger == expected
    assert shown.channels["email"].opt_outs == 4
    async with database.sessionmaker() as session, session.begin():
        await reports.rebuild(session, tenant.id)
    async with database.sessionmaker() as session, session.begin():
        assert (await console.overview(session, tenant.id, period)).channels["email"].opt_outs_by_trigger == expected

    await sign_in(client, await tenant.key(Scope.AUDIT_READ))
    page = await client.get("/console", params={"lang": "en"})
    for name in ("Unsubscribe link", "Withdrawn through the API", "Preference centre"):
        assert name in page.text, name
    assert "way not recorded" not in page.text

    # a contact's timeline names each unsubscribe by the way it came, as the overview counts it
    named = {
        "by-api": "Withdrawn through the API",
        "by-page": "Unsubscribe link",
        "by-one_click": "One-click unsubscribe in the mail program",
        "by-preference_centre": "Preference centre",
    }
    for external_id, name in named.items():
        timeline = await client.get("/console/contacts", params={"q": external_id, "lang": "en"})
        assert timeline.status_code == 200, timeline.text
        shown = {other for other in named.values() if f"<strong>{other}</strong>" in timeline.text}
        assert shown == {name}, (external_id, shown)
