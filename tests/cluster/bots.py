"""Bots the cluster tests deploy (importable by Ray's workers)."""

from __future__ import annotations

import asyncio
import os

import ray

from actors import InstallationActor, every, on
from actors.quota import QuotaLease
from ghbot.client import close_pool
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


class Hesitant(InstallationActor):
    """Read the repository, then comment on the new issue with the delivery's GUID: a
    slow read (the fake's "slow" fault) holds the handler before it writes anything."""

    @on("issues.opened")
    async def look_then_greet(self, event: Event) -> None:
        repo = event.repository
        assert repo is not None
        await self.github.request("GET", f"/repos/{repo.full_name}")
        await self.github.request(
            "POST",
            f"/repos/{repo.full_name}/issues/{event.payload.issue.number}/comments",
            json={"body": f"hello {event.delivery_id}"},
        )


class SignedGreeter(Greeter):
    """`Greeter` whose comments also name the process that wrote them ("hello from
    <pid> <GUID>"): `test_sigterm.py` tells an old shard process's from its restart's."""

    @property
    def greeting(self) -> str:  # type: ignore[override]
        return f"hello from {os.getpid()}"


class GreeterV2(Greeter):
    """The next version of `Greeter`: its upgrade test tells the two apart by the text."""

    greeting = "hello again"


@ray.remote(num_cpus=0)
def comment_from_task(lease: QuotaLease, path: str, body: str) -> None:
    """A Ray task: comment once with its part of a quota lease (its own client)."""

    async def comment() -> None:
        try:
            await lease.client().request("POST", path, json={"body": body})
        finally:
            await close_pool()

    asyncio.run(comment())


class FansOut(InstallationActor):
    """Comment on every new issue from two Ray tasks, each with its part of a lease
    of two writes, then once from the handler."""

    max_attempts = 1  # a task refused its write shows as a dead letter, not a retry

    @on("issues.opened")
    async def fan_out(self, event: Event) -> None:
        repo = event.repository
        assert repo is not None
        path = f"/repos/{repo.full_name}/issues/{event.payload.issue.number}/comments"
        async with self.quota.lease(4, writes=2) as lease:
            parts = lease.split(2)
            await asyncio.gather(
                *(
                    comment_from_task.remote(part, path, f"task {n} {event.delivery_id}")
                    for n, part in enumerate(parts)
                )
            )
            lease.report(2)
        await self.github.request("POST", path, json={"body": f"own {event.delivery_id}"})


class Ticker(InstallationActor):
    """Comment on `ticking/repo`'s issue 1 every second, for each installation the
    journal has had a delivery for (in a deployment, `installation.created` is one)."""

    @on("issues.opened")
    async def known(self, event: Event) -> None:
        pass

    @every(1)
    async def tick(self, event: Event) -> None:
        path = "/repos/ticking/repo/issues/1/comments"
        await self.github.request("POST", path, json={"body": f"tick {event.delivery_id}"})
