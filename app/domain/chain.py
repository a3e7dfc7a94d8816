"""The hash chain of the ledger.

Each event's hash covers its non-personal fields, a digest of its personal part and the hash of its
predecessor in the workspace. The personal part (evidence: IP, user agent, message text…) carries a random
salt, so its digest cannot be reversed by guessing, and erasure can delete the personal part while the chain
still verifies. Editing, reordering or deleting any event, or deleting the newest one (the head row records
it), breaks verification.
"""

from __future__ import annotations

import functools
import hashlib
import json
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring as _encode_string  # what json.dumps escapes with
from typing import Any

GENESIS = bytes(32)


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON: sorted keys, no spaces, UTF-8, UUIDs and datetimes as strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_default).encode()


def _default(value: Any) -> str:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetimes have no place in the ledger")
        return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    raise TypeError(f"cannot put {type(value).__name__} into canonical JSON")


def new_personal(evidence: Mapping[str, Any], salt: str | None = None) -> dict[str, Any]:
    """The personal part of an event: the evidence plus a random salt.

    ``salt``: one of a batch's :func:`salts` (16 random bytes as hex); drawn here when not given.
    """
    return {"salt": salt or secrets.token_hex(16), "evidence": dict(evidence)}


def salts(count: int) -> list[str]:
    """``count`` salts as :func:`new_personal` draws them (16 random bytes each, as hex), read at once for a batch."""
    drawn = secrets.token_hex(16 * count)
    return [drawn[at : at + 32] for at in range(0, 32 * count, 32)]


def personal_digest(personal: Mapping[str, Any]) -> bytes:
    """SHA-256 of the canonical personal part."""
    return hashlib.sha256(canonical_json(personal)).digest()


@dataclass(slots=True)
class ChainFields:
    """Everything of an event that the chain covers.

    Not frozen: a batch makes one per event and only reads it, and a frozen dataclass sets each field through a
    call (three times the cost of making one).
    """

    id: uuid.UUID
    workspace_id: uuid.UUID
    seq: int
    contact_id: uuid.UUID | None
    contact_point_id: uuid.UUID
    purpose_id: uuid.UUID | None
    channel: str
    trigger: str
    from_state: str
    to_state: str
    legal_basis: str | None
    notice_id: uuid.UUID | None
    actor_type: str
    actor_id: str | None
    occurred_at: datetime
    recorded_at: datetime
    personal_digest: bytes

    def payload(self) -> dict[str, Any]:
        """The fields as a mapping (bytes as hex)."""
        return {
            "v": 1,
            "id": self.id,
            "workspace_id": self.workspace_id,
            "seq": self.seq,
            "contact_id": self.contact_id,
            "contact_point_id": self.contact_point_id,
            "purpose_id": self.purpose_id,
            "channel": self.channel,
            "trigger": self.trigger,
            "from_state": self.from_state,
            "to_state": self.to_state,
            "legal_basis": self.legal_basis,
            "notice_id": self.notice_id,
            "actor_type": self.actor_type,
            "actor_id": self.actor_id,
            "occurred_at": self.occurred_at,
            "recorded_at": self.recorded_at,
            "personal_digest": self.personal_digest.hex(),
        }


def event_hash(fields: ChainFields, prev_hash: bytes) -> bytes:
    """SHA-256 over the predecessor's hash and the canonical fields."""
    return hashlib.sha256(prev_hash + _payload_json(fields)).digest()


def _payload_json(fields: ChainFields) -> bytes:
    """``canonical_json(fields.payload())``, byte for byte, written directly (the import chains thousands a second).

    The keys in sorted order, each value as :func:`canonical_json` writes it: strings through the JSON module's own
    escaping, UUIDs and timestamps as their strings, ``seq`` as an integer. A field of any other type than the ones
    :class:`ChainFields` declares takes the general path (``tests/unit/test_chain_payload.py`` holds both equal).
    """
    when = fields.occurred_at, fields.recorded_at
    if (
        type(fields.seq) is not int
        or not all(type(value) is datetime and value.tzinfo is not None for value in when)
        or not all(isinstance(value, uuid.UUID | None) for value in _uuids(fields))
        or not all(isinstance(value, str | None) for value in _texts(fields))
    ):
        return canonical_json(fields.payload())
    return (
        f'{{"actor_id":{_text(fields.actor_id)},"actor_type":{_text(fields.actor_type)},'
        f'"channel":{_text(fields.channel)},"contact_id":{_uuid(fields.contact_id)},'
        f'"contact_point_id":{_uuid(fields.contact_point_id)},"from_state":{_text(fields.from_state)},'
        f'"id":{_uuid(fields.id)},"legal_basis":{_text(fields.legal_basis)},"notice_id":{_uuid(fields.notice_id)},'
        f'"occurred_at":"{_timestamp(fields.occurred_at)}","personal_digest":"{fields.personal_digest.hex()}",'
        f'"purpose_id":{_uuid(fields.purpose_id)},"recorded_at":"{_timestamp(fields.recorded_at)}",'
        f'"seq":{int.__repr__(fields.seq)},"to_state":{_text(fields.to_state)},"trigger":{_text(fields.trigger)},'
        f'"v":1,"workspace_id":{_uuid(fields.workspace_id)}}}'
    ).encode()


def _uuids(fields: ChainFields) -> tuple[uuid.UUID | None, ...]:
    return (
        fields.id,
        fields.workspace_id,
        fields.contact_id,
        fields.contact_point_id,
        fields.purpose_id,
        fields.notice_id,
    )


def _texts(fields: ChainFields) -> tuple[str | None, ...]:
    return (
        fields.channel,
        fields.trigger,
        fields.from_state,
        fields.to_state,
        fields.legal_basis,
        fields.actor_type,
        fields.actor_id,
    )


def _text(value: str | None) -> str:
    return "null" if value is None else _encode_string(value)


def _uuid(value: uuid.UUID | None) -> str:
    return "null" if value is None else f'"{value}"'


@functools.lru_cache(maxsize=64)  # a batch's events share ``recorded_at``; an import's lines often a capture time
def _timestamp(value: datetime) -> str:
    return _default(value)
