"""A bot whose handlers are typed by what they subscribe to; `mypy --strict` checks it.

`tests/unit/test_handlers.py` runs mypy over this file (no `getattr`, no `cast`), and
defines the class, so that `@on` checks each annotation against its names.
"""

from __future__ import annotations

from typing import Any

from actors import InstallationActor, on
from ghbot.events import Event
from ghbot.models import (
    IssueCommentCreated,
    IssuesOpened,
    IssuesPayload,
    PullRequestOpened,
    PullRequestSynchronize,
    PushPayload,
    UnknownPayload,
)


class TypedBot(InstallationActor):
    """Each handler's `event.payload` is the struct of what it subscribed to."""

    seen: list[Any] = []

    @on("issues.opened")
    async def welcome(self, event: Event[IssuesOpened]) -> None:
        issue = event.payload.issue
        self.seen.append((issue.number, issue.title, event.payload.repository.full_name))
        self.seen.append(event.issue()["issue_number"])

    @on("issues")
    async def any_issue(self, event: Event[IssuesPayload]) -> None:
        payload = event.payload
        self.seen.append(payload.repository.owner.login)
        if isinstance(payload, IssuesOpened):
            self.seen.append(payload.issue.number)

    @on("pull_request.opened", "pull_request.synchronize")
    async def check(self, event: Event[PullRequestOpened | PullRequestSynchronize]) -> None:
        pull = event.payload.pull_request
        self.seen.append((pull.head.sha, event.pull_request()["pull_number"]))

    @on("issue_comment.created")
    async def answer(self, event: Event[IssueCommentCreated]) -> None:
        self.seen.append((event.payload.comment.body, event.is_bot, event.repo()["repo"]))

    @on("push")
    async def pushed(self, event: Event[PushPayload]) -> None:
        self.seen.append([commit.id for commit in event.payload.commits])

    @on("sub_issues_v2", strict=False)
    async def newer(self, event: Event[UnknownPayload]) -> None:
        self.seen.append(event.payload.action)

    @on("*")
    async def everything(self, event: Event) -> None:
        self.seen.append(event.qualified_name)
