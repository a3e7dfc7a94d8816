"""``X-Consent-Signature`` parsing: any header a client can send is a yes or a no, never an exception."""

from __future__ import annotations

import pytest

from app.lib import signatures

SECRET = "s" * 32
BODY = b'{"events": []}'
NOW = 1_800_000_000


def test_a_fresh_matching_signature_verifies():
    assert signatures.verify(SECRET, signatures.sign(SECRET, BODY, NOW), BODY, NOW)


@pytest.mark.parametrize(
    "header",
    [
        "t=\u00b2,v1=00",  # a superscript two: str.isdigit() says yes, int() says no
        "t=\u0661\u0662,v1=00",  # Arabic-Indic digits
        "t=" + "9" * 5000 + ",v1=00",  # more digits than int() converts
        f"t={NOW},v1=\u00e9\u00e9",  # non-ASCII where the hex goes
        f"t={NOW},v1=",
        "t=,v1=",
        "",
        "garbage",
    ],
)
def test_a_malformed_header_does_not_verify_and_does_not_raise(header):
    assert signatures.verify(SECRET, header, BODY, NOW) is False


def test_only_a_matching_signature_is_called_stale():
    old = signatures.sign(SECRET, BODY, NOW - signatures.TOLERANCE_SECONDS - 1)
    assert signatures.refusal(SECRET, old, BODY, NOW) == "stale"
    assert signatures.refusal("x" * 32, old, BODY, NOW) == "mismatch"  # another secret learns nothing of the time
    assert signatures.refusal(SECRET, old, BODY + b" ", NOW) == "mismatch"
    assert signatures.refusal(SECRET, signatures.sign(SECRET, BODY, NOW), BODY, NOW) is None
