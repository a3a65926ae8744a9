"""A small bot: greets new issues, labels new pull requests, counts what it greeted.

serve run ghbot.deploy bot=examples.greeter:Greeter
"""

from __future__ import annotations

import msgspec

from actors import InstallationActor, on
from ghbot.events import Event


class Greeted(msgspec.Struct, frozen=True):
    """A domain event: the bot welcomed issue `number` of `repository`."""

    repository: str
    number: int


class Greeter(InstallationActor):
    """Comment on every new issue; label every new pull request `needs-review`."""

    domain_events = (Greeted,)
    state_type = dict[str, int]

    def initial_state(self) -> dict[str, int]:
        return {}

    def evolve(self, state: dict[str, int], event: msgspec.Struct) -> dict[str, int]:
        if isinstance(event, Greeted):
            return {**state, event.repository: state.get(event.repository, 0) + 1}
        return state

    @on("issues.opened")
    async def welcome(self, event: Event) -> None:
        repo = event.repository
        issue = getattr(event.payload, "issue", None)
        if repo is None or issue is None:
            return
        await self.github.request(
            "POST",
            f"/repos/{repo.full_name}/issues/{issue.number}/comments",
            json={"body": f"Thanks for opening this issue, @{issue.user.login}!"},
        )
        self.emit(Greeted(repository=repo.full_name, number=issue.number))

    @on("pull_request.opened", "pull_request.reopened")
    async def triage(self, event: Event) -> None:
        repo = event.repository
        pull = getattr(event.payload, "pull_request", None)
        if repo is None or pull is None:
            return
        await self.github.request(
            "POST",
            f"/repos/{repo.full_name}/issues/{pull.number}/labels",
            json={"labels": ["needs-review"]},
        )
