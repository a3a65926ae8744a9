"""A bot does not answer itself by default: the ingress → shard → handler path, without Ray.

A delivery whose sender is the app's own bot user (`Event.is_from_this_app`: the app id
from the `X-GitHub-Hook-Installation-Target-ID` header, matched against the comment's
`performed_via_github_app`) reaches only handlers registered with `include_own=True`.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from actors.bot import InstallationActor, on
from actors.shard import ShardCore
from actors.wire import Inbound, Status
from ghbot.auth import AppAuth
from ghbot.client import ClientOptions, GitHubApp
from ghbot.events import Event
from ghbot.journal import Journal
from ghbot.models import IssueCommentCreated
from ghbot.testing import FakeClock, FakeGitHub
from tests.runtime.conftest import COMMENTER_INSTALLATION as INSTALLATION
from tests.runtime.conftest import (
    COMMENTER_REPO,
    FIXTURES,
    VSHARDS,
    AcceptingBatcher,
    bare_ingress,
    batch,
    payload,
    webhook_request,
)

APP_ID = 1  # the fake's app
SLUG = "echo-bot"
COMMENTS = f"/repos/{COMMENTER_REPO}/issues/1/comments"
LABELS = f"/repos/{COMMENTER_REPO}/issues/1/labels"


class Echo(InstallationActor):
    """Answer every new comment with a comment: the loop a bot must not fall into."""

    @on("issue_comment.created")
    async def answer(self, event: Event[IssueCommentCreated]) -> None:
        await self.github.request("POST", COMMENTS, json={"body": "echo"})


class AuditingEcho(Echo):
    """Echo, plus a handler that opts in to the app's own deliveries."""

    @on("issue_comment.created", include_own=True)
    async def audit(self, event: Event[IssueCommentCreated]) -> None:
        await self.github.request("POST", LABELS, json={"labels": ["seen"]})


def comment_by(sender: str, *, via_app: bool) -> bytes:
    """An `issue_comment.created` body; `via_app`: written through this app's token."""
    changes: dict[str, object] = {"sender__login": sender}
    if via_app:
        app = json.loads((FIXTURES / "check_run.completed.json").read_text())["check_run"]["app"]
        changes |= {
            "comment__performed_via_github_app": app | {"id": APP_ID, "slug": SLUG},
            "sender__type": "Bot",
        }
    return payload("issue_comment.created", installation=INSTALLATION, **changes)


async def deliver(bot: type[InstallationActor], bodies: list[bytes]) -> list[Inbound]:
    """Send `bodies` through the ingress, as GitHub does to an app, and return its output."""
    batcher = AcceptingBatcher()
    ingress = bare_ingress(bot, batcher)
    for body in bodies:
        request = webhook_request(
            body,
            x_github_event="issue_comment",
            x_github_hook_installation_target_type="integration",
            x_github_hook_installation_target_id=str(APP_ID),
        )
        assert (await ingress.webhook(request)).status_code == 202
    return batcher.items


async def run(
    bot: type[InstallationActor],
    items: list[Inbound],
    journal: Journal,
    fake: FakeGitHub,
    key: bytes,
) -> list[dict[str, Any]]:
    """Run `items` on a shard of `bot`; return the dead letters it listed at the end."""
    clock = FakeClock()
    app = GitHubApp(
        AppAuth(APP_ID, key, clock=clock),
        options=ClientOptions(base_url=fake.url, clock=clock, sleep=clock.sleep),
    )
    shard = ShardCore(
        range(VSHARDS), VSHARDS, journal, bot, github_for=app.installation, clock=clock
    )
    await shard.start()
    try:
        assert await shard.ingest(batch(*items)) == [Status.ACCEPTED] * len(items)
        await shard.wait_idle()
        return await shard.dead_letters()
    finally:
        await shard.close()


async def test_the_bot_does_not_answer_its_own_comment_by_default(
    journal: Journal, fake: FakeGitHub, pem_pkcs8: bytes
) -> None:
    own = comment_by(f"{SLUG}[bot]", via_app=True)
    human = comment_by("Codertocat", via_app=False)
    items = await deliver(Echo, [own, human])
    assert [item.received.app_id for item in items] == [APP_ID, APP_ID]

    await run(Echo, items, journal, fake, pem_pkcs8)

    assert [r.json for r in fake.requests_to(COMMENTS, "POST")] == [{"body": "echo"}]


async def test_a_handler_that_opts_in_hears_the_app_s_own_deliveries(
    journal: Journal, fake: FakeGitHub, pem_pkcs8: bytes
) -> None:
    own = comment_by(f"{SLUG}[bot]", via_app=True)
    other_app = comment_by("other-bot[bot]", via_app=False)  # another bot: not skipped
    items = await deliver(AuditingEcho, [own, other_app])

    await run(AuditingEcho, items, journal, fake, pem_pkcs8)

    assert len(fake.requests_to(LABELS, "POST")) == 2  # audit: both
    assert len(fake.requests_to(COMMENTS, "POST")) == 1  # answer: only the other bot's


class Seen(msgspec.Struct, frozen=True, tag=True):
    """What `BrokenAudit.audit` records."""


class BrokenAudit(Echo):
    """Its own-deliveries handler records a domain event its `evolve` cannot fold."""

    domain_events = (Seen,)

    @on("issue_comment.created", include_own=True)
    async def audit(self, event: Event[IssueCommentCreated]) -> None:
        self.emit(Seen())

    @on("issue_comment.created", include_own=True)
    async def audit_again(self, event: Event[IssueCommentCreated]) -> None:
        return None

    def evolve(self, state: Any, event: msgspec.Struct) -> Any:
        raise RuntimeError("evolve cannot fold Seen")


async def test_a_give_up_on_the_app_s_own_delivery_dead_letters_no_handler_it_skips(
    journal: Journal, fake: FakeGitHub, pem_pkcs8: bytes
) -> None:
    # `audit` ran, then the delivery failed outside the handlers (its `evolve`): what is
    # left is dead-lettered, and `answer`, which the app's own deliveries never reach,
    # was among it, so replaying it would have answered the app's own comment.
    items = await deliver(BrokenAudit, [comment_by(f"{SLUG}[bot]", via_app=True)])
    dead = await run(BrokenAudit, items, journal, fake, pem_pkcs8)
    assert [d["handler"] for d in dead] == ["audit_again"]  # not `answer`
    assert fake.requests_to(COMMENTS, "POST") == []
