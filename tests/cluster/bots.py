"""Bots the cluster tests deploy (importable by Ray's workers)."""

from __future__ import annotations

from actors import InstallationActor, on
from ghbot.events import Event


class Echo(InstallationActor):
    """Comment on the issue with the comment's body: the fake records the order."""

    @on("issue_comment.created")
    async def echo(self, event: Event) -> None:
        payload = event.payload
        repo = event.repository
        assert repo is not None
        await self.github.request(
            "POST",
            f"/repos/{repo.full_name}/issues/{payload.issue.number}/comments",
            json={"body": f"echo {payload.comment.body}"},
        )


class Greeter(InstallationActor):
    """Comment on every new issue with the delivery's GUID."""

    max_attempts = 3
    #: The comment's first words (the next version says otherwise).
    greeting = "hello"

    @on("issues.opened")
    async def welcome(self, event: Event) -> None:
        repo = event.repository
        assert repo is not None
        await self.github.request(
            "POST",
            f"/repos/{repo.full_name}/issues/{event.payload.issue.number}/comments",
            json={"body": f"{self.greeting} {event.delivery_id}"},
        )


class GreeterV2(Greeter):
    """The next version of `Greeter`: its upgrade test tells the two apart by the text."""

    greeting = "hello again"
