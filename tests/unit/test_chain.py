"""The hash chain functions."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from app.domain.chain import GENESIS, ChainFields, canonical_json, event_hash, new_personal, personal_digest


def fields(**overrides):
    base = ChainFields(
        id=uuid.UUID("01a20403-96cc-7247-94d2-bb2e46fed6b3"),
        workspace_id=uuid.UUID("01a20403-96cc-7247-94d2-bb2e46fed6b4"),
        seq=1,
        contact_id=uuid.UUID("01a20403-96cc-7247-94d2-bb2e46fed6b5"),
        contact_point_id=uuid.UUID("01a20403-96cc-7247-94d2-bb2e46fed6b6"),
        purpose_id=None,
        channel="email",
        trigger="signup",
        from_state="none",
        to_state="pending",
        legal_basis=None,
        notice_id=None,
        actor_type="api_key",
        actor_id="k",
        occurred_at=datetime(2026, 11, 22, 12, 0, tzinfo=UTC),
        recorded_at=datetime(2026, 11, 22, 12, 0, 1, tzinfo=UTC),
        personal_digest=b"\x01" * 32,
    )
    return dataclasses.replace(base, **overrides)


def test_canonical_json_is_deterministic_and_rejects_naive_datetimes():
    assert canonical_json({"b": 1, "a": [2, "ü"]}) == '{"a":[2,"ü"],"b":1}'.encode()
    with pytest.raises(ValueError, match="naive"):
        canonical_json({"t": datetime(2026, 1, 1)})  # noqa: DTZ001


def test_the_hash_covers_every_field_and_the_predecessor():
    original = event_hash(fields(), GENESIS)
    assert event_hash(fields(), GENESIS) == original
    assert event_hash(fields(), b"\x02" * 32) != original
    for name, value in [
        ("seq", 2),
        ("to_state", "opted_in"),
        ("trigger", "confirm"),
        ("occurred_at", datetime(2026, 11, 22, 12, 0, 0, 1, tzinfo=UTC)),
        ("personal_digest", b"\x02" * 32),
        ("actor_id", None),
        ("purpose_id", uuid.uuid4()),
    ]:
        assert event_hash(fields(**{name: value}), GENESIS) != original, name


def test_personal_digest_is_salted():
    a, b = new_personal({"ip": "198.51.100.4"}), new_personal({"ip": "198.51.100.4"})
    assert a["evidence"] == b["evidence"]
    assert personal_digest(a) != personal_digest(b), "equal evidence must not give a guessable digest"
    assert personal_digest(a) == personal_digest(dict(a))


# -- every field the chain covers (README: GET /v1/audit/events) -------------------------------------------

COVERED = [
    "id",
    "workspace_id",
    "seq",
    "contact_id",
    "contact_point_id",
    "purpose_id",
    "channel",
    "trigger",
    "from_state",
    "to_state",
    "legal_basis",
    "notice_id",
    "actor_type",
    "actor_id",
    "occurred_at",
    "recorded_at",
    "personal_digest",
]
EDITS = {
    "id": uuid.UUID(int=7),
    "workspace_id": uuid.UUID(int=7),
    "seq": 2,
    "contact_id": None,
    "contact_point_id": uuid.UUID(int=7),
    "purpose_id": uuid.UUID(int=7),
    "channel": "sms",
    "trigger": "confirm",
    "from_state": "pending",
    "to_state": "opted_in",
    "legal_basis": "consent",
    "notice_id": uuid.UUID(int=7),
    "actor_type": "subject",
    "actor_id": "k2",
    "occurred_at": datetime(2026, 11, 22, 12, 0, 0, 1, tzinfo=UTC),
    "recorded_at": datetime(2026, 11, 22, 12, 0, 1, 1, tzinfo=UTC),
    "personal_digest": b"\x01" * 31 + b"\x02",
}


def test_the_chain_covers_exactly_the_documented_fields():
    assert [f.name for f in dataclasses.fields(ChainFields)] == COVERED
    assert sorted(fields().payload()) == sorted(["v", *COVERED])


@pytest.mark.parametrize("name", COVERED)
def test_editing_any_covered_field_breaks_verification(name):
    stored = event_hash(fields(), GENESIS)
    assert event_hash(fields(**{name: EDITS[name]}), GENESIS) != stored, name


def test_the_hash_is_sha256_of_the_predecessor_and_the_documented_canonical_json():
    """A known answer, computed here the way an outside verifier would (README: the audit stream)."""
    prev = bytes(range(32))
    document = (
        '{"actor_id":"k","actor_type":"api_key","channel":"email",'
        '"contact_id":"01a20403-96cc-7247-94d2-bb2e46fed6b5",'
        '"contact_point_id":"01a20403-96cc-7247-94d2-bb2e46fed6b6","from_state":"none",'
        '"id":"01a20403-96cc-7247-94d2-bb2e46fed6b3","legal_basis":null,"notice_id":null,'
        '"occurred_at":"2026-11-22T12:00:00.000000Z","personal_digest":"' + "01" * 32 + '",'
        '"purpose_id":null,"recorded_at":"2026-11-22T12:00:01.000000Z","seq":1,"to_state":"pending",'
        '"trigger":"signup","v":1,"workspace_id":"01a20403-96cc-7247-94d2-bb2e46fed6b4"}'
    )
    assert canonical_json(fields().payload()) == document.encode()
    assert event_hash(fields(), prev) == hashlib.sha256(prev + document.encode()).digest()
    assert bytes(32) == GENESIS


def test_canonical_json_writes_times_in_utc_with_microseconds_and_uuids_as_text():
    berlin = timezone(timedelta(hours=2))
    assert canonical_json([datetime(2026, 6, 1, 14, 0, 0, 5, tzinfo=berlin)]) == b'["2026-06-01T12:00:00.000005Z"]'
    assert canonical_json({"u": uuid.UUID(int=1)}) == b'{"u":"00000000-0000-0000-0000-000000000001"}'
    assert canonical_json({"text": "Straße 😀"}) == '{"text":"Straße 😀"}'.encode()
    with pytest.raises(TypeError, match="cannot put bytes into canonical JSON"):
        canonical_json({"raw": b"x"})


def test_the_personal_part_is_the_evidence_with_a_fresh_random_salt():
    evidence = {"ip": "198.51.100.4", "user_agent": "Mozilla/5.0"}
    personal = new_personal(evidence)
    assert set(personal) == {"salt", "evidence"}
    assert personal["evidence"] == evidence
    assert personal["evidence"] is not evidence
    assert re.fullmatch(r"[0-9a-f]{32}", personal["salt"])
    assert personal_digest(personal) == hashlib.sha256(canonical_json(personal)).digest()
