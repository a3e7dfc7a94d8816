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


def test_uuid7s_are_uuid7s_of_now_and_distinct():
    from app.lib.ids import uuid7s  # noqa: PLC0415

    made = uuid7s(10_000)
    assert len(set(made)) == 10_000
    assert all(u.version == 7 and u.variant == "specified in RFC 4122" for u in made)
    assert all(abs((u.int >> 80) - time.time_ns() // 1_000_000) < 5_000 for u in made)
    # the random bits are random: each of the 74 is set in some id and clear in another
    random_bits = [(1 << bit) for bit in range(80) if bit not in (62, 63, 76, 77, 78, 79)]
    assert all(any(u.int & bit for u in made) and any(not u.int & bit for u in made) for bit in random_bits)
    assert uuid7s(0) == []


def test_a_batch_of_salts_is_16_random_bytes_each():
    import re  # noqa: PLC0415

    from app.domain.chain import salts  # noqa: PLC0415

    made = salts(1_000)
    assert len(set(made)) == 1_000
    assert all(re.fullmatch(r"[0-9a-f]{32}", salt) for salt in made)
    assert salts(0) == []
