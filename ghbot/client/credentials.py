"""How a client authenticates, and what it does when GitHub answers 401.

- no credentials: unauthenticated requests (60 an hour on github.com);
- a plain token (a PAT or an installation token you hold): `Authorization: token …`;
- an app (`AppAuth`): `Authorization: Bearer <JWT>`; a 401 naming `exp`/`iat` means
  the clocks disagree (or the JWT expired while its request waited), so the `Date`
  header, when there is one, corrects the clock, and the request is sent once more
  with a JWT signed anew (each request once, whether or not its `Date` changed the
  offset: requests sent with the same skewed JWT are each retried);
- an installation (a `TokenSource` and an id): the token is fetched from the source
  for each request (a cache hit). A 401 is judged by the token it refused: one the
  source has replaced since is retried at once with the current one; one minted
  within 5 s is propagation and is retried after a short backoff (0.5, 1 and 2 s,
  then it is final); any other 401 forces one fresh token and a retry, whose own
  401s are then propagation.

https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/authenticating-as-a-github-app-installation
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Protocol

from ghbot import metrics
from ghbot.auth import AppAuth, InstallationToken, is_clock_error, redact
from ghbot.errors import UsageError

log = logging.getLogger("ghbot.client.auth")


def _refused(credentials: Credentials, failure: str, message: str) -> None:
    """Log at ERROR that GitHub refused `credentials` for good (no retry left)."""
    log.error(
        "GitHub refused the %s credentials (%s): %s",
        credentials.kind,
        failure,
        message[:200],
        extra={"error_type": "Unauthorized", "http_status": 401},
    )


__all__ = ["AuthRetry", "Credentials", "TokenSource", "credentials_for"]

#: Backoffs before retrying a 401 on a token minted under 5 s ago.
FRESH_TOKEN_BACKOFF = (0.5, 1.0, 2.0)
#: How many times one request is sent again at once because the token it was refused
#: with had been replaced meanwhile (a bound, not a number reached in practice).
REPLACED_RETRIES = 3
#: How many of the tokens an installation's requests were sent with are remembered,
#: to judge a 401 by the token it refused.
RECENT_TOKENS = 4


class TokenSource(Protocol):
    """Anything that hands out installation tokens (a cache, the Ray app-auth actor).

    `force=True` asks for a token other than the one just refused, unless the current
    one is so fresh that the refusal is propagation delay. Without `force`, `get`
    hands out the same token until it is replaced: a 401 is judged by the token it
    refused, and one the source has replaced since is not forced again (a source that
    made a new token at every `get` would never be forced).
    """

    async def get(self, installation_id: int, *, force: bool = False) -> InstallationToken: ...


class AuthRetry:
    """What one request has already tried after 401 answers."""

    __slots__ = ("clock_fixed", "fresh_retries", "refreshed", "replaced")

    def __init__(self) -> None:
        self.clock_fixed = False
        self.fresh_retries = 0
        self.refreshed = False
        #: Retries with a token that replaced the one refused, sent before it was.
        self.replaced = 0


class Credentials:
    """No credentials; the base of the others. `identity` keys the ETag cache."""

    __slots__ = ("identity",)
    kind = "none"

    def __init__(self, identity: str = "anonymous") -> None:
        self.identity = identity

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.identity})"

    async def authorization(self) -> str | None:
        """Return the `Authorization` header value for the next request, or None."""
        return None

    async def recover(
        self,
        retry: AuthRetry,
        message: str,
        headers: Mapping[str, str],
        now: float,
        sent: str | None = None,
    ) -> float | None:
        """Decide what to do after a 401: seconds to wait before retrying, or None to raise.

        `sent` is the `Authorization` value the refused request carried (None: not known).
        """
        metrics.auth_failures.add(1, metrics.AUTH_FAILURE["bad_credentials"])
        _refused(self, "bad_credentials", message)
        return None


class StaticToken(Credentials):
    """A token the caller holds; sent as `Authorization: token …`, never refreshed."""

    __slots__ = ("_header",)
    kind = "token"

    def __init__(self, token: str) -> None:
        digest = hashlib.sha256(token.encode()).hexdigest()[:16]
        super().__init__(f"token:{digest}")
        self._header = f"token {token}"

    def __repr__(self) -> str:
        return f"StaticToken({redact(self._header[6:])})"

    async def authorization(self) -> str | None:
        return self._header


class AppJWT(Credentials):
    """The app itself: a JWT signed by `AppAuth`, reused until a minute before expiry."""

    __slots__ = ("auth",)
    kind = "app"

    def __init__(self, auth: AppAuth) -> None:
        super().__init__(f"app:{auth.iss}")
        self.auth = auth

    async def authorization(self) -> str | None:
        return f"Bearer {self.auth.jwt()}"

    async def recover(
        self,
        retry: AuthRetry,
        message: str,
        headers: Mapping[str, str],
        now: float,
        sent: str | None = None,
    ) -> float | None:
        skew = is_clock_error(401, message)
        failure = "clock_skew" if skew else "bad_credentials"
        metrics.auth_failures.add(1, metrics.AUTH_FAILURE[failure])
        metrics.jwt_failures.add(1, metrics.JWT_FAILURE["clock_skew" if skew else "refused"])
        if retry.clock_fixed or not skew:
            _refused(self, failure, message)
            return None
        # Once per request, whether or not the offset changes: another request sent
        # with the same JWT may have corrected it already, or the JWT expired while
        # its request waited. A changed offset drops the cached JWT; so does the
        # refusal of the cached one, so the retry is signed anew either way.
        self.auth.observe_date(headers.get("date"))
        if sent is not None and sent.startswith("Bearer "):
            self.auth.forget(sent[7:])
        retry.clock_fixed = True
        return 0.0


class InstallationCredentials(Credentials):
    """An installation: tokens come from a `TokenSource` (cached, single-flight)."""

    __slots__ = ("_recent", "installation_id", "source")
    kind = "installation"

    def __init__(self, source: TokenSource, installation_id: int) -> None:
        super().__init__(f"installation:{installation_id}")
        self.source = source
        self.installation_id = installation_id
        #: The last few tokens handed out, by their text: a 401 is judged by its own.
        self._recent: dict[str, InstallationToken] = {}

    async def authorization(self) -> str | None:
        token = await self.source.get(self.installation_id)
        recent = self._recent
        if token.token not in recent:
            recent[token.token] = token
            if len(recent) > RECENT_TOKENS:
                del recent[next(iter(recent))]
        return f"token {token.token}"

    async def recover(
        self,
        retry: AuthRetry,
        message: str,
        headers: Mapping[str, str],
        now: float,
        sent: str | None = None,
    ) -> float | None:
        current = await self.source.get(self.installation_id)
        refused = current
        if sent is not None and sent.startswith("token "):
            text = sent[6:]
            if text != current.token:
                # Not among the last few handed out: its expiry is not known.
                refused = self._recent.get(text) or InstallationToken(text, float("inf"))
        fresh = refused.is_fresh(now)
        failure = (
            "propagation"
            if fresh
            else "expired_token"
            if now >= refused.expires_at
            else "bad_credentials"
        )
        metrics.auth_failures.add(1, metrics.AUTH_FAILURE[failure])
        if refused is not current:
            # Refused a token the source has replaced since (another request's 401
            # refreshed it, or it expired): the current one is tried at once.
            if retry.replaced >= REPLACED_RETRIES:
                _refused(self, failure, message)
                return None
            retry.replaced += 1
            return 0.0
        if fresh:
            if retry.fresh_retries >= len(FRESH_TOKEN_BACKOFF):
                _refused(self, failure, message)
                return None
            retry.fresh_retries += 1
            return FRESH_TOKEN_BACKOFF[retry.fresh_retries - 1]
        if retry.refreshed:
            _refused(self, failure, message)
            return None
        retry.refreshed = True
        await self.source.get(self.installation_id, force=True)
        return 0.0


def credentials_for(
    *,
    token: str | None = None,
    auth: AppAuth | None = None,
    tokens: TokenSource | None = None,
    installation_id: int | None = None,
) -> Credentials:
    """Pick the credentials for the arguments given; raise `UsageError` for a mix, or
    for an empty `token` (an unset variable read as "": it would be sent as nothing)."""
    if token is not None and not token.strip():
        raise UsageError("token= is empty: give a token, or leave token= out to send none")
    given = [
        name for name, v in (("token", token), ("auth", auth), ("tokens", tokens)) if v is not None
    ]
    if len(given) > 1:
        raise UsageError(f"give one of token=, auth= or tokens=, not {' and '.join(given)}")
    if (tokens is None) != (installation_id is None):
        raise UsageError("tokens= and installation_id= go together")
    if token is not None:
        return StaticToken(token)
    if auth is not None:
        return AppJWT(auth)
    if tokens is not None and installation_id is not None:
        return InstallationCredentials(tokens, installation_id)
    return Credentials()
