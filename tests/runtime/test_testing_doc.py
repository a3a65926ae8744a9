"""docs/testing.md: its Python blocks run as written, and what the page says of the
harness holds (a saved delivery of another installation, the handlers' retries and
their backoff), through `BotHarness` (no Ray) against FakeGitHub.
"""

from __future__ import annotations

import inspect
import json
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import pytest

from actors.bot import InstallationActor, on
from actors.testing import BotHarness
from examples.greeter import Greeter
from ghbot.errors import UsageError
from ghbot.events import Event
from ghbot.models import IssuesClosed
from ghbot.retry import RetryPolicy
from ghbot.testing import FakeGitHub, example_payload
from tests.docs import ROOT, python_blocks
from tests.runtime.test_schedule import Sweeper


def blocks() -> list[str]:
    """The page's ```python blocks, in order."""
    return python_blocks("docs/testing.md")


async def run_block(source: str, names: dict[str, Any]) -> dict[str, Any]:
    """Run a block whose top level awaits (as a test body would) with `names` in scope;
    return its names, the body's locals included."""
    body = textwrap.indent(source + "\nreturn locals()", "    ")
    scope = dict(names)
    exec(f"async def block():\n{body}", scope)  # noqa: S102 - the page's own code
    block = cast(Callable[[], Awaitable[dict[str, Any]]], scope["block"])
    return await block()


def test_the_page_has_the_blocks_these_tests_run() -> None:
    assert [source.split("\n", 1)[0] for source in blocks()] == [
        "from actors.testing import BotHarness",
        "async with BotHarness(Reactor) as bot:",
        "async with BotHarness(Greeter) as bot:",
        "async with BotHarness(Sweeper) as bot:",
    ]


async def test_the_first_example_is_a_test_that_passes() -> None:
    scope: dict[str, Any] = {}
    exec(blocks()[0], scope)  # noqa: S102 - the page's own code
    await scope["test_welcome"]()


async def test_the_retry_after_example_waits_out_a_minute_on_the_harness_clock() -> None:
    done = await run_block(blocks()[2], {"BotHarness": BotHarness, "Greeter": Greeter})
    assert done["bot"].clock() - done["started"] >= 60


async def test_the_scheduled_example_runs_the_hourly_handler_once() -> None:
    done = await run_block(blocks()[3], {"BotHarness": BotHarness, "Sweeper": Sweeper})
    assert len(done["done"].requests_to("/repos/Codertocat/Hello-World/issues", "POST")) == 1


async def test_a_saved_delivery_of_another_installation_and_repository(tmp_path: Path) -> None:
    """ "a payload you saved from a real delivery", with `BotHarness(MyBot,
    installation_id=..., repository=...)` naming its installation and repository."""
    saved = example_payload(
        "issues.opened",
        issue__number=7,
        installation__id=4711,
        repository__full_name="octo-org/tools",
        repository__name="tools",
        repository__owner__login="octo-org",
    )
    file = tmp_path / "saved-delivery.json"
    file.write_text(json.dumps(saved))
    async with BotHarness(Greeter, installation_id=4711, repository="octo-org/tools") as bot:
        done = await bot.deliver("issues", file)
        [comment] = done.requests_to("/repos/octo-org/tools/issues/7/comments", "POST")
        assert comment.json["body"] == "Thanks for opening this issue, @Codertocat!"
        assert done.dead_letters == []
        assert await bot.state() == {"octo-org/tools": 1}
    # Without them the harness says which to pass (its token exchange answered 404, and
    # the handler was dead-lettered for it).
    async with BotHarness(Greeter) as bot:
        with pytest.raises(UsageError) as refused:
            await bot.deliver("issues", file)
        assert "installation_id=4711, repository='octo-org/tools'" in str(refused.value)
        assert not bot.fake.requests  # nothing was sent


class FailsTwice(InstallationActor):
    """Fails its first two tries; `max_attempts` is the number of tries in all."""

    max_attempts = 3
    tries = 0

    @on("issues.opened")
    async def flaky(self, event: Event) -> None:
        FailsTwice.tries += 1
        if FailsTwice.tries <= 2:
            raise RuntimeError("not yet")


async def test_max_attempts_counts_every_try_and_retry_sets_the_backoff() -> None:
    """ "tried `max_attempts` times in all", and `BotHarness(MyBot,
    retry=RetryPolicy(...))` sets the waits between tries."""
    FailsTwice.tries = 0
    async with BotHarness(FailsTwice, retry=RetryPolicy(base=40.0, cap=40.0)) as bot:
        done = await bot.deliver("issues.opened")
        assert FailsTwice.tries == 3 and done.dead_letters == []
        backoffs = [s for s in bot.clock.sleeps if s >= 1.0]
        assert len(backoffs) == 2 and all(20.0 <= s <= 40.0 for s in backoffs), backoffs
    FailsTwice.tries = -10  # fails every time from here on: 3 tries, then a dead letter
    async with BotHarness(FailsTwice) as bot:
        done = await bot.deliver("issues.opened")
        [dead] = done.dead_letters
        assert dead["attempts"] == 3 and FailsTwice.tries == -7
        assert all(s <= 1.0 for s in bot.clock.sleeps)  # the default: 0.5 s, doubling


class Reactor(InstallationActor):
    """Reacts +1 to each closed issue: an operation the fake does not implement."""

    @on("issues.closed")
    async def react(self, event: Event[IssuesClosed]) -> None:
        repository, number = event.payload.repository, event.payload.issue.number
        assert number is not None  # GitHub's description leaves it optional here
        await self.github.rest.reactions.create_for_issue(
            owner=repository.owner.login, repo=repository.name, issue_number=number, content="+1"
        )


async def test_the_stub_example_answers_an_operation_the_fake_lacks() -> None:
    names = {"BotHarness": BotHarness, "Reactor": Reactor, "example_payload": example_payload}
    done = await run_block(blocks()[1], names)
    assert done["reaction"].method == "POST"


def test_the_page_states_the_stubs_signature() -> None:
    """The page gives `FakeGitHub.stub`'s parameters as the method has them: their
    defaults, the keyword-only ones, `auth`'s values, and `{name*}`."""
    parameters = list(inspect.signature(FakeGitHub.stub).parameters.values())[1:]
    spelled = []
    for parameter in parameters:
        if parameter.kind is parameter.KEYWORD_ONLY and "*" not in spelled:
            spelled.append("*")
        default = parameter.default
        shown = "" if default is parameter.empty else "=" + json.dumps(default)
        spelled.append(parameter.name + shown.replace("null", "None"))
    page = " ".join((ROOT / "docs" / "testing.md").read_text().split())
    assert f"bot.fake.stub({', '.join(spelled)})" in page
    for text in ('auth="token"', 'auth="jwt"', 'auth="any"', "`{name*}`"):
        assert text in page, text


async def test_without_the_stub_the_dead_letter_names_what_the_fake_lacks() -> None:
    async with BotHarness(Reactor) as bot:
        closed = example_payload("issues.opened", action="closed", issue__state="closed")
        done = await bot.deliver("issues", closed)
    [dead] = done.dead_letters
    assert dead["error_type"] == "ServerError"
    assert "FakeGitHub does not implement POST /repos/{owner}/{repo}/issues/" in dead["error"]
