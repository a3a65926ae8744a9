"""JWT claims and reuse, key loading, clock correction and installation tokens."""

from __future__ import annotations

import base64
import pickle
from pathlib import Path

import jwt as pyjwt
import pytest

from ghbot.auth import (
    JWT_BACKDATE,
    AppAuth,
    InstallationToken,
    is_clock_error,
    load_private_key,
    redact,
)
from ghbot.errors import ConfigError

NOW = 1_700_000_000.0


def _decode(token: str, public_pem: bytes) -> dict[str, object]:
    return pyjwt.decode(
        token, public_pem, algorithms=["RS256"], options={"verify_exp": False, "verify_iat": False}
    )


@pytest.mark.parametrize("pem_fixture", ["pem_pkcs1", "pem_pkcs8"])
def test_jwt_is_rs256_backdated_and_short_lived(
    pem_fixture: str, request: pytest.FixtureRequest, public_pem: bytes
) -> None:
    pem: bytes = request.getfixturevalue(pem_fixture)
    auth = AppAuth(12345, pem.decode())
    token = auth.jwt(now=NOW)
    assert pyjwt.get_unverified_header(token)["alg"] == "RS256"
    claims = _decode(token, public_pem)
    assert claims["iss"] == "12345"
    assert claims["iat"] == NOW - JWT_BACKDATE
    assert claims["exp"] - claims["iat"] <= 600  # type: ignore[operator]
    assert claims["exp"] <= NOW + 600  # type: ignore[operator]


def test_client_id_is_accepted_as_iss(pem_pkcs8: bytes, public_pem: bytes) -> None:
    auth = AppAuth("Iv23liAbCdEf", pem_pkcs8)
    assert _decode(auth.jwt(now=NOW), public_pem)["iss"] == "Iv23liAbCdEf"


def test_numeric_app_id_is_sent_as_a_string(pem_pkcs8: bytes) -> None:
    assert AppAuth(42, pem_pkcs8).iss == "42"


def test_an_app_id_read_with_its_newline_is_sent_without_it(pem_pkcs8: bytes) -> None:
    """An ID read from a file or a secret often ends in a newline: the JWT's `iss` is
    the ID without it."""
    assert AppAuth(" 12345\n", pem_pkcs8).iss == "12345"


def test_jwt_is_reused_until_a_minute_before_it_expires(pem_pkcs8: bytes) -> None:
    auth = AppAuth(1, pem_pkcs8)
    first = auth.jwt(now=NOW)
    assert auth.jwt(now=NOW + 400) == first
    # exp is NOW + 540; a minute before that is NOW + 480.
    assert auth.jwt(now=NOW + 479) == first
    assert auth.jwt(now=NOW + 480) != first


def test_date_header_corrects_the_clock(pem_pkcs8: bytes, public_pem: bytes) -> None:
    auth = AppAuth(1, pem_pkcs8)
    stale = auth.jwt(now=NOW)
    # GitHub's clock is 2 hours ahead of ours.
    from email.utils import formatdate

    assert auth.observe_date(formatdate(NOW + 7200, usegmt=True), now=NOW)
    assert auth.offset == 7200
    fresh = auth.jwt(now=NOW)
    assert fresh != stale
    assert _decode(fresh, public_pem)["iat"] == NOW + 7200 - JWT_BACKDATE
    assert not auth.observe_date("not a date", now=NOW)
    assert not auth.observe_date(None, now=NOW)


def test_key_from_a_path(tmp_path: Path, pem_pkcs1: bytes) -> None:
    path = tmp_path / "app.private-key.pem"
    path.write_bytes(pem_pkcs1)
    assert AppAuth(1, str(path)).jwt(now=NOW)


def test_pem_with_escaped_newlines_from_an_env_var(pem_pkcs8: bytes) -> None:
    escaped = pem_pkcs8.decode().replace("\n", "\\n")
    assert AppAuth(1, escaped).jwt(now=NOW)


def test_a_base64_encoded_pem_loads(pem_pkcs8: bytes) -> None:
    """As Probot takes it: the PEM base64-encoded into one line of a variable."""
    assert AppAuth(1, base64.b64encode(pem_pkcs8).decode()).jwt(now=NOW)


@pytest.mark.parametrize("text", ["x" * 300, "LS0t" + "A" * 3000])
def test_long_text_that_is_no_key_is_a_config_error_without_it(text: str) -> None:
    """A name too long for a path raised `OSError` from `is_file()`, with the text
    (a mangled key, say) in its message."""
    with pytest.raises(ConfigError, match="neither PEM text nor a path") as caught:
        load_private_key(text)
    assert text[:40] not in str(caught.value)


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "empty"),
        ("/no/such/file.pem", "neither PEM text nor a path"),
        ("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----", "not a valid PEM"),
    ],
)
def test_bad_keys_fail_with_a_config_error(key: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as caught:
        load_private_key(key)
    # No chained traceback from deep inside cryptography.
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or caught.value.__suppress_context__


def test_a_non_rsa_key_is_refused() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ConfigError, match="not an RSA key"):
        load_private_key(pem)


def test_repr_never_shows_the_key(pem_pkcs8: bytes) -> None:
    auth = AppAuth(7, pem_pkcs8)
    text = repr(auth)
    assert "PRIVATE" not in text and "7" in text


def test_redact_shows_only_the_ends() -> None:
    token = "ghs_16C7e42F292c6912E7710c838347Ae178B4a"
    assert redact(token) == "ghs_…8B4a"
    assert redact("short") == "<redacted>"
    assert redact("x" * 15) == "<redacted>"  # under 16: its ends would be most of it
    assert redact("abcd" + "x" * 8 + "wxyz") == "abcd…wxyz"
    assert redact(None) == "<none>"


def test_installation_token_from_githubs_answer() -> None:
    data = {
        "token": "ghs_16C7e42F292c6912E7710c838347Ae178B4a",
        "expires_at": "2016-07-11T22:14:10Z",
        "permissions": {"issues": "write", "contents": "read"},
        "repository_selection": "selected",
    }
    token = InstallationToken.from_response(data, installation_id=9, now=1468274050.0)
    assert token.expires_at == 1468275250.0
    assert token.permissions == {"issues": "write", "contents": "read"}
    assert token.repository_selection == "selected"
    assert not token.needs_refresh(token.expires_at - 301)
    assert token.needs_refresh(token.expires_at - 300)
    assert token.needs_refresh(token.expires_at - 60, margin=120)
    assert token.is_fresh(1468274052.0) and not token.is_fresh(1468274056.0)
    assert token.is_fresh(1468274054.9) and not token.is_fresh(1468274055.0)  # 5 s
    secret = str(data["token"])
    assert secret not in repr(token) and secret not in str(token)
    copy = pickle.loads(pickle.dumps(token))  # noqa: S301 - our own bytes
    assert copy.token == token.token and copy.expires_at == token.expires_at


def test_installation_token_of_any_length_is_accepted() -> None:
    long_token = "ghs_" + "x" * 400
    token = InstallationToken.from_response(
        {"token": long_token, "expires_at": "2030-01-01T00:00:00Z"}
    )
    assert token.token == long_token


def test_installation_token_answer_without_token_is_refused() -> None:
    with pytest.raises(ValueError, match="lacks"):
        InstallationToken.from_response({"expires_at": "2030-01-01T00:00:00Z"})
    with pytest.raises(ValueError, match="lacks"):
        InstallationToken.from_response({"token": "", "expires_at": "2030-01-01T00:00:00Z"})


@pytest.mark.parametrize(
    ("status", "message", "expected"),
    [
        (
            401,
            "'Expiration time' claim ('exp') must be a numeric value representing the "
            "future time at which the assertion expires",
            True,
        ),
        (
            401,
            "'Issued at' claim ('iat') must be an Integer representing the time that "
            "the assertion was issued",
            True,
        ),
        (401, "A JSON web token could not be decoded", False),
        (403, "'exp' claim", False),
    ],
)
def test_clock_errors_are_recognised(status: int, message: str, expected: bool) -> None:
    assert is_clock_error(status, message) is expected
