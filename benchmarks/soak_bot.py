"""The bot `soak.py` deploys: five events handled, each with one comment at the fake.

Every comment ends with the delivery's GUID, so the soak counts effects per delivery.
Events it has no handler for (labels, check suites, workflow runs in the soak's mix)
are journaled and completed at once by the runtime.
"""

from __future__ import annotations

from actors import InstallationActor, on
from ghbot.events import Event


class Soak(InstallationActor):
    """Comment once per handled delivery; the comment ends with the delivery's GUID."""

    async def _comment(self, event: Event, number: int, what: str) -> None:
        repo = event.repository
        assert repo is not None
        await self.github.request(
            "POST",
            f"/repos/{repo.full_name}/issues/{number}/comments",
            json={"body": f"{what} {event.delivery_id}"},
        )

    @on("issues.opened")
    async def welcome(self, event: Event) -> None:
        await self._comment(event, event.payload.issue.number, "Thanks for the issue!")

    @on("issue_comment.created")
    async def answer(self, event: Event) -> None:
        await self._comment(event, event.payload.issue.number, "Noted.")

    @on("pull_request.opened", "pull_request.synchronize")
    async def review(self, event: Event) -> None:
        await self._comment(event, event.payload.pull_request.number, "Checking this change.")

    @on("push")
    async def pushed(self, event: Event) -> None:
        # The repository's tracking issue (number 1) hears of every push.
        await self._comment(event, 1, "Pushed.")
