"""Who is calling the fake GitHub: JWT checks, installation tokens, rate-limit buckets.

JWTs are checked as GitHub does (RS256 signature against the app's public key, `iss`,
then `iat` and `exp` against the fake's clock) and answered with GitHub's own error
messages. A signature is verified once per JWT string; the time checks run every time.
https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/generating-a-json-web-token-jwt-for-a-github-app
https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import jwt as pyjwt

from ghbot.testing.state import Caller, Installation

__all__ = [
    "MSG_BAD_CREDENTIALS",
    "MSG_BAD_JWT",
    "MSG_EXP",
    "MSG_EXP_TOO_FAR",
    "MSG_IAT",
    "Grant",
    "Identities",
    "Quota",
    "Quotas",
]

MSG_BAD_CREDENTIALS = "Bad credentials"
MSG_BAD_JWT = "A JSON web token could not be decoded"
MSG_EXP = (
    "'Expiration time' claim ('exp') must be a numeric value representing the future "
    "time at which the assertion expires"
)
MSG_EXP_TOO_FAR = "'Expiration time' claim ('exp') is too far in the future"
MSG_IAT = (
    "'Issued at' claim ('iat') must be an Integer representing the time that the "
    "assertion was issued"
)
#: How far in the future `iat` may be before the fake refuses it (GitHub's is unpublished).
JWT_LEEWAY = 30
#: GitHub refuses an `exp` more than 10 minutes ahead (the fake allows it no leeway).
JWT_MAX_LIFETIME = 600
TOKEN_LIFETIME = 3600


@dataclass(slots=True)
class Grant:
    """An installation token the fake issued."""

    token: str
    installation_id: int
    expires_at: float
    repository_ids: frozenset[int] | None
    permissions: dict[str, str]


#: The base64url of `{"alg":"RS256","typ":"JWT"}`, as a new-format token begins.
_JWT_HEADER = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9"


class Identities:
    """The app's identity (public key, IDs) and the installation tokens issued for it."""

    def __init__(
        self,
        *,
        app_id: int,
        client_id: str | None,
        public_key_pem: bytes | None,
        clock: Callable[[], float],
        token_lifetime: float = TOKEN_LIFETIME,
    ) -> None:
        #: How long the tokens `issue` makes are valid, in seconds, unless it is told.
        self.token_lifetime = token_lifetime
        self.app_id = app_id
        self.issuers = {str(app_id)} | ({client_id} if client_id else set())
        self.public_key = public_key_pem
        #: More public keys the app's JWTs may be signed with: GitHub lets an app have
        #: two keys at once, so that one can be rotated (`FakeGitHub.add_key`).
        self.more_keys: list[bytes] = []
        self.clock = clock
        self.grants: dict[str, Grant] = {}
        self._claims: dict[str, dict[str, Any] | None] = {}

    def issue(
        self,
        installation: Installation,
        repository_ids: Iterable[int] | None = None,
        permissions: dict[str, str] | None = None,
        lifetime: float | None = None,
    ) -> Grant:
        """Issue a token for `installation`, valid `lifetime` s, in the format GitHub
        began issuing in 2026: `ghs_`, the app's ID, and a JWT-like text, about 510
        characters with `.`, `-` and `_` in it (the older format was 40 characters of
        letters and digits: code that assumed it meets the new one here).

        Without `lifetime`, the token lasts `token_lifetime` s (GitHub's: one hour).
        """
        if lifetime is None:
            lifetime = self.token_lifetime
        random = secrets.token_urlsafe
        token = f"ghs_{self.app_id}_{_JWT_HEADER}.{random(250)}.{random(96)}"
        grant = Grant(
            token,
            installation.id,
            self.clock() + lifetime,
            frozenset(repository_ids) if repository_ids is not None else None,
            dict(permissions or installation.permissions),
        )
        self.grants[token] = grant
        return grant

    def check_jwt(self, token: str) -> str | None:
        """Return GitHub's refusal message for the JWT, or None when it is valid now."""
        if token not in self._claims:
            if len(self._claims) > 10_000:
                self._claims.clear()
            self._claims[token] = self._verify(token)
        claims = self._claims[token]
        if claims is None or str(claims.get("iss")) not in self.issuers:
            return MSG_BAD_JWT
        now = self.clock()
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or iat > now + JWT_LEEWAY:
            return MSG_IAT
        if not isinstance(exp, int | float) or exp <= now:
            return MSG_EXP
        if exp > now + JWT_MAX_LIFETIME or exp - iat > JWT_MAX_LIFETIME:
            return MSG_EXP_TOO_FAR
        return None

    def forget_jwts(self) -> None:
        """Check every JWT anew (a key was removed)."""
        self._claims.clear()

    def _verify(self, token: str) -> dict[str, Any] | None:
        if self.public_key is None:
            try:
                claims = pyjwt.decode(token, options={"verify_signature": False})
            except pyjwt.PyJWTError:
                return None
            return claims if isinstance(claims, dict) else None
        for key in (self.public_key, *self.more_keys):
            try:
                claims = pyjwt.decode(
                    token,
                    key,
                    algorithms=["RS256"],
                    options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
                )
            except pyjwt.PyJWTError:
                continue
            return claims if isinstance(claims, dict) else None
        return None

    def caller(
        self, authorization: str | None, installations: dict[int, Installation]
    ) -> Caller | str:
        """Identify the caller from an Authorization header, or return the refusal."""
        if not authorization:
            return Caller("anonymous", "anonymous")
        scheme, _, credential = authorization.partition(" ")
        if scheme.lower() not in ("token", "bearer") or not credential:
            return MSG_BAD_CREDENTIALS
        grant = self.grants.get(credential)
        if grant is not None:
            installation = installations.get(grant.installation_id)
            if installation is None or grant.expires_at <= self.clock():
                return MSG_BAD_CREDENTIALS
            key = f"installation:{grant.installation_id}"
            return Caller("installation", key, credential, installation, grant.repository_ids)
        if credential.count(".") == 2:
            refusal = self.check_jwt(credential)
            return refusal if refusal else Caller("app", "app", credential)
        return MSG_BAD_CREDENTIALS


class Quota:
    """One caller's primary limit for one resource, in hour-long windows."""

    __slots__ = ("limit", "remaining", "reset")

    def __init__(self, limit: int, reset: float) -> None:
        self.limit = limit
        self.remaining = limit
        self.reset = reset

    def headers(self, resource: str) -> dict[str, str]:
        """GitHub's `x-ratelimit-*` headers for this quota."""
        return {
            "x-ratelimit-limit": str(self.limit),
            "x-ratelimit-remaining": str(self.remaining),
            "x-ratelimit-used": str(self.limit - self.remaining),
            "x-ratelimit-reset": str(int(self.reset)),
            "x-ratelimit-resource": resource,
        }


class Quotas:
    """Primary-limit buckets keyed by (caller key, resource); 304s are not counted.

    `enabled` False is GitHub Enterprise Server with rate limits off: the fake then
    sends no `x-ratelimit-*` header and refuses no caller for its primary limit.
    """

    def __init__(
        self, limits: dict[str, int], clock: Callable[[], float], *, enabled: bool = True
    ) -> None:
        self.limits = limits
        self.clock = clock
        self.enabled = enabled
        self._quotas: dict[tuple[str, str], Quota] = {}

    def get(self, key: str, resource: str) -> Quota:
        """Return the caller's quota for `resource`, starting a new window when due."""
        now = self.clock()
        quota = self._quotas.get((key, resource))
        if quota is None or now >= quota.reset:
            default = self.limits.get("default", 5000)
            quota = Quota(self.limits.get(resource, default), float(int(now) + 3600))
            self._quotas[(key, resource)] = quota
        return quota
