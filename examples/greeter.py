"""A small bot: greets new issues, labels new pull requests, counts what it greeted.

serve run ghbot.deploy bot=examples.greeter:Greeter

Typed end to end: each handler's event is narrowed to what it subscribes to, and GitHub
is called through the typed REST API (`self.github.rest`); `mypy --strict` checks this
file in `make test`.
"""

from __future__ import annotations

import msgspec

from actors import InstallationActor, on
from ghbot.events import Event
from ghbot.models import IssuesOpened, PullRequestOpened, PullRequestReopened


class Greeted(msgspec.Struct, frozen=True):
    """A domain event: the bot welcomed issue `number` of `repository`."""

    repository: str
    number: int


class Greeter(InstallationActor):
    """Comment on every new issue; label every new or reopened pull request `needs-review`."""

    domain_events = (Greeted,)
    state_type = dict[str, int]
    # Comments on issues, labels on pull requests (both through the Issues API).
    permissions = {"issues": "write", "pull_requests": "write"}

    def initial_state(self) -> dict[str, int]:
        return {}

    def evolve(self, state: dict[str, int], event: msgspec.Struct) -> dict[str, int]:
        if isinstance(event, Greeted):
            return {**state, event.repository: state.get(event.repository, 0) + 1}
        return state

    @on("issues.opened")
    async def welcome(self, event: Event[IssuesOpened]) -> None:
        opener = event.payload.sender.login
        await self.github.rest.issues.create_comment(
            **event.issue(), body=f"Thanks for opening this issue, @{opener}!"
        )
        repository, number = event.payload.repository.full_name, event.payload.issue.number
        self.emit(Greeted(repository=repository, number=number))

    @on("pull_request.opened", "pull_request.reopened")
    async def triage(self, event: Event[PullRequestOpened | PullRequestReopened]) -> None:
        await self.github.rest.issues.add_labels(**event.issue(), labels=["needs-review"])
