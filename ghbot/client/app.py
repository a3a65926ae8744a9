"""Act as the GitHub App: installation tokens, installations, webhook deliveries.

Every call here is authenticated with the app's JWT.
https://docs.github.com/en/rest/apps/apps
https://docs.github.com/en/rest/apps/webhooks
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from ghbot import metrics
from ghbot.auth import AppAuth, InstallationToken
from ghbot.breaker import CircuitBreaker
from ghbot.client.credentials import TokenSource
from ghbot.client.github_client import GitHub
from ghbot.client.options import Budgets, ClientOptions
from ghbot.client.response import Response
from ghbot.client.tokens import InstallationTokens
from ghbot.config import Settings
from ghbot.errors import ConfigError, GitHubError, UsageError

__all__ = ["GitHubApp"]


class GitHubApp:
    """A GitHub App: its JWT client (`gh`), its token cache (`tokens`), its clients.

    `tokens` defaults to an `InstallationTokens` cache minting through this app; pass
    another `TokenSource` to mint elsewhere (the Ray app-auth actor). `token_ttl` caps
    how long a token is cached (TOKEN_CACHE_TTL).
    """

    __slots__ = ("auth", "gh", "options", "tokens")

    def __init__(
        self,
        auth: AppAuth,
        *,
        options: ClientOptions | None = None,
        tokens: TokenSource | None = None,
        token_ttl: float = 3300.0,
    ) -> None:
        self.auth = auth
        self.options = options or ClientOptions()
        self.gh = GitHub(auth=auth, options=self.options)
        self.tokens: TokenSource = tokens or InstallationTokens(
            self.create_installation_token, ttl=token_ttl, clock=self.options.clock
        )

    @classmethod
    def from_settings(cls, settings: Settings, **changes: Any) -> GitHubApp:
        """Build the app from `Settings` (app ID, private key, API URL, TTL, retries)."""
        if settings.app_id is None or settings.private_key is None:
            raise ConfigError("the app ID and private key are needed to act as the app")
        options = ClientOptions.from_settings(settings, **changes)
        auth = AppAuth(settings.app_id, settings.private_key, clock=options.clock)
        return cls(auth, options=options, token_ttl=settings.token_cache_ttl)

    def __repr__(self) -> str:
        return f"GitHubApp({self.auth!r}, {self.options.base_url!r})"

    def installation(
        self,
        installation_id: int,
        *,
        budgets: Budgets | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> GitHub:
        """Return a client authenticated as `installation_id` through `tokens`.

        Keep one per installation (an actor's `self.github`): its budgets, breaker and
        write pacing belong to the installation.
        """
        return GitHub(
            tokens=self.tokens,
            installation_id=installation_id,
            options=self.options,
            budgets=budgets,
            breaker=breaker,
        )

    async def create_installation_token(
        self,
        installation_id: int,
        *,
        repositories: Iterable[str] | None = None,
        repository_ids: Iterable[int] | None = None,
        permissions: Mapping[str, str] | None = None,
    ) -> InstallationToken:
        """Exchange the app's JWT for an installation token (valid one hour).

        Narrow it to `repositories` (names, without owner), `repository_ids` and
        `permissions` (e.g. `{"issues": "write"}`) if given. Raises `NotFound` for an
        unknown installation, `ValidationFailed` for a repository it cannot reach.
        https://docs.github.com/en/rest/apps/apps#create-an-installation-access-token-for-an-app
        """
        body: dict[str, Any] = {}
        if repositories is not None:
            body["repositories"] = list(repositories)
        if repository_ids is not None:
            body["repository_ids"] = list(repository_ids)
        if permissions is not None:
            body["permissions"] = dict(permissions)
        path = f"/app/installations/{int(installation_id)}/access_tokens"
        # Token exchanges are not content writes: they are not paced.
        started = time.perf_counter()
        try:
            answer = await self.gh.request("POST", path, json=body or None, pace=False)
            token = _token_of(answer, installation_id, self.options.clock())
        except Exception:
            metrics.token_requests.add(1, metrics.TOKEN_ERROR)
            raise
        finally:
            metrics.token_request_duration.record(time.perf_counter() - started)
        metrics.token_requests.add(1, metrics.TOKEN_OK)
        return token

    def installations(self, *, per_page: int = 100) -> AsyncIterator[dict[str, Any]]:
        """Yield every installation of the app.

        https://docs.github.com/en/rest/apps/apps#list-installations-for-the-authenticated-app
        """
        return self.gh.paginate("/app/installations", params={"per_page": _page(per_page)})

    async def get_installation(self, installation_id: int) -> dict[str, Any]:
        """Return one installation. Raises `NotFound` when the app is not installed there."""
        answer = await self.gh.request("GET", f"/app/installations/{int(installation_id)}")
        data: dict[str, Any] = answer.data
        return data

    def hook_deliveries(self, *, per_page: int = 100) -> AsyncIterator[dict[str, Any]]:
        """Yield the app's webhook deliveries, newest first (cursor pagination via `Link`).

        Each attempt is one item; a redelivery has the same `guid` and
        `redelivery: true`. A delivery failed when its `status` is not `"OK"`.
        https://docs.github.com/en/rest/apps/webhooks#list-deliveries-for-an-app-webhook
        """
        return self.gh.paginate("/app/hook/deliveries", params={"per_page": _page(per_page)})

    async def hook_delivery_pages(
        self, *, per_page: int = 100, resume: str | None = None
    ) -> AsyncIterator[tuple[list[dict[str, Any]], str | None]]:
        """Yield the app's webhook deliveries a page at a time, newest first, each page
        with the URL of the next (None on the last); `resume` starts at such a URL."""
        params = None if resume else {"per_page": _page(per_page)}
        async for page in self.gh.pages(resume or "/app/hook/deliveries", params=params):
            items = page.data if isinstance(page.data, list) else []
            yield items, page.links.get("next")

    async def hook_delivery(self, delivery_id: int) -> dict[str, Any]:
        """Return one delivery attempt with its request and response.

        https://docs.github.com/en/rest/apps/webhooks#get-a-delivery-for-an-app-webhook
        """
        answer = await self.gh.request("GET", f"/app/hook/deliveries/{int(delivery_id)}")
        data: dict[str, Any] = answer.data
        return data

    async def redeliver(self, delivery_id: int) -> None:
        """Ask GitHub to deliver a delivery again (it answers 202 and delivers later).

        https://docs.github.com/en/rest/apps/webhooks#redeliver-a-delivery-for-an-app-webhook
        """
        await self.gh.request("POST", f"/app/hook/deliveries/{int(delivery_id)}/attempts")


def _page(per_page: int) -> int:
    if not 1 <= per_page <= 100:
        raise UsageError(f"per_page must be between 1 and 100, got {per_page}")
    return per_page


def _token_of(answer: Response, installation_id: int, now: float) -> InstallationToken:
    """The token in GitHub's answer; `GitHubError` (without the answer's data, which
    may hold a token) when the answer holds none."""
    data = answer.data
    message = "the access token answer is not a JSON object"
    if isinstance(data, Mapping):
        try:
            return InstallationToken.from_response(data, installation_id=installation_id, now=now)
        except ValueError as exc:
            message = str(exc)
    raise GitHubError(
        answer.status,
        message,
        method=answer.method,
        url=answer.shown(),
        request_id=answer.request_id,
    )
