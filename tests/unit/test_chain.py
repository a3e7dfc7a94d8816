"""The hash chain functions."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime

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
