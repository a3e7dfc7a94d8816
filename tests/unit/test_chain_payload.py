"""The chain's fields are written directly, byte for byte as ``canonical_json(fields.payload())`` writes them.

An event's hash is of that text: a difference of one byte would make every event chained since fail verification
against the ledger's documented rule (and against events chained before). Generated fields: any text for the
strings (non-ASCII, control characters, quotes), UUIDs or none, any time zone, any sequence number; and fields of
other types than declared, which take the general path.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.chain import GENESIS, ChainFields, _payload_json, canonical_json, event_hash
from app.ledger.service import Change, _lock_order

texts = st.text(max_size=40)
uuids = st.uuids()
zones = st.one_of(
    st.just(UTC), st.integers(-23 * 60, 23 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes)))
)
moments = st.builds(
    lambda at, zone: at.replace(tzinfo=UTC).astimezone(zone),
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30)),  # noqa: DTZ001  # made aware
    zones,
)
chain_fields = st.builds(
    ChainFields,
    id=uuids,
    workspace_id=uuids,
    seq=st.integers(min_value=-(2**70), max_value=2**70),
    contact_id=st.none() | uuids,
    contact_point_id=uuids,
    purpose_id=st.none() | uuids,
    channel=texts,
    trigger=texts,
    from_state=texts,
    to_state=texts,
    legal_basis=st.none() | texts,
    notice_id=st.none() | uuids,
    actor_type=texts,
    actor_id=st.none() | texts,
    occurred_at=moments,
    recorded_at=moments,
    personal_digest=st.binary(min_size=32, max_size=32),
)


@settings(max_examples=2_000)
@given(chain_fields, st.binary(min_size=32, max_size=32))
def test_the_fields_are_written_as_canonical_json_writes_them(fields, prev_hash):
    assert _payload_json(fields) == canonical_json(fields.payload())
    assert event_hash(fields, prev_hash) == hashlib.sha256(prev_hash + canonical_json(fields.payload())).digest()


@given(chain_fields, st.sampled_from(["contact_id", "seq", "occurred_at", "actor_id"]))
def test_fields_of_other_types_take_the_general_path(fields, name):
    odd = {
        "contact_id": "01a20403-96cc-7247-94d2-bb2e46fed6b5\n",
        "seq": True,
        "occurred_at": "2024-01-01",
        "actor_id": 42,
    }[name]
    changed = ChainFields(**{**{f: getattr(fields, f) for f in ChainFields.__slots__}, name: odd})
    assert _payload_json(changed) == canonical_json(changed.payload())


def test_a_naive_time_is_refused_as_before():
    fields = ChainFields(**{**_example(), "recorded_at": datetime(2024, 1, 1)})  # noqa: DTZ001  # the case tested
    with pytest.raises(ValueError, match="naive"):
        event_hash(fields, GENESIS)


def _example() -> dict:
    at = datetime(2024, 1, 1, tzinfo=UTC)
    point = uuid.uuid4()
    return {
        "id": point, "workspace_id": point, "seq": 1, "contact_id": None, "contact_point_id": point,
        "purpose_id": None, "channel": "email", "trigger": "import", "from_state": "none", "to_state": "opted_in",
        "legal_basis": None, "notice_id": None, "actor_type": "system", "actor_id": None, "occurred_at": at,
        "recorded_at": at, "personal_digest": bytes(32),
    }  # fmt: skip


class _Point:
    def __init__(self, point_id: uuid.UUID) -> None:
        self.id, self.contact_id, self.channel = point_id, uuid.uuid4(), "email"


@given(st.lists(st.tuples(st.integers(0, 5), st.none() | st.integers(0, 3)), max_size=30), st.lists(uuids, min_size=10))
def test_consent_rows_are_locked_in_the_order_of_their_ids_as_text(picks, pool):
    """The one lock order every writer uses: (point id, purpose id) as text, a missing purpose first."""
    points = [_Point(pool[i]) for i in range(6)]
    changes = [Change(points[p], None if q is None else pool[6 + q], trigger=None) for p, q in picks]  # type: ignore[arg-type]
    expected: dict = {}
    for change in sorted(changes, key=lambda c: (str(c.contact_point.id), str(c.purpose_id or ""))):
        expected.setdefault((change.contact_point.id, change.purpose_id), None)
    assert [(k.contact_point_id, k.purpose_id) for k in _lock_order(changes)] == list(expected)
