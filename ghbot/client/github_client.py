"""The async GitHub client: one cheap object per installation over a shared pool.

`GitHub` holds what users call (`request`, `paginate`, `pages`, `graphql`); what a
request goes through below that is in its bases, one module each: one logical request
with its retries and waits (`ghbot.client.retrying`), one HTTP exchange
(`ghbot.client.exchange`), what holds an exchange back (`ghbot.client.admission`).
What the clients of one installation share is `ghbot.client.installation_state`.
https://docs.github.com/en/rest/using-the-rest-api/best-practices-for-using-the-rest-api
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import msgspec
from multidict import CIMultiDict
from yarl import URL

from ghbot.auth import AppAuth
from ghbot.breaker import CircuitBreaker
from ghbot.budget import Lease
from ghbot.client.call import Call, api_origins, build_url, is_mutation, origin, resource_of
from ghbot.client.credentials import Credentials, TokenSource, credentials_for
from ghbot.client.installation_state import InstallationState
from ghbot.client.options import DEFAULT_OPTIONS, Budgets, ClientOptions
from ghbot.client.response import Response, graphql_error, items_of
from ghbot.client.retrying import Retrying
from ghbot.config import Settings, graphql_url
from ghbot.errors import UsageError

if TYPE_CHECKING:
    from ghbot.rest import Rest

__all__ = ["GitHub"]

_encode = msgspec.json.encode


class GitHub(Retrying):
    """A client for GitHub's REST and GraphQL APIs, as one app, installation or token.

    Give at most one of `token` (sent as `token …`), `auth` (an `AppAuth`: the app's
    JWT) or `tokens` with `installation_id` (a `TokenSource`, e.g. `InstallationTokens`
    or the Ray app-auth actor); none means unauthenticated. `options` holds what many
    clients share; `budgets` and `breaker` are the installation's own. An instance
    holds no session (see `ghbot.client.pool`) and costs well under a few KB.
    """

    __slots__ = ("_creds", "_homes", "_lease", "_state", "base_url", "options")

    def __init__(
        self,
        *,
        base_url: str | None = None,
        token: str | None = None,
        auth: AppAuth | None = None,
        tokens: TokenSource | None = None,
        installation_id: int | None = None,
        options: ClientOptions | None = None,
        budgets: Budgets | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.options = options or DEFAULT_OPTIONS
        self.base_url = base_url.rstrip("/") if base_url else self.options.base_url
        #: Where the credentials may go (`request` with an absolute URL elsewhere).
        self._homes = api_origins(self.base_url)
        self._creds: Credentials = credentials_for(
            token=token, auth=auth, tokens=tokens, installation_id=installation_id
        )
        self._state = InstallationState(budgets or Budgets(margin=self.options.margin), breaker)
        self._lease: Lease | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> GitHub:
        """Build a client with options from `Settings`; `kwargs` are `GitHub`'s own."""
        options = kwargs.pop("options", None) or ClientOptions.from_settings(settings)
        return cls(options=options, **kwargs)

    def __repr__(self) -> str:
        return f"GitHub({self.base_url!r}, {self._creds!r})"

    async def __aenter__(self) -> GitHub:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # The pool is shared by every client on the loop; it closes with the loop.
        return None

    @property
    def rest(self) -> Rest:
        """GitHub's REST API, typed (`ghbot.rest`; docs/rest.md), sent through `request()`.

        A new view each time (two small objects, no cycle back to this client).
        """
        from ghbot.rest import Rest  # the package is imported on first use

        return Rest(self)

    @property
    def budgets(self) -> Budgets:
        """The installation's rate-limit budgets."""
        return self._state.budgets

    @property
    def breaker(self) -> CircuitBreaker | None:
        """The installation's circuit breaker, if any."""
        return self._state.breaker

    @property
    def credentials(self) -> Credentials:
        """How this client authenticates (its `kind` and cache `identity`; no secret)."""
        return self._creds

    def with_lease(self, lease: Lease) -> GitHub:
        """Return a client whose core requests spend `lease` (see `Budget.lease`).

        The copy shares credentials, budgets, breaker and pacing with this client; a
        request beyond the lease raises `LeaseExhausted`.
        """
        clone = copy.copy(self)
        clone._lease = lease
        return clone

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        pace: bool | None = None,
    ) -> Response:
        """Send one request and return GitHub's answer, or raise a `ghbot.errors` error.

        `url` is a path under `base_url` or an absolute URL (used verbatim). An absolute
        URL on another host than the API's (`base_url`'s, and uploads.github.com beside
        api.github.com) is sent as a redirect there would be: without the credentials,
        spending no budget, not cached; so a URL taken from a payload's text never
        carries the installation's token away. `json` is
        encoded as the body; `body` sends raw bytes or text instead (set its
        Content-Type in `headers`). Mutating methods are paced per installation unless
        `pace=False`. Retries, rate-limit waits, 401 recovery, redirects and conditional
        requests happen inside (see `ClientOptions`). Raises `GitHubError` subclasses
        for error answers, `Timeout`/`ConnectionFailed` when no answer came,
        `CircuitOpen` when the breaker refuses, and `RateLimited` when the budget is
        spent or GitHub asks for a longer wait than `max_rate_limit_wait`.
        """
        method = method.upper()
        target = build_url(self.base_url, url, params)
        resource = resource_of(target.path, self.base_url)
        call = self._call(method, target, json, body, headers, resource)
        if url.startswith(("https://", "http://")) and origin(target) not in self._homes:
            call.leave()
        return await self._send(call, pace=call.writes if pace is None else pace)

    async def paginate(
        self,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[Any]:
        """Yield the items of every page, following `Link: rel="next"` verbatim.

        Items wrapped in an object (search `items`, `repositories`, …) are found by
        `response.items_of`; pass `key` to name the list. Set `per_page` (≤ 100) in
        `params`.
        """
        async for page in self.pages(url, params=params, headers=headers):
            for item in items_of(page.data, key):
                yield item

    async def pages(
        self,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[Response]:
        """Yield every page's whole `Response`, following `Link: rel="next"` verbatim."""
        next_url: str | None = url
        while next_url:
            page = await self.request("GET", next_url, params=params, headers=headers)
            yield page
            next_url, params = page.links.get("next"), None

    async def graphql(self, query: str, /, **variables: Any) -> Any:
        """Run a GraphQL query or mutation and return its `data`.

        Raises `GraphQLError` when the answer lists errors. A rate limit among them
        (`RATE_LIMITED`, or `RATE_LIMIT`), answered 200, is waited out or raised as
        `RateLimited` as a REST answer's is, classified by its headers and message.
        GHES: `https://HOST/api/v3` → `https://HOST/api/graphql`.
        https://docs.github.com/en/graphql/guides/forming-calls-with-graphql
        """
        target = URL(graphql_url(self.base_url))
        payload = {"query": query, "variables": variables}
        call = self._call("POST", target, payload, None, None, "graphql")
        call.writes = is_mutation(query)
        answer = await self._send(call, pace=call.writes)
        data = answer.data if isinstance(answer.data, dict) else {}
        if data.get("errors"):
            raise graphql_error(data, url=str(target), request_id=answer.request_id)
        return data.get("data")

    # --- one logical request --------------------------------------------------------

    def _call(
        self,
        method: str,
        target: URL,
        json: Any,
        body: bytes | str | None,
        headers: Mapping[str, str] | None,
        resource: str | None,
    ) -> Call:
        if target.user is not None and self._creds.kind != "none":
            shown = target.with_user(None)
            message = f"{shown} carries a user: send it with a client without credentials"
            raise UsageError(message)
        # Header names are case-insensitive: a caller's `accept` replaces the default
        # `Accept`, not goes beside it, and `Authorization` is one header to drop.
        sent: CIMultiDict[str] = CIMultiDict(self.options.base_headers)
        payload: bytes | None = None
        if json is not None:
            payload = _encode(json)
            sent["Content-Type"] = "application/json; charset=utf-8"
        elif body is not None:
            payload = body.encode() if isinstance(body, str) else body
        if headers:
            sent.update(headers)
        call = Call(method, target, payload, sent, resource)
        etags = self.options.etags
        if method == "GET" and etags is not None and "If-None-Match" not in sent:
            call.cache_key = (self._creds.identity, call.text, sent.get("Accept", ""))
            call.cached = etags.get(call.cache_key)
            if call.cached is not None:
                sent["If-None-Match"] = call.cached.etag
        return call
