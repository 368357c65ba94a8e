"""API key format: shown once, stored as a hash, compared in constant time."""

from __future__ import annotations

import pytest

from kubemate.errors import Unauthenticated
from kubemate_gateway.api_keys import (
    hash_secret,
    issue_api_key,
    looks_like_api_key,
    parse_api_key,
    secret_matches,
)


def test_issued_keys_parse_back_and_match_their_hash() -> None:
    issued = issue_api_key()
    assert looks_like_api_key(issued.token)
    key_id, secret = parse_api_key(issued.token)
    assert key_id == issued.key_id
    assert secret_matches(secret, issued.secret_sha256)
    assert issued.secret_sha256 == hash_secret(secret) and secret not in issued.secret_sha256
    assert secret not in repr(issued)


def test_keys_are_unique() -> None:
    tokens = {issue_api_key().token for _ in range(200)}
    assert len(tokens) == 200


@pytest.mark.parametrize(
    "token",
    [
        "",
        "km_",
        "km_short_secret",
        "km_0123456789abcdef",
        "km_0123456789ABCDEF_" + "a" * 43,  # ids are lowercase hex
        "km_0123456789abcdef_" + "a" * 42,
        "km_0123456789abcdef_" + "a" * 44,
        "km_0123456789abcdef_" + "a" * 42 + "\n",
        "km_0123456789abcdef_" + "a" * 42 + "!",
        "xx_0123456789abcdef_" + "a" * 43,
        "km_' OR 1=1 --_" + "a" * 43,
    ],
)
def test_malformed_keys_are_refused_before_any_lookup(token: str) -> None:
    with pytest.raises(Unauthenticated, match="malformed"):
        parse_api_key(token)


def test_a_wrong_secret_does_not_match() -> None:
    issued = issue_api_key()
    other = issue_api_key()
    _, other_secret = parse_api_key(other.token)
    assert not secret_matches(other_secret, issued.secret_sha256)
