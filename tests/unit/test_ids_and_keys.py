"""Time-ordered ids and API-key secrets."""

from __future__ import annotations

import time

from app.lib.auth import KEY_PREFIX, generate_key, hash_key
from app.lib.ids import uuid7


def test_uuid7_is_version_7_and_time_ordered():
    first = uuid7()
    time.sleep(0.002)
    second = uuid7()
    assert first.version == 7
    assert first.variant == "specified in RFC 4122"
    assert first < second
    assert abs((first.int >> 80) - time.time_ns() // 1_000_000) < 5_000


def test_uuid7_is_unique_within_a_millisecond():
    assert len({uuid7() for _ in range(10_000)}) == 10_000


def test_api_keys_have_256_bits_and_a_stable_hash():
    secret, digest = generate_key()
    assert secret.startswith(KEY_PREFIX)
    assert len(secret) == len(KEY_PREFIX) + 43
    assert digest == hash_key(secret)
    assert len(digest) == 32
    assert generate_key()[0] != secret
