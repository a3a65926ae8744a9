"""Authenticate as a GitHub App and hold installation tokens, without I/O.

The app signs short-lived JWTs (RS256) with its private key and exchanges them for
installation tokens. Everything here takes `now` (epoch seconds) from the caller or an
injected clock, so it can be tested without sleeping.
https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/generating-a-json-web-token-jwt-for-a-github-app
https://docs.github.com/en/rest/apps/apps#create-an-installation-access-token-for-an-app
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import jwt as pyjwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ghbot import metrics
from ghbot.errors import ConfigError
from ghbot.ratelimit import http_date
from ghbot.telemetry import TOKEN_TYPE, span

__all__ = [
    "JWT_BACKDATE",
    "JWT_LIFETIME",
    "JWT_REUSE_MARGIN",
    "TOKEN_REFRESH_MARGIN",
    "AppAuth",
    "InstallationToken",
    "KeyFile",
    "is_clock_error",
    "load_private_key",
    "redact",
]

#: `iat` is set this far in the past to allow for clock drift.
JWT_BACKDATE = 60
#: `exp` is this far after `iat`; GitHub refuses more than 600.
JWT_LIFETIME = 600
#: A cached JWT is replaced this long before it expires.
JWT_REUSE_MARGIN = 60
#: An installation token is refreshed this long before it expires.
TOKEN_REFRESH_MARGIN = 300.0

Clock = Callable[[], float]


def redact(secret: str | None) -> str:
    """Show a token as its first and last four characters, never more.

    Values under 16 characters show only `<redacted>`, so a short secret is never
    mostly revealed.
    """
    if not secret:
        return "<none>"
    if len(secret) < 16:
        return "<redacted>"
    return f"{secret[:4]}…{secret[-4:]}"


class KeyFile:
    """A private key's file, read again when it changes.

    A secret manager that mounts the key as a file (Kubernetes secrets, Vault agent,
    AWS Secrets Manager's CSI driver) replaces the file on rotation, often through a
    symbolic link swapped: `changed` looks at what the path resolves to (device,
    inode, size, modification time) and returns the new content once it differs.
    """

    __slots__ = ("_seen", "path")

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(os.path.expanduser(os.fspath(path)))
        self._seen = self._signature()

    def _signature(self) -> tuple[int, int, int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns

    def changed(self) -> bytes | None:
        """Return the file's content if it changed since the last look, else None.

        A file that is missing for a moment (being replaced) counts as unchanged.
        """
        seen = self._signature()
        if seen is None or seen == self._seen:
            return None
        self._seen = seen
        try:
            return self.path.read_bytes()
        except OSError:
            return None


def load_private_key(key: str | bytes) -> rsa.RSAPrivateKey:
    """Load an RSA private key from PEM text (PKCS#1 or PKCS#8), that PEM base64-encoded
    (as some put it in an environment variable), or a path to a PEM file.

    Raises `ConfigError` naming what is wrong; the key's text never appears in it.
    """
    pem = _read_pem(key)
    try:
        loaded = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise ConfigError("the private key is encrypted; give GitHub's unencrypted PEM") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(
            "the private key is not a valid PEM private key "
            "(expected '-----BEGIN RSA PRIVATE KEY-----' or '-----BEGIN PRIVATE KEY-----')"
        ) from None
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise ConfigError("the private key is not an RSA key; GitHub Apps sign with RS256")
    return loaded


def _load_counted(key: str | bytes) -> rsa.RSAPrivateKey:
    """`load_private_key`, counting a key that does not load in the auth metrics."""
    try:
        return load_private_key(key)
    except ConfigError:
        metrics.jwt_failures.add(1, metrics.JWT_FAILURE["invalid_key"])
        metrics.auth_failures.add(1, metrics.AUTH_FAILURE["invalid_key"])
        raise


def _read_pem(key: str | bytes) -> bytes:
    if isinstance(key, bytes):
        return key
    text = key.strip()
    if text.startswith("-----BEGIN"):
        # Environment variables often carry the PEM with literal "\n" sequences.
        return text.replace("\\n", "\n").encode()
    if not text:
        raise ConfigError("the private key is empty")
    decoded = _base64_pem(text)
    if decoded is not None:
        return decoded
    path = Path(os.path.expanduser(text))
    try:
        # An OSError here (a name too long: long text that is no path) would name it.
        found = len(text) <= 4096 and path.is_file()
    except OSError:
        found = False
    if not found:
        raise ConfigError("the private key is neither PEM text nor a path to a readable file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"the private key file {str(path)!r} cannot be read: {exc.strerror}"
        ) from None


def _base64_pem(text: str) -> bytes | None:
    """The PEM of a base64-encoded key (one way to put it in a variable), else None."""
    if len(text) < 64 or len(text) > 16384:
        return None
    try:
        decoded = base64.b64decode("".join(text.split()), validate=True)
    except ValueError:
        return None
    return decoded if decoded.lstrip().startswith(b"-----BEGIN") else None


def is_clock_error(status: int, message: str) -> bool:
    """Tell whether a 401 answer to a JWT means the clocks disagree (it names exp or iat)."""
    lowered = message.lower()
    return status == 401 and (
        "'exp'" in lowered
        or "'iat'" in lowered
        or "expiration time" in lowered
        or "issued at" in lowered
    )


class AppAuth:
    """Sign JWTs for one GitHub App.

    `app_id` is the numeric app ID or the client ID (`Iv1.…`, GitHub's recommendation);
    either becomes `iss`. `private_key` is PEM text or a path to the PEM file. The JWT
    is reused until `JWT_REUSE_MARGIN` seconds before it expires.
    """

    __slots__ = ("_cached", "_clock", "_key", "iss", "offset")

    def __init__(
        self, app_id: int | str, private_key: str | bytes, *, clock: Clock = time.time
    ) -> None:
        iss = str(app_id).strip()
        if not iss:
            raise ConfigError("the app ID (or client ID) is empty")
        # GitHub accepts the app ID as a string; PyJWT insists that `iss` is one.
        self.iss = iss
        self._key = _load_counted(private_key)
        self._clock = clock
        #: Seconds to add to the local clock to get GitHub's (from a `Date` header).
        self.offset = 0.0
        self._cached: tuple[str, float] | None = None

    def __repr__(self) -> str:
        return f"AppAuth(iss={self.iss!r})"

    def claims(self, now: float | None = None) -> dict[str, Any]:
        """Return the claims of a JWT made at `now`: `iat` backdated, `exp` ≤ `iat` + 600."""
        at = int((self._clock() if now is None else now) + self.offset)
        iat = at - JWT_BACKDATE
        return {"iat": iat, "exp": iat + JWT_LIFETIME, "iss": self.iss}

    def jwt(self, now: float | None = None) -> str:
        """Return a JWT for the app, the cached one while it has over a minute left."""
        at = (self._clock() if now is None else now) + self.offset
        if self._cached is not None and at < self._cached[1] - JWT_REUSE_MARGIN:
            return self._cached[0]
        claims = self.claims(at - self.offset)
        with span("jwt sign") as current:
            if current.is_recording():
                current.set_attribute(TOKEN_TYPE, "jwt")
            try:
                token = pyjwt.encode(claims, self._key, algorithm="RS256")
            except Exception:
                metrics.jwt_failures.add(1, metrics.JWT_FAILURE["sign_error"])
                raise
        metrics.jwt_generated.add(1)
        self._cached = (token, float(claims["exp"]))
        return token

    def use_key(self, private_key: str | bytes) -> None:
        """Sign with `private_key` (PEM text or a path) from now on: a rotated key.

        The JWT signed with the old key is dropped; installation tokens minted with it
        stay valid at GitHub until they expire. Raises `ConfigError` for a key that
        cannot be used (counted as `invalid_key`), and then keeps the old one.
        """
        self._key = _load_counted(private_key)
        self._cached = None

    def public_key_pem(self) -> bytes:
        """Return the public key in PEM, for verifying this app's JWTs (the fake GitHub)."""
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def forget(self, token: str) -> None:
        """Drop the cached JWT if it is `token` (GitHub refused it): the next is signed anew."""
        if self._cached is not None and self._cached[0] == token:
            self._cached = None

    def observe_date(self, date_header: str | None, now: float | None = None) -> bool:
        """Take GitHub's clock from a response `Date` header; drop the cached JWT.

        Returns whether the offset changed. An unparsable header is ignored.
        """
        server = http_date(date_header)
        if server is None:
            return False
        local = self._clock() if now is None else now
        offset = round(server - local)
        changed = offset != self.offset
        self.offset = float(offset)
        if changed:
            self._cached = None
        return changed


class InstallationToken:
    """An installation access token and what GitHub said about it.

    The token text is in `.token`; `repr` and `str` show only its ends.
    """

    __slots__ = (
        "expires_at",
        "installation_id",
        "minted_at",
        "permissions",
        "repository_selection",
        "token",
    )

    def __init__(
        self,
        token: str,
        expires_at: float,
        *,
        installation_id: int | None = None,
        permissions: Mapping[str, str] | None = None,
        repository_selection: str | None = None,
        minted_at: float | None = None,
    ) -> None:
        self.token = token
        self.expires_at = expires_at
        self.installation_id = installation_id
        self.permissions: dict[str, str] = dict(permissions or {})
        self.repository_selection = repository_selection
        self.minted_at = minted_at

    @classmethod
    def from_response(
        cls,
        data: Mapping[str, Any],
        *,
        installation_id: int | None = None,
        now: float | None = None,
    ) -> InstallationToken:
        """Build a token from GitHub's answer to `POST …/access_tokens`.

        Raises `ValueError` when `token` or `expires_at` is missing or malformed.
        """
        token = data.get("token")
        expires = data.get("expires_at")
        if not isinstance(token, str) or not token or not isinstance(expires, str):
            raise ValueError("the access token answer lacks 'token' or 'expires_at'")
        return cls(
            token,
            datetime.fromisoformat(expires.replace("Z", "+00:00")).timestamp(),
            installation_id=installation_id,
            permissions=data.get("permissions") or {},
            repository_selection=data.get("repository_selection"),
            minted_at=time.time() if now is None else now,
        )

    def needs_refresh(self, now: float, margin: float = TOKEN_REFRESH_MARGIN) -> bool:
        """Tell whether the token expires within `margin` seconds of `now`."""
        return now >= self.expires_at - margin

    def is_fresh(self, now: float, window: float = 5.0) -> bool:
        """Tell whether the token was minted under `window` seconds ago (it may still propagate)."""
        return self.minted_at is not None and now - self.minted_at < window

    def __repr__(self) -> str:
        return (
            f"InstallationToken({redact(self.token)}, installation_id={self.installation_id}, "
            f"expires_at={self.expires_at:.0f})"
        )

    __str__ = __repr__
