"""The bot bench_e2e.py deploys: the same work as floor_bot.py, as an InstallationActor."""

from __future__ import annotations

from actors import InstallationActor, on
from ghbot.events import Event


class Thanks(InstallationActor):
    """Comment on every new issue; the comment ends with the delivery's GUID."""

    @on("issues.opened")
    async def thank(self, event: Event) -> None:
        repo = event.repository
        assert repo is not None
        await self.github.request(
            "POST",
            f"/repos/{repo.full_name}/issues/{event.payload.issue.number}/comments",
            json={"body": f"Thanks for opening this issue! {event.delivery_id}"},
        )
