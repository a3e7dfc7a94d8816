"""The JWTs the push adapters sign, decoded with PyJWT and the public key: headers and claims as the providers want."""

from __future__ import annotations

import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from channel_providers.apns import ApnsAdapter
from channel_providers.fcm import SCOPE, FcmAdapter, parse_service_account


def _pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


async def test_the_apns_provider_token_is_es256_with_kid_and_team_and_is_reused():
    key = ec.generate_private_key(ec.SECP256R1())
    adapter = ApnsAdapter(team_id="ABCDE12345", key_id="KEY1234567", private_key=_pem(key), topic="com.acme.app")
    try:
        before = int(time.time())
        token = adapter._provider_token()
        assert jwt.get_unverified_header(token) == {"alg": "ES256", "kid": "KEY1234567"}, "Apple's header: no typ"
        claims = jwt.decode(token, key.public_key(), algorithms=["ES256"], options={"require": ["iss", "iat"]})
        assert claims.keys() == {"iss", "iat"}
        assert claims["iss"] == "ABCDE12345"
        assert before <= claims["iat"] <= int(time.time())
        assert adapter._provider_token() == token, "reused, not signed again for every request"
        other = ec.generate_private_key(ec.SECP256R1())
        with pytest.raises(jwt.InvalidSignatureError):
            jwt.decode(token, other.public_key(), algorithms=["ES256"])
    finally:
        await adapter.aclose()


async def test_the_fcm_assertion_is_an_rs256_jwt_bearer_grant_for_the_messaging_scope():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    account = parse_service_account(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "acme-app",
                "private_key_id": "k1",
                "private_key": _pem(key),
                "client_email": "push@acme-app.iam.gserviceaccount.com",
                "token_uri": "https://oauth2.example.test/token",
            }
        )
    )
    adapter = FcmAdapter(account)
    try:
        assertion = adapter._assertion(1_790_000_000)
        assert jwt.get_unverified_header(assertion) == {"alg": "RS256", "typ": "JWT", "kid": "k1"}
        claims = jwt.decode(
            assertion,
            key.public_key(),
            algorithms=["RS256"],
            audience="https://oauth2.example.test/token",
            options={"verify_exp": False, "verify_iat": False},
        )
        assert claims == {
            "iss": "push@acme-app.iam.gserviceaccount.com",
            "scope": SCOPE,
            "aud": "https://oauth2.example.test/token",
            "iat": 1_790_000_000,
            "exp": 1_790_003_600,
        }
        assert SCOPE == "https://www.googleapis.com/auth/firebase.messaging"
    finally:
        await adapter.aclose()
