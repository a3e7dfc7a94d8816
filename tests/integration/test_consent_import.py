"""``POST /v1/imports/consents``: consents collected elsewhere, imported with their proof, idempotently."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import msgspec
import pytest
from sqlalchemy import text

from app.domain.model import ActorType
from app.imports import consents as consent_import
from app.ledger.models import ContactPoint
from app.ledger.service import Actor
from app.lib.auth import Scope
from app.lib.keys import Keys
from app.lib.orm import utcnow
from app.settings import Settings, SettingsError
from tests.conftest import TEST_SECRET, consent_cli

NDJSON = {"Content-Type": "application/x-ndjson"}
TEXT = "Ja, ich möchte den Newsletter erhalten. Abmeldung jederzeit."
CAPTURED = "2024-03-01T10:00:00Z"


@pytest.fixture
async def purposes(ledger):
    await ledger.purpose("newsletter")
    await ledger.purpose("orders", kind="transactional")


def ndjson(*lines):
    return "\n".join(json.dumps(line) if isinstance(line, dict) else line for line in lines).encode()


async def post(client, headers, body, content_type=NDJSON):
    return await client.post("/v1/imports/consents", content=body, headers={**headers, **content_type})


def email_line(**extra):
    return {
        "contact": "crm-1",
        "channel": "email",
        "address": "jane@example.com",
        "purpose": "newsletter",
        "state": "opted_in",
        "captured_at": CAPTURED,
        "source": "mailchimp",
        "notice_text": TEXT,
        "locale": "de",
        "evidence": {"ip": "198.51.100.7", "source_url": "https://acme.example/nl"},
        **extra,
    }


async def count(session, sql, **params):
    return (await session.execute(text(sql), params)).scalar_one()


async def test_consents_are_imported_with_their_proof_and_the_date_they_were_given(
    client, admin, purposes, monkeypatch
):
    monkeypatch.setattr(consent_import, "BATCH", 2)  # three lines: two batches, each its own transaction
    sms_notice = await client.post(
        "/v1/notices",
        json={"purpose": "newsletter", "channels": ["sms"], "locale": "de", "text": "SMS-News. STOP zum Abmelden."},
        headers=admin,
    )
    body = ndjson(
        email_line(),
        {
            "contact": "crm-1",
            "channel": "sms",
            "address": "0151 12345678",
            "purpose": "newsletter",
            "state": "opted_in",
            "captured_at": "2024-03-02T08:00:00+01:00",
            "source": "old-sms-tool",
            "notice_id": sms_notice.json()["notice_id"],
        },
        {
            "contact": "crm-2",
            "channel": "print",
            "postal_address": {"name": "Max Roe", "street": "Schulstr. 1", "postcode": "10115", "city": "Berlin"},
            "state": "objected",
            "captured_at": CAPTURED,
            "source": "letter",
            "evidence": {"document_ref": "scan-2024-17"},
        },
    )
    response = await post(client, admin, body)

    assert response.status_code == 200, response.text
    report = response.json()
    assert report == {
        "lines": 3,
        "recorded": 3,
        "skipped": 0,
        "rejected": 0,
        "contacts_created": 2,
        "problems": [],
        "problems_truncated": False,
    }
    contact = (await client.get("/v1/contacts/crm-1", headers=admin)).json()
    consents = {(p["channel"], c["purpose"]): c for p in contact["contact_points"] for c in p["consents"]}
    email = consents["email", "newsletter"]
    assert email["state"] == "opted_in"
    assert email["legal_basis"] == "consent"
    assert email["since"] == "2024-03-01T10:00:00Z", "dated when it was given, not when it was imported"
    notice = (await client.get(f"/v1/notices/{email['notice_id']}", headers=admin)).json()
    assert notice["text"] == TEXT
    assert consents["sms", "newsletter"]["since"] == "2024-03-02T07:00:00Z"
    [event, *_] = (await client.get("/v1/contacts/crm-1/events", headers=admin)).json()
    assert event["trigger"] == "import"
    assert event["evidence"] == {
        "ip": "198.51.100.7",
        "source_url": "https://acme.example/nl",
        "source": "mailchimp",
        "collection_method": "import:mailchimp",
    }
    eligible = await client.get(
        "/v1/eligibility", params={"contact": "crm-1", "channel": "email", "purpose": "newsletter"}, headers=admin
    )
    assert eligible.json()["eligible"] is True
    printed = await client.get(
        "/v1/eligibility", params={"contact": "crm-2", "channel": "print", "purpose": "newsletter"}, headers=admin
    )
    assert printed.json()["reason"] == "objected"


async def test_importing_the_same_file_again_records_nothing(client, admin, purposes, session):
    body = ndjson(email_line(), email_line(channel="email", purpose="newsletter", state="opted_in"))
    first = (await post(client, admin, body)).json()
    assert first["recorded"] == 1
    assert [p["code"] for p in first["problems"]] == ["already_recorded"], "the same line twice in one file"
    events = await count(session, "SELECT count(*) FROM consent_events")

    again = (await post(client, admin, body)).json()
    assert again["recorded"] == 0
    assert again["skipped"] == 2
    assert {p["code"] for p in again["problems"]} == {"already_recorded"}
    assert await count(session, "SELECT count(*) FROM consent_events") == events
    assert await count(session, "SELECT count(*) FROM notices") == 1, "the same text is one notice"


async def test_a_later_withdrawal_stands_and_a_newer_line_applies(client, admin, purposes):
    await post(client, admin, ndjson(email_line()))
    withdrawn = await client.post(
        "/v1/withdrawals", json={"contact": "crm-1", "channel": "email", "purpose": "newsletter"}, headers=admin
    )
    assert withdrawn.status_code == 200, withdrawn.text
    older = (await post(client, admin, ndjson(email_line(captured_at="2025-01-01T00:00:00Z")))).json()
    assert older["recorded"] == 0
    assert older["problems"][0]["code"] == "later_withdrawal_stands"

    newer = (utcnow() + timedelta(seconds=1)).isoformat()
    renewed = (await post(client, admin, ndjson(email_line(captured_at=newer)))).json()
    assert renewed["recorded"] == 1, renewed


async def test_an_opt_in_for_a_suppressed_address_is_skipped_and_creates_nothing(client, admin, purposes, session):
    await post(client, admin, ndjson(email_line()))
    assert (await client.delete("/v1/contacts/crm-1", headers=admin)).status_code == 200
    contacts = await count(session, "SELECT count(*) FROM contacts")

    report = (await post(client, admin, ndjson(email_line()))).json()
    assert report["recorded"] == 0
    assert report["problems"][0]["code"] == "suppressed"
    assert report["contacts_created"] == 0
    assert await count(session, "SELECT count(*) FROM contacts") == contacts
    opted_out = (await post(client, admin, ndjson(email_line(state="opted_out")))).json()
    assert opted_out["recorded"] == 1, "a withdrawal is always taken"


@pytest.mark.parametrize(
    ("scope", "names", "newsletter_taken", "offers_taken"),
    [
        ("purpose", "newsletter", False, True),  # stops only the purpose it names
        ("purpose", "other", True, True),
        ("all_marketing", None, False, False),
        ("all", None, False, False),
    ],
)
async def test_a_suppression_stops_an_imported_opt_in_for_what_its_scope_covers(
    client, admin, purposes, ledger, session, tenant, scope, names, newsletter_taken, offers_taken
):
    await ledger.purpose("offers")
    await ledger.purpose("other")
    named = (
        await session.scalar(
            text("SELECT id FROM purposes WHERE key = :key AND workspace_id = :ws"), {"key": names, "ws": tenant.id}
        )
        if names
        else None
    )
    [key] = Keys(TEST_SECRET).point_keys("email", "jane@example.com", {})
    await session.execute(
        text(
            "INSERT INTO suppressions (id, workspace_id, key, key_version, channel, scope, purpose_id, reason)"
            " VALUES (gen_random_uuid(), :workspace, :key, 1, 'email', :scope, :purpose, 'unsubscribe')"
        ),
        {"workspace": tenant.id, "key": key, "scope": scope, "purpose": named},
    )
    await session.commit()

    report = (await post(client, admin, ndjson(email_line(), email_line(purpose="offers")))).json()
    stopped = {p["line"] for p in report["problems"] if p["code"] == "suppressed"}
    assert stopped == {line for line, taken in ((1, newsletter_taken), (2, offers_taken)) if not taken}, report
    assert report["recorded"] == newsletter_taken + offers_taken


async def test_wrong_lines_are_reported_and_the_others_taken(client, admin, purposes, session, ledger):
    other = await ledger.point("email", "taken@example.com", external_id="someone-else")
    assert other is not None
    future = (utcnow() + timedelta(days=1)).isoformat()
    lines = [
        email_line(address="not-an-address"),  # 1
        email_line(purpose="nope"),  # 2
        email_line(notice_text=None),  # 3
        email_line(channel="app_push"),  # 4
        email_line(purpose="orders"),  # 5
        email_line(captured_at=future),  # 6
        email_line(captured_at="2024-03-01T10:00:00"),  # 7
        "{not json",  # 8
        email_line(channel="print", state="objected"),  # 9: print takes no purpose
        email_line(address=None),  # 10
        email_line(address="taken@example.com"),  # 11
        email_line(contact=str(uuid.uuid4())),  # 12
        email_line(state="objected"),  # 13
        email_line(colour="blue"),  # 14
        email_line(contact="crm-ok"),  # 15: fine
        email_line(contact="crm-tz", timezone="Mars/Olympus_Mons"),  # 16: the dispatcher could not send to it
    ]
    report = (await post(client, admin, ndjson(*[_drop_none(line) for line in lines]))).json()

    assert report["lines"] == 16
    assert report["recorded"] == 1
    assert report["rejected"] == 15
    assert [(p["line"], p["code"]) for p in report["problems"]] == [
        (1, "invalid_email"),
        (2, "purpose_not_found"),
        (3, "notice_required"),
        (4, "channel_not_importable"),
        (5, "purpose_not_consent_based"),
        (6, "invalid_captured_at"),
        (7, "invalid_captured_at"),
        (8, "malformed_json"),
        (9, "purpose_not_allowed"),
        (10, "address_required"),
        (11, "address_of_another_contact"),
        (12, "contact_not_found"),
        (13, "state_not_importable"),
        (14, "invalid_line"),
        (16, "invalid_line"),
    ]
    assert all(p["outcome"] == "rejected" and p["message"] for p in report["problems"])
    assert report["contacts_created"] == 1, "only the good line's contact: a refused line creates nothing"
    assert await count(session, "SELECT count(*) FROM contacts WHERE external_id = 'crm-1'") == 0


def _drop_none(line):
    return {k: v for k, v in line.items() if v is not None} if isinstance(line, dict) else line


async def test_csv_with_flat_evidence_and_postal_columns(client, admin, purposes):
    body = (
        "contact;channel;address;purpose;state;captured_at;source;notice_text;ip;note;name;street;postcode;city\n"
        f'crm-1;email;jane@example.com;newsletter;opted_in;{CAPTURED};shop;"{TEXT}";198.51.100.7;"paper form; '
        'signed";;;;\n'
        f"crm-1;print;;;objected;{CAPTURED};letter;;;;Jane Roe;Hauptstraße 5;10115;Berlin\n"
    ).encode()
    response = await post(client, admin, body, {"Content-Type": "text/csv; charset=utf-8"})
    assert response.status_code == 200, response.text
    assert response.json()["recorded"] == 2, response.json()
    events = (await client.get("/v1/contacts/crm-1/events", headers=admin)).json()
    assert events[0]["evidence"]["note"] == "paper form; signed"
    contact = (await client.get("/v1/contacts/crm-1", headers=admin)).json()
    assert {p["channel"] for p in contact["contact_points"]} == {"email", "print"}


async def test_what_cannot_be_read_at_all_is_refused_before_anything_is_written(client, admin, purposes, session):
    wrong_type = await post(client, admin, b"{}", {"Content-Type": "application/json"})
    assert wrong_type.status_code == 415
    assert wrong_type.json()["code"] == "unsupported_media_type"
    no_header = await post(client, admin, b"jane@example.com;email\n", {"Content-Type": "text/csv"})
    assert no_header.status_code == 422
    assert no_header.json()["code"] == "invalid_csv"
    assert "contact" in no_header.json()["detail"]
    unknown = await post(
        client, admin, b"contact,channel,state,captured_at,source,colour\n", {"Content-Type": "text/csv"}
    )
    assert unknown.status_code == 422
    assert "colour" in unknown.json()["detail"]
    assert await count(session, "SELECT count(*) FROM contacts") == 0


async def test_the_import_needs_the_consents_scope(client, tenant, purposes):
    reader = await tenant.key(Scope.ELIGIBILITY_READ)
    response = await post(client, reader, ndjson(email_line()))
    assert response.status_code == 403


async def test_a_line_dated_slightly_ahead_of_our_clock_does_not_hide_what_happens_next(
    client, admin, purposes, ledger, session
):
    ahead = (utcnow() + timedelta(minutes=2)).isoformat()  # within the allowed clock skew
    report = (await post(client, admin, ndjson(email_line(state="opted_out", captured_at=ahead)))).json()
    assert report["recorded"] == 1
    point = (await client.get("/v1/contacts/crm-1", headers=admin)).json()["contact_points"][0]
    assert point["consents"][0]["since"] <= utcnow().isoformat().replace("+00:00", "Z"), "taken as now"

    newsletter = (await client.get("/v1/purposes", headers=admin)).json()
    purpose_id = next(p["id"] for p in newsletter if p["key"] == "newsletter")
    [signup] = await ledger.apply(
        await session.get(ContactPoint, uuid.UUID(point["id"])), uuid.UUID(purpose_id), "signup"
    )
    assert signup.event_id is not None, "a new signup a minute later is recorded, not taken for older"


@pytest.mark.slow
async def test_the_cli_imports_ndjson_and_csv_with_a_report(pg_server, tmp_path):
    url = await pg_server.create_database("consent_import_cli", migrated=True)
    run = consent_cli(url)

    objection = {
        "contact": "crm-9",
        "channel": "print",
        "postal_address": {"name": "Max Roe", "street": "Schulstr. 1", "postcode": "10115", "city": "Berlin"},
        "state": "objected",
        "captured_at": CAPTURED,
        "source": "letter",
    }
    try:
        assert run("migrate").returncode == 0
        workspace = json.loads(run("workspace", "create", "Acme", "--json").stdout.strip().splitlines()[-1])
        lines = tmp_path / "consents.ndjson"
        lines.write_bytes(ndjson(objection, email_line()))
        result = run("import", "consents", "--workspace", workspace["id"], str(lines), "--json")
        assert result.returncode == 4, "a line was rejected: a script can tell (a newcomer's finding)"
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert (report["lines"], report["recorded"], report["rejected"]) == (2, 1, 1)
        assert report["problems"][0]["code"] == "purpose_not_found"
        table = tmp_path / "consents.csv"
        table.write_text(
            f"contact,channel,name,street,postcode,city,state,captured_at,source\n"
            f"crm-9,print,Max Roe,Schulstr. 1,10115,Berlin,objected,{CAPTURED},letter\n"
        )
        human = run("import", "consents", "--workspace", workspace["id"], str(table))
        assert "1 lines: 0 recorded, 1 skipped, 0 rejected" in human.stdout, human.stdout + human.stderr
        assert human.returncode == 0, "a skipped line has nothing to fix"
        assert "already_recorded" in human.stdout
        # cut short (a line that is no UTF-8 ends a CSV): --json says so as JSON, with the lines it took
        broken = tmp_path / "broken.csv"
        broken.write_bytes(
            b"contact,channel,address,purpose,state,captured_at,source\n"
            b"crm-7,email,\xff@example.com,newsletter,opted_out,2024-03-01T10:00:00Z,crm\n"
        )
        cut = run("import", "consents", "--workspace", workspace["id"], str(broken), "--json")
        assert cut.returncode == 1, cut.stdout + cut.stderr
        stopped = json.loads(cut.stdout.strip().splitlines()[-1])
        assert (stopped["code"], stopped["lines_taken_through"], stopped["recorded"]) == ("invalid_csv", 0, 0)
        assert "No line was recorded" in stopped["detail"]
        assert "No line was recorded" in cut.stderr, "and the message as before"
    finally:
        await pg_server.drop_database(url)


async def test_a_contact_named_by_its_id_in_capitals_is_that_contact(client, admin, purposes, ledger):
    point = await ledger.point("email", "jane@example.com", external_id="crm-1")
    line = email_line(contact=str(point.contact_id).upper())

    report = (await post(client, admin, ndjson(line))).json()

    assert (report["recorded"], report["contacts_created"]) == (1, 0), report["problems"]


async def test_progress_is_reported_after_every_batch(database, ledger, monkeypatch):
    await ledger.purpose("newsletter")
    monkeypatch.setattr(consent_import, "BATCH", 2)
    seen = []

    async def chunks():
        yield ndjson(*(email_line(contact=f"crm-{n}", address=f"p{n}@example.com") for n in range(5)))

    async with database.sessionmaker() as session:
        await consent_import.import_consents(
            session,
            Keys(TEST_SECRET),
            ledger.workspace_id,
            consent_import.ndjson_lines(chunks()),
            actor=Actor(ActorType.SYSTEM, "test"),
            progress=lambda report: seen.append((report.lines, report.recorded)),
        )

    assert seen == [(2, 2), (4, 4), (5, 5)]


async def test_a_full_list_of_problems_still_shows_the_lines_to_fix(client, admin, purposes, monkeypatch):
    monkeypatch.setattr(consent_import, "MAX_PROBLEMS", 2)
    lines = [email_line(contact=f"crm-{n}", address=f"p{n}@example.com") for n in range(4)]
    await post(client, admin, ndjson(*lines))

    again = (await post(client, admin, ndjson(*lines, {**lines[0], "purpose": "missing"}, *lines))).json()

    assert (again["skipped"], again["rejected"], again["problems_truncated"]) == (8, 1, True)
    assert [(p["line"], p["code"]) for p in again["problems"]] == [(1, "already_recorded"), (5, "purpose_not_found")]


async def test_the_cli_shows_lines_and_lines_per_second_on_a_terminal(pg_server, tmp_path):
    url = await pg_server.create_database("consent_import_bar", migrated=True)
    run = consent_cli(url)
    try:
        workspace = json.loads(run("workspace", "create", "Acme", "--json").stdout.strip().splitlines()[-1])
        lines = tmp_path / "consents.ndjson"
        objection = {
            "contact": "crm-9",
            "channel": "print",
            "postal_address": {"name": "Max Roe", "street": "Schulstr. 1", "postcode": "10115", "city": "Berlin"},
            "state": "objected",
            "captured_at": CAPTURED,
            "source": "letter",
        }
        lines.write_bytes(ndjson(objection))
        terminal, attached = pty.openpty()  # click draws its bar only on a terminal
        env = {**os.environ, "DATABASE_URL": url.replace("+asyncpg", ""), "CONSENT_SECRET_KEY": "ab" * 32}
        command = [str(Path(sys.executable).parent / "consent"), "import", "consents", "--workspace"]
        process = subprocess.run(  # a test waits for the CLI it runs
            [*command, workspace["id"], str(lines)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=attached,
            timeout=60,
            check=False,
        )
        os.close(attached)
        drawn = b""
        with contextlib.suppress(OSError):  # EIO once the terminal's other end is closed and read empty
            while chunk := os.read(terminal, 65536):
                drawn += chunk
        os.close(terminal)
        assert process.returncode == 0, drawn
        assert b"1 lines, " in drawn, drawn
        assert b" lines/s" in drawn, drawn
        assert b"1 lines: 1 recorded" in process.stdout
    finally:
        await pg_server.drop_database(url)


# --- what a client cannot make us hold or fail on (issue 16, finding 8) --------------------------------------------


@pytest.fixture
def import_limit(app):
    """Set the app's CONSENT_IMPORT_MAX_BYTES for this test."""

    def set_limit(size):
        app.state.settings = msgspec.structs.replace(app.state.settings, import_max_bytes=size)

    return set_limit


def test_the_import_limit_is_an_operator_setting():
    assert Settings.from_env({}).import_max_bytes == 1 << 30
    assert Settings.from_env({"CONSENT_IMPORT_MAX_BYTES": "512M"}).import_max_bytes == 512 << 20
    assert Settings.from_env({"CONSENT_IMPORT_MAX_BYTES": "65536"}).import_max_bytes == 65536
    with pytest.raises(SettingsError, match="CONSENT_IMPORT_MAX_BYTES"):
        Settings.from_env({"CONSENT_IMPORT_MAX_BYTES": "lots"})


async def test_a_body_declared_beyond_the_limit_is_refused_before_anything_is_read(
    client, admin, purposes, session, import_limit
):
    import_limit(4096)
    body = ndjson(*[email_line(contact=f"crm-{n}", address=f"p{n}@example.com") for n in range(20)])
    assert len(body) > 4096
    response = await post(client, admin, body)
    assert response.status_code == 413, response.text
    problem = response.json()
    assert response.headers["content-type"].startswith("application/problem+json")
    assert problem["code"] == "request_too_large"
    assert "4 KiB" in problem["detail"]
    assert "CONSENT_IMPORT_MAX_BYTES" in problem["detail"]
    assert "Nothing was read or recorded" in problem["detail"]
    assert await count(session, "SELECT count(*) FROM contacts") == 0


async def test_a_streamed_body_is_cut_at_the_limit_and_says_which_lines_were_taken(
    client, admin, purposes, session, import_limit, monkeypatch
):
    """No Content-Length: counted as it streams, not buffered; the batches committed stay, the rest can follow."""
    monkeypatch.setattr(consent_import, "BATCH", 2)
    import_limit(16 * 1024)
    head = ndjson(*[email_line(contact=f"crm-{n}", address=f"p{n}@example.com") for n in range(3)]) + b"\n"
    sent = 0

    async def body():
        nonlocal sent
        for piece in [head, *[b"\n" * 4096] * 256, ndjson(email_line(contact="crm-last", address="z@example.com"))]:
            sent += len(piece)
            yield piece

    response = await client.post("/v1/imports/consents", content=body(), headers={**admin, **NDJSON})
    assert response.status_code == 413, response.text
    problem = response.json()
    assert problem["code"] == "request_too_large"
    assert (problem["lines_taken_through"], problem["recorded"]) == (2, 2)
    assert "lines 1 to 2 were taken" in problem["detail"]
    assert "idempotent" in problem["detail"]
    assert sent < 32 * 1024, "reading stopped at the limit: the 1 MiB body was not buffered"
    assert await count(session, "SELECT count(*) FROM contacts") == 2

    import_limit(1 << 30)  # the operator raises the limit: the same body again takes the rest, nothing twice
    sent = 0
    report = (await client.post("/v1/imports/consents", content=body(), headers={**admin, **NDJSON})).json()
    assert (report["recorded"], report["skipped"]) == (2, 2), report
    assert {p["code"] for p in report["problems"]} == {"already_recorded"}


async def test_a_line_without_line_break_beyond_the_line_limit_is_that_lines_error(client, admin, purposes):
    async def body():
        yield ndjson(email_line()) + b'\n{"contact": "'
        for _ in range(64):  # 4 MiB on one line
            yield b"x" * 65536
        yield b'"}\n' + ndjson(email_line(contact="crm-2", address="two@example.com"))

    response = await client.post("/v1/imports/consents", content=body(), headers={**admin, **NDJSON})
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["lines"], report["recorded"], report["rejected"]) == (3, 2, 1)
    assert [(p["line"], p["code"]) for p in report["problems"]] == [(2, "line_too_long")]


CSV_HEADER = "contact;channel;address;purpose;state;captured_at;source;notice_text;note\n"


def csv_line(contact, address, note=""):
    return f"{contact};email;{address};newsletter;opted_in;{CAPTURED};shop;{TEXT};{note}\n"


async def test_an_unclosed_quote_is_that_lines_error_and_the_lines_after_it_are_taken(client, admin, purposes):
    """Also where the swallowed lines pass the csv module's field limit (128 KiB): that was a 500."""
    filler = "".join(
        f"crm-{n};fax;f{n}@example.com;newsletter;opted_in;{CAPTURED};x;{'y' * 200};\n" for n in range(700)
    )
    body = (
        CSV_HEADER
        + csv_line("crm-1", "one@example.com")
        + csv_line("crm-2", "two@example.com", note='"the quote of this note is never closed')
        + filler
        + csv_line("crm-3", "three@example.com")
    ).encode()
    assert len(body) > 128 * 1024
    response = await post(client, admin, body, {"Content-Type": "text/csv"})
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["lines"] == 703
    assert report["recorded"] == 2, "the lines before and after the unclosed quote are taken"
    problems = [(p["line"], p["code"]) for p in report["problems"]]
    assert problems[0] == (3, "unclosed_quote")
    assert problems[1:] == [(n, "invalid_line") for n in range(4, 704)], "each swallowed line is read on its own"
    contact = (await client.get("/v1/contacts/crm-3", headers=admin)).json()
    assert contact["contact_points"][0]["address"] == "three@example.com"


async def test_a_quoted_field_holds_line_breaks_and_quotes(client, admin, purposes):
    note = 'paper form\nsigned ""in ink""; filed'
    body = (
        CSV_HEADER
        + csv_line("crm-1", "one@example.com", note=f'"{note}"')
        + csv_line("crm-2", "two@example.com", note='5" floppy')  # a quote inside an unquoted field is a character
        + csv_line("crm-3", "three@example.com")
    ).encode()
    report = (await post(client, admin, body, {"Content-Type": "text/csv"})).json()
    assert (report["lines"], report["recorded"]) == (3, 3), report
    events = (await client.get("/v1/contacts/crm-1/events", headers=admin)).json()
    assert events[0]["evidence"]["note"] == 'paper form\nsigned "in ink"; filed'
    events = (await client.get("/v1/contacts/crm-2/events", headers=admin)).json()
    assert events[0]["evidence"]["note"] == '5" floppy'


async def test_a_nul_character_is_the_error_of_its_line_alone(client, admin, purposes, session):
    lines = [
        email_line(contact="crm-1", address="one@example.com"),
        email_line(contact="crm-2", address="two@example.com", evidence={"note": "a\u0000b"}),
        email_line(contact="crm-3", address="three@example.com"),
    ]
    response = await post(client, admin, ndjson(*lines))
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["recorded"] == 2
    assert [(p["line"], p["code"]) for p in report["problems"]] == [(2, "nul_character")]

    body = (
        CSV_HEADER + csv_line("crm-4", "four@example.com", note="x\0y") + csv_line("crm-5", "5@example.com")
    ).encode()
    report = (await post(client, admin, body, {"Content-Type": "text/csv"})).json()
    assert report["recorded"] == 1
    assert [(p["line"], p["code"]) for p in report["problems"]] == [(2, "nul_character")]
    assert await count(session, "SELECT count(*) FROM contacts WHERE external_id IN ('crm-2', 'crm-4')") == 0


async def test_fields_beyond_the_header_are_that_lines_error(client, admin, purposes):
    body = (CSV_HEADER + csv_line("crm-1", "one@example.com", note="a;b") + csv_line("crm-2", "2@example.com")).encode()
    report = (await post(client, admin, body, {"Content-Type": "text/csv"})).json()
    assert report["recorded"] == 1
    assert [(p["line"], p["code"]) for p in report["problems"]] == [(2, "too_many_fields")]


async def test_an_external_id_the_contact_urls_could_not_name_is_that_lines_error(client, admin, purposes, session):
    lines = [
        email_line(contact="crm/1", address="one@example.com"),
        email_line(contact="..", address="two@example.com"),
        email_line(contact="crm-3", address="three@example.com"),
    ]
    report = (await post(client, admin, ndjson(*lines))).json()
    assert report["recorded"] == 1
    assert [(p["line"], p["code"]) for p in report["problems"]] == [
        (1, "invalid_external_id"),
        (2, "invalid_external_id"),
    ]
    assert await count(session, "SELECT count(*) FROM contacts") == 1


async def test_a_line_that_is_not_utf8_is_that_lines_error_after_committed_batches(client, admin, purposes, session):
    """It was a 500 after the first batches had committed, with no word of which lines were taken."""
    good = [json.dumps(email_line(contact=f"crm-{i}", address=f"p{i}@example.com")).encode() for i in range(600)]
    bad = json.dumps(email_line(contact="crm-x", address="x@example.com")).encode().replace(b"crm-x", b"crm-\xff")
    body = b"\n".join([*good, bad, good[0]]) + b"\n"
    response = await post(client, admin, body)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["recorded"] == 600
    assert [(p["line"], p["code"]) for p in report["problems"]][:1] == [(601, "malformed_json")]
    assert report["lines"] == 602, "the line after it was read too"


async def test_a_time_outside_the_calendar_is_that_lines_error_not_a_500(client, admin, purposes, session):
    """Hostile review: year 1 at +14:00 has no UTC time; converting it failed the whole import with a 500."""
    body = ndjson(email_line(captured_at="0001-01-01T00:00:00+14:00"), email_line(contact="crm-2", address="j2@x.de"))
    answer = await post(client, admin, body)
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert {p["line"]: p["code"] for p in report["problems"]} == {1: "invalid_captured_at"}
    assert report["recorded"] == 1


async def test_a_line_without_a_purpose_says_so(client, admin, purposes):
    line = email_line()
    del line["purpose"]
    report = (await post(client, admin, ndjson(line))).json()
    [problem] = report["problems"]
    assert (problem["code"], problem["message"]) == (
        "purpose_required",
        "The line has no purpose: every email consent needs one.",
    )


async def test_a_line_refused_for_its_address_adds_no_notice_version(client, admin, purposes, session):
    """Newcomer review: a refused line's ``notice_text`` was kept as a new, immutable notice version."""
    before = await count(session, "SELECT count(*) FROM notices")
    answer = await post(client, admin, ndjson(email_line(address="x@", notice_text="A text nobody agreed to")))
    assert answer.status_code == 200, answer.text
    assert (answer.json()["recorded"], answer.json()["rejected"]) == (0, 1)
    assert await count(session, "SELECT count(*) FROM notices") == before
