"""The bot of the process-kill suites: its effect at the fake GitHub is idempotent.

Imported by Ray's workers (`tests.faults.labeler:Labeler`), so it imports no test
fixture.
"""

from __future__ import annotations

from actors import InstallationActor, on
from ghbot.events import Event


class Labeler(InstallationActor):
    """Label the new issue with the delivery's GUID: one label per delivery.

    A shard killed between the label and its journaled completion runs the delivery
    again after its restart (at least once); adding a label the issue has changes
    nothing, so the effect stays one, in the order the labels were first added. The
    suites count the requests too, to show how many runs were repeated.
    """

    max_attempts = 3

    @on("issues.opened")
    async def label(self, event: Event) -> None:
        repo = event.repository
        assert repo is not None
        number = event.payload.issue.number
        await self.github.request(
            "POST",
            f"/repos/{repo.full_name}/issues/{number}/labels",
            json={"labels": [event.delivery_id]},
        )
