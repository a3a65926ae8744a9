"""What tests call on a `FakeGitHub` to arrange state and to look at it afterwards."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ghbot.errors import UsageError
from ghbot.testing.state import Installation

if TYPE_CHECKING:
    from collections import deque

    from ghbot.testing.deliveries import Deliveries
    from ghbot.testing.identity import Identities, Quotas
    from ghbot.testing.server import RecordedRequest
    from ghbot.testing.state import Repo, Store

__all__ = ["Setup"]


class Setup:
    """Arrange installations, repositories, issues, tokens and deliveries; inspect them."""

    store: Store
    identities: Identities
    quotas: Quotas
    deliveries: Deliveries
    requests: deque[RecordedRequest]
    recorded: int

    def add_installation(
        self,
        installation_id: int | None = None,
        account: str = "octo-org",
        repositories: Iterable[str] = ("hello-world",),
        *,
        permissions: dict[str, str] | None = None,
    ) -> Installation:
        """Install the app on `account` for `repositories` (names or `owner/name`)."""
        return self.store.add_installation(installation_id, account, repositories, permissions)

    def add_repository(self, full_name: str, installation_id: int) -> dict[str, Any]:
        """Add `owner/name` to an installation; returns the repository object."""
        return self.store.add_repo(full_name, installation_id).data

    def rename_repository(self, full_name: str, new_full_name: str) -> dict[str, Any]:
        """Rename a repository: the old name then answers 301 (reads) or 307 (writes)."""
        return self.store.rename(full_name, new_full_name).data

    def add_issue(
        self, full_name: str, title: str, body: str | None = None, labels: Iterable[str] = ()
    ) -> dict[str, Any]:
        """Open an issue; returns it as GitHub would."""
        repo = self._repo(full_name)
        issue = self.store.make_issue(repo, title, body, self.store.bot)
        issue["labels"] = [self.store.label(repo, name) for name in labels]
        return issue

    def add_file(self, full_name: str, path: str, text: str) -> None:
        """Put a file with `text` at `path` on the repository's default branch."""
        self._repo(full_name).files[path.strip("/")] = text

    def add_comment(self, full_name: str, number: int, body: str) -> dict[str, Any]:
        """Comment on issue `number` (`UsageError` when the fake lacks it)."""
        issue = self.issue(full_name, number)
        return self.store.make_comment(self._repo(full_name), issue, body, self.store.bot)

    def add_pull_request(
        self,
        full_name: str,
        title: str,
        *,
        head: str = "feature",
        head_sha: str = "a" * 40,
        base: str = "main",
    ) -> dict[str, Any]:
        """Open a pull request (it takes the next issue number)."""
        return self.store.make_pull(self._repo(full_name), title, head, head_sha, base)

    def create_token(
        self,
        installation_id: int,
        *,
        repositories: Iterable[str] | None = None,
        lifetime: float | None = None,
    ) -> str:
        """Issue an installation token directly, as if exchanged through the API: it
        lasts `lifetime` s, by default the fake's `token_lifetime`."""
        inst = self.store.installations[installation_id]
        ids = None
        if repositories is not None:
            ids = [self._repo(name).id for name in repositories]
        return self.identities.issue(inst, ids, lifetime=lifetime).token

    def add_delivery(
        self, event: str, payload: dict[str, Any] | None = None, **kw: Any
    ) -> dict[str, Any]:
        """Record a webhook delivery as sent (`status_code` ≥ 300 for a failed one)."""
        return self.deliveries.add(event, payload, **kw)

    async def send_delivery(self, event: str, payload: dict[str, Any], **kw: Any) -> dict[str, Any]:
        """Send a webhook to `webhook_url`, signed, and record the attempt."""
        return await self.deliveries.send(event, payload, **kw)

    @property
    def redeliveries(self) -> list[dict[str, Any]]:
        """The redelivery attempts made through `POST …/attempts`."""
        return [d for d in self.deliveries.attempts if d["redelivery"]]

    def issue(self, full_name: str, number: int) -> dict[str, Any]:
        """Return issue `number` of `owner/name` (`UsageError` when either is absent)."""
        issue = self._repo(full_name).issues.get(number)
        if issue is None:
            raise UsageError(f"no issue {number} in {full_name!r} in the fake")
        return issue

    def comments(self, full_name: str, number: int) -> list[dict[str, Any]]:
        """Return the comments on issue `number`, oldest first."""
        return self._repo(full_name).comments.get(number, [])

    def set_rate_limit(
        self, installation_id: int, remaining: int, *, resource: str = "core"
    ) -> None:
        """Set what is left of an installation's hourly quota (0: the next call gets 403)."""
        self.quotas.get(f"installation:{installation_id}", resource).remaining = remaining

    def rate_limit(self, installation_id: int, resource: str = "core") -> int:
        """Return what is left of an installation's hourly quota."""
        return self.quotas.get(f"installation:{installation_id}", resource).remaining

    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        """Return the recorded requests for `path` (exact), optionally of one method."""
        return [
            r for r in self.requests if r.path == path and (method is None or r.method == method)
        ]

    def requests_since(self, count: int) -> list[RecordedRequest]:
        """Return the requests recorded after the first `count` (`recorded` then), oldest
        first: those the fake still holds, the last `max_recorded`."""
        newer = min(self.recorded - count, len(self.requests))
        return list(itertools.islice(reversed(self.requests), max(newer, 0)))[::-1]

    def _repo(self, full_name: str) -> Repo:
        owner, _, name = full_name.partition("/")
        repo = self.store.repo(owner, name)
        if repo is None:
            raise UsageError(f"no repository {full_name!r} in the fake")
        return repo
