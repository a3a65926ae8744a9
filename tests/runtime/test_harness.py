"""`actors.testing.BotHarness`: a bot's deliveries in-process, without Ray, against FakeGitHub."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import pytest

from actors import InstallationActor, every, on
from actors.runtime_events import HandlerFailed, decode_runtime, stream_name
from actors.testing import VSHARDS, BotHarness
from actors.wire import vshard_of
from examples.greeter import Greeted, Greeter
from ghbot.errors import JournalUnavailable, RateLimited, UsageError
from ghbot.events import Event
from ghbot.testing import FakeClock, FakeGitHub, app_key_pair, example_names, example_payload

ROOT = Path(__file__).resolve().parents[2]

HELLO = "/repos/Codertocat/Hello-World"


async def failed_attempts(bot: BotHarness) -> list[HandlerFailed]:
    """The failed attempts the installation's stream holds, in order."""
    records = await bot.shard.journal.read(
        stream_name(bot.installation_id), shard=vshard_of(bot.installation_id, VSHARDS)
    )
    return [
        e for e in (decode_runtime(r.type, r.data) for r in records)
        if isinstance(e, HandlerFailed)
    ]  # fmt: skip


async def test_a_shipped_example_through_the_example_bot() -> None:
    async with BotHarness(Greeter) as bot:
        done = await bot.deliver("issues.opened", issue__number=3)
        assert done.status == "accepted" and done.dead_letters == []
        [comment] = done.requests_to(f"{HELLO}/issues/3/comments", "POST")
        assert comment.json["body"] == "Thanks for opening this issue, @Codertocat!"
        assert done.domain_events == [Greeted(repository="Codertocat/Hello-World", number=3)]
        assert await bot.state() == {"Codertocat/Hello-World": 1}

        pull = await bot.deliver("pull_request.opened", number=9, pull_request__number=9)
        assert [(r.method, r.path, r.json) for r in pull.requests] == [
            ("POST", f"{HELLO}/issues/9/labels", {"labels": ["needs-review"]})
        ]
        assert pull.domain_events == []
        assert await bot.state() == {"Codertocat/Hello-World": 1}


class PullReader(InstallationActor):
    @on("issue_comment.created")
    async def read(self, event: Event) -> None:
        number = json.loads(event.raw)["issue"]["number"]
        await self.github.request("GET", f"{HELLO}/pulls/{number}")


async def test_a_comment_on_a_pull_request_finds_that_pull_request() -> None:
    """`issue_comment` on a pull request names it by `issue.pull_request`: the harness
    made an issue for it, and the handler's read of the pull request got 404s."""
    payload = example_payload("issue_comment.created")
    payload["issue"]["number"] = 7
    payload["issue"]["pull_request"] = {"url": f"https://api.github.com{HELLO}/pulls/7"}
    async with BotHarness(PullReader) as bot:
        done = await bot.deliver("issue_comment", payload)
        assert done.dead_letters == []
        assert len(done.requests_to(f"{HELLO}/pulls/7", "GET")) == 1  # found at once


async def test_payloads_from_a_dict_bytes_or_a_file_and_duplicates(tmp_path: Path) -> None:
    data = example_payload("issues.opened", issue__number=4)
    file = tmp_path / "opened.json"
    file.write_text(json.dumps(example_payload("issues.opened", issue__number=5)))
    async with BotHarness(Greeter) as bot:
        first = await bot.deliver("issues", data, delivery_id="guid-1")
        again = await bot.deliver("issues", json.dumps(data).encode(), delivery_id="guid-1")
        from_file = await bot.deliver("issues", file)
        assert (first.status, again.status, from_file.status) == (
            "accepted",
            "duplicate",
            "accepted",
        )
        assert again.requests == [] and again.domain_events == []
        assert from_file.requests_to(f"{HELLO}/issues/5/comments", "POST")
        assert await bot.state() == {"Codertocat/Hello-World": 2}


class Flaky(InstallationActor):
    """Fails every time: retried `max_attempts` times, then dead-lettered."""

    max_attempts = 4
    calls = 0

    @on("issues.opened")
    async def fail(self, event: Event) -> None:
        Flaky.calls += 1
        raise RuntimeError("always")


async def test_retries_run_at_once_on_the_harness_clock_then_dead_letter() -> None:
    Flaky.calls = 0
    async with BotHarness(Flaky) as bot:
        started = bot.clock()
        done = await bot.deliver("issues.opened")
        assert Flaky.calls == 4
        [dead] = done.dead_letters
        assert (dead["handler"], dead["attempts"], dead["error_type"]) == (
            "fail",
            4,
            "RuntimeError",
        )
        assert bot.clock() > started  # the backoff moved the harness clock, nobody waited


async def test_bad_input_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="not an InstallationActor"):
        BotHarness(dict)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="needs the app's private_key"):
        BotHarness(Greeter, fake=FakeGitHub())
    async with BotHarness(Greeter) as bot:
        with pytest.raises(UsageError, match=r"no example payload 'issues\.opend'"):
            await bot.deliver("issues.opend")
        with pytest.raises(UsageError, match="a webhook payload is a JSON object"):
            await bot.deliver("issues", b"[1, 2]")
        with pytest.raises(UsageError, match="no object at 'nothing'"):
            await bot.deliver("issues.opened", nothing__here=1)
        with pytest.raises(UsageError, match="issue__numbr: the payload has no 'numbr'"):
            await bot.deliver("issues.opened", issue__numbr=1)


def test_example_payloads_ship_with_ghbot() -> None:
    names = example_names()
    assert len(names) == 62 and "issues.opened" in names and "push" in names
    data = example_payload("push", installation=7, ref="refs/heads/x")
    assert data["installation"]["id"] == 7 and data["ref"] == "refs/heads/x"
    assert "installation" not in example_payload("ping", installation=None)


def test_the_harness_never_imports_ray() -> None:
    code = "import actors.testing, sys; print('ray' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


async def test_harnesses_share_a_fake_and_its_faults() -> None:
    async with BotHarness(Greeter) as first:
        first.fake.faults.add(r"/comments$", "server_error", method="POST")
        key = first.private_key
        async with BotHarness(Greeter, fake=first.fake, private_key=key) as second:
            done = await second.deliver("issues.opened", issue__number=2)
            # The 502 was retried by the client: two POSTs, one comment, no dead letter.
            assert len(done.requests_to(f"{HELLO}/issues/2/comments", "POST")) == 2
            assert done.dead_letters == []
            repo = second.fake.store.repo("Codertocat", "Hello-World")
            assert repo is not None and len(repo.comments[2]) == 1
        assert first.fake.url  # the first harness's fake outlives the second harness
        again = await first.deliver("issues.opened", issue__number=2)
        assert len(again.requests_to(f"{HELLO}/issues/2/comments", "POST")) == 1


async def test_a_primary_rate_limit_waits_for_its_reset_without_spending_attempts() -> None:
    """README: "A rate limit ... makes the delivery wait without spending an attempt":
    GitHub refuses the comment, out of budget, more times than the handler has tries."""
    refusals = Greeter.max_attempts + 1
    async with BotHarness(Greeter) as bot:
        bot.fake.faults.add(r"/comments$", "primary", count=refusals)
        started = bot.clock()
        done = await bot.deliver("issues.opened", issue__number=3)
        assert done.dead_letters == []
        posts = done.requests_to(f"{HELLO}/issues/3/comments", "POST")
        assert len(posts) == refusals + 1  # each refused, then the one that made it
        repo = bot.fake.store.repo("Codertocat", "Hello-World")
        assert repo is not None and len(repo.comments[3]) == 1
        assert bot.clock() - started >= 3000  # the resets waited out on the harness clock


class CommentThenLabel(InstallationActor):
    """Comments, then labels: GitHub may refuse the label once the comment is made."""

    @on("issues.opened")
    async def answer(self, event: Event) -> None:
        await self.github.request("POST", f"{HELLO}/issues/3/comments", json={"body": "hi"})
        await self.github.request("POST", f"{HELLO}/issues/3/labels", json={"labels": ["x"]})


async def test_a_rate_limit_met_after_a_write_spends_the_attempt() -> None:
    """Run again, the handler repeats its comment: so a rate limit it meets after that
    write is an attempt like any that failed, journaled, waited out for as long as
    GitHub asked at least, and dead-lettered after `max_attempts` while it lasts
    (rather than commenting again each time the limit resets)."""
    tries = CommentThenLabel.max_attempts
    async with BotHarness(CommentThenLabel) as bot:
        bot.fake.faults.add(r"/labels$", "primary", count=tries + 5)
        done = await bot.deliver("issues.opened", issue__number=3)
        [dead] = done.dead_letters
        assert (dead["attempts"], dead["error_type"]) == (tries, "RateLimited")
        assert len(done.requests_to(f"{HELLO}/issues/3/comments", "POST")) == tries
        failed = await failed_attempts(bot)
        assert [f.attempt for f in failed] == list(range(1, tries))
        assert all(f.retry_in >= 3000 for f in failed)  # GitHub's reset, not the backoff


class CommentThenOutOfBudget(InstallationActor):
    """Comments, then its label finds the budget held by another handler's open lease
    (`Budget`'s error: a 10 s wait, the window's reset known)."""

    @on("issues.opened")
    async def answer(self, event: Event) -> None:
        await self.github.request("POST", f"{HELLO}/issues/3/comments", json={"body": "hi"})
        raise RateLimited(
            429,
            "budget held by leases",
            kind="primary",
            retry_after=10.0,
            reset=self.now() + 3000,
            reset_after=3000.0,
        )


async def test_a_run_that_wrote_waits_for_the_reset_not_for_open_leases() -> None:
    """A run that wrote spends an attempt on a rate limit: waiting 10 s for an open
    lease each time, it was dead-lettered within half a minute while the lease lasted,
    commenting again at every try."""
    async with BotHarness(CommentThenOutOfBudget) as bot:
        await bot.deliver("issues.opened", issue__number=3)
        failed = await failed_attempts(bot)
        assert failed and all(f.retry_in >= 2999 for f in failed)


async def test_a_secondary_limit_met_after_a_write_waits_its_retry_after_not_the_reset() -> None:
    """GitHub's secondary-limit answer carries the window's reset too: a run that wrote
    waits the two minutes GitHub asked (past the client's in-line minute), not the rest
    of the hour."""
    async with BotHarness(CommentThenLabel) as bot:
        bot.fake.faults.add(r"/labels$", "secondary", retry_after=120)
        await bot.deliver("issues.opened", issue__number=3)
        [failed] = await failed_attempts(bot)
        assert 120 <= failed.retry_in < 200


async def test_an_open_breaker_met_after_a_write_spends_the_attempt() -> None:
    """GitHub fails the label (502s, retried by the client) until the installation's
    breaker opens in the middle of the label's retries: the attempt that commented is
    journaled, and every comment posted belongs to an attempt the journal counts."""
    async with BotHarness(CommentThenLabel) as bot:
        bot.fake.faults.add(r"/labels$", "server_error", count=100)
        done = await bot.deliver("issues.opened", issue__number=3)
        [dead] = done.dead_letters
        failed = await failed_attempts(bot)
        assert "CircuitOpen" in {f.error_type for f in failed} | {dead["error_type"]}
        comments = done.requests_to(f"{HELLO}/issues/3/comments", "POST")
        assert len(comments) == len(failed) + 1 == dead["attempts"]


async def test_the_pytest_plugin_starts_and_closes_harnesses(ghbot_harness: Any) -> None:
    bot = await ghbot_harness(Greeter)
    other = await ghbot_harness(Flaky, installation_id=2, repository="octo-org/other")
    done = await bot.deliver("issues.opened", issue__number=8)
    assert done.requests_to(f"{HELLO}/issues/8/comments", "POST")
    assert other.fake is not bot.fake and other.installation_id == 2


def test_the_pytest_plugins_harnesses_are_closed_when_their_test_ends(tmp_path: Path) -> None:
    """A pytest run of its own (the plugin as pytest loads it, by its entry point): the
    first test starts a harness and notes its fake's address; once that test is over,
    the second finds nothing listening there."""
    (tmp_path / "test_inner.py").write_text(
        textwrap.dedent(
            f"""
            import socket
            from pathlib import Path
            from urllib.parse import urlsplit

            import pytest

            from examples.greeter import Greeter

            NOTE = Path({str(tmp_path / "fake-url")!r})


            async def test_starts(ghbot_harness):
                bot = await ghbot_harness(Greeter)
                assert (await bot.deliver("issues.opened")).status == "accepted"
                NOTE.write_text(bot.fake.url)


            def test_then_closed():
                url = urlsplit(NOTE.read_text())
                with pytest.raises(OSError):
                    socket.create_connection((url.hostname, url.port), timeout=2).close()
            """
        )
    )
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o",
         "asyncio_mode=auto", str(tmp_path / "test_inner.py")],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 passed" in run.stdout


# --- time: every wait of the runtime and the client is on the harness clock ------------


async def test_a_rate_limit_retry_after_is_waited_out_on_the_harness_clock() -> None:
    async with BotHarness(Greeter) as bot:
        bot.fake.faults.add(r"/comments$", "secondary", retry_after=60)
        started = bot.clock()
        done = await bot.deliver("issues.opened", issue__number=3)
        assert done.dead_letters == []
        # Refused once, then sent again after GitHub's minute, in no time: the minute
        # went by in the client's waits (write pacing's second is part of it).
        assert len(done.requests_to(f"{HELLO}/issues/3/comments", "POST")) == 2
        assert sum(bot.clock.sleeps) >= 60 and bot.clock() - started >= 60


class TwoComments(InstallationActor):
    """Writes twice in a row: GitHub asks for a second between one installation's writes."""

    @on("issues.opened")
    async def twice(self, event: Event) -> None:
        for text in ("one", "two"):
            await self.github.request("POST", f"{HELLO}/issues/3/comments", json={"body": text})


async def test_write_pacing_is_on_as_in_a_deployment_and_takes_no_time() -> None:
    async with BotHarness(TwoComments) as bot:
        done = await bot.deliver("issues.opened", issue__number=3)
        assert done.dead_letters == [] and len(done.requests) == 2
        assert len(bot.clock.sleeps) == 1 and 0.5 < bot.clock.sleeps[0] <= 1.0  # the second's
    async with BotHarness(TwoComments, pace_writes=None) as unpaced:
        done = await unpaced.deliver("issues.opened", issue__number=3)
        assert done.dead_letters == [] and len(done.requests) == 2
        assert unpaced.clock.sleeps == []


async def test_an_open_breaker_holds_deliveries_until_it_closes_on_the_harness_clock(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("WARNING", logger="ghbot.breaker")
    async with BotHarness(Greeter) as bot:
        # GitHub fails often enough to open the installation's breaker (5 calls, half
        # failing), then recovers: the delivery waits for the breaker, and completes.
        bot.fake.faults.add(r"/comments$", "server_error", count=12)
        started = bot.clock()
        done = await bot.deliver("issues.opened", issue__number=3)
        assert done.dead_letters == []
        repo = bot.fake.store.repo("Codertocat", "Hello-World")
        assert repo is not None and len(repo.comments[3]) == 1
        assert bot.clock() - started >= 30  # the breaker's open time, waited in no time
        changes = [
            r.getMessage().rsplit(": ", 1)[1] for r in caplog.records if r.name == "ghbot.breaker"
        ]
        assert changes[0] == "circuit closed -> open"
        # It let a trial call through, which succeeded (it closes after three).
        assert changes[-1] == "circuit open -> half_open"


async def test_a_runtime_wait_lets_other_tasks_run() -> None:
    """The shard's journal retries wait on the harness clock, which yields each time:
    a journal that comes back through another task is found at the next try."""
    async with BotHarness(Greeter) as bot:
        journal = bot.shard.journal
        away = asyncio.Event()
        away.set()
        failed = 0
        list_streams = journal.list_streams

        async def flaky(*, shard: int | None = None) -> list[str]:
            nonlocal failed
            if away.is_set() and failed < 1000:  # without a yield: 1000, then through
                failed += 1
                raise JournalUnavailable("the journal is away")
            return await list_streams(shard=shard)

        journal.list_streams = flaky  # type: ignore[method-assign]
        asyncio.get_running_loop().call_soon(away.clear)  # it comes back at the next turn
        await bot.shard._recover()
        assert failed == 1
        assert bot.clock.sleeps  # the retry's backoff, on the harness clock


async def test_tokens_expire_on_the_harness_clock() -> None:
    async with BotHarness(Greeter) as bot:
        await bot.deliver("issues.opened", issue__number=3)
        bot.clock.advance(2 * 3600)  # GitHub's tokens last an hour
        await bot.deliver("issues.opened", issue__number=4)
        minted = [r for r in bot.fake.requests if r.path.endswith("/access_tokens")]
        assert len(minted) == 2


async def test_at_trace_a_handler_logs_its_bodys_shape_never_its_values(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CHANGELOG: "TRACE body shapes": keys and type names, two levels deep."""
    import logging

    from ghbot.logs import TRACE

    monkeypatch.setattr(logging.getLogger("ghbot"), "propagate", True)
    async with BotHarness(Greeter) as bot:
        with caplog.at_level(TRACE, logger="ghbot"):
            await bot.deliver("issues.opened", issue__number=3, issue__title="a secret title")
    [line] = [r.getMessage() for r in caplog.records if "body shape" in r.getMessage()]
    assert line.startswith("welcome: body shape {")
    assert "'issue': {" in line and "'title': 'str'" in line and "'number': 'int'" in line
    assert "a secret title" not in line and "Codertocat" not in line


class SelfCancelling(InstallationActor):
    """Its first attempt awaits a task it cancelled itself: `CancelledError` from the
    handler's own code, not from anything stopping it."""

    tries = 0

    @on("issues.opened")
    async def wait_for_nothing(self, event: Event) -> None:
        SelfCancelling.tries += 1
        if SelfCancelling.tries == 1:
            task = asyncio.ensure_future(asyncio.sleep(10))
            task.cancel()
            await task


async def test_a_handlers_own_cancelled_error_is_a_failed_attempt() -> None:
    """Taken for a stop, it used to leave the delivery pending with no log, and the
    installation's later deliveries ran before it."""
    SelfCancelling.tries = 0
    async with BotHarness(SelfCancelling) as bot:
        done = await asyncio.wait_for(bot.deliver("issues.opened"), 30)
        assert SelfCancelling.tries == 2 and done.dead_letters == []
        failed = await failed_attempts(bot)
        assert [(f.attempt, f.error_type) for f in failed] == [(1, "HandlerCancelled")]


async def test_what_the_runtime_sets_on_a_bot_is_refused_as_a_handler_name() -> None:
    """The refused names come from the class's declarations: an attribute the runtime
    set on instances without declaring it would be a handler name that breaks."""
    from actors.bot import _RUNTIME_SET

    async with BotHarness(Greeter) as bot:
        await bot.deliver("issues.opened")
        host = await bot.shard.host(bot.installation_id)
        assert set(vars(host.bot)) <= _RUNTIME_SET
        assert set(vars(host.bot)) >= {"state", "github", "quota", "installation_id"}


TOKEN = "ghs_16C7e42F292c6912E7710c838347Ae178B4a"


class Broken(InstallationActor):
    """A handler with a bug, whose error quotes a token (as a failed clone URL does)."""

    max_attempts = 2

    @on("issues.opened")
    async def welcome(self, event: Event) -> None:
        raise AttributeError(f"no greeting for https://x-access-token:{TOKEN}@github.com/o/r")


async def test_a_handlers_failures_are_logged_with_the_traceback_that_shows_where(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The harness (and `ghbot dev`) logged `welcome failed attempt 1: AttributeError`
    and a dead-letter line with the type alone: the author could not find the line that
    failed. The traceback goes through the formatters' masking as any line."""
    from ghbot.logs import JsonFormatter, TextFormatter

    with caplog.at_level(logging.WARNING, logger="ghbot.installation"):
        async with BotHarness(Broken) as bot:
            done = await bot.deliver("issues.opened")
    assert [d["handler"] for d in done.dead_letters] == ["welcome"]
    lines = [
        r for r in caplog.records if "failed attempt" in r.getMessage() or "dead-letter" in r.msg
    ]
    assert len(lines) == 2 and all(r.exc_info for r in lines)
    for record in lines:
        text = TextFormatter().format(record)
        assert ", in welcome\n" in text and "raise AttributeError(" in text
        assert "AttributeError: no greeting for" in text
        traceback = json.loads(JsonFormatter().format(record))["traceback"]
        assert ", in welcome\n" in traceback
        assert TOKEN not in text + traceback and TOKEN[4:20] not in text + traceback


async def test_an_example_is_about_the_repository_the_harness_was_given() -> None:
    """`deliver("issues.opened")` in a harness of `octo-org/tools` raised `UsageError`
    saying to pass `repository='Codertocat/Hello-World'`, the opposite of what the
    author had asked: the example kept its own repository."""
    tools = "/repos/octo-org/tools"
    async with BotHarness(Greeter, installation_id=4711, repository="octo-org/tools") as bot:
        done = await bot.deliver("issues.opened")
        assert done.dead_letters == []
        [comment] = done.requests_to(f"{tools}/issues/1/comments", "POST")
        assert comment.json["body"] == "Thanks for opening this issue, @Codertocat!"
        assert done.domain_events == [Greeted(repository="octo-org/tools", number=1)]
        pull = await bot.deliver("pull_request.opened", number=2, pull_request__number=2)
        assert [r.path for r in pull.requests] == [f"{tools}/issues/2/labels"]


async def test_an_example_changed_in_other_ways_is_still_about_the_harnesss_repository() -> None:
    """Any `repository__…` change (`repository__private=True`) kept the example on
    `Codertocat/Hello-World`, and a harness of another repository raised again; only
    a change of which repository it is says so."""
    async with BotHarness(Greeter, installation_id=4711, repository="octo-org/tools") as bot:
        done = await bot.deliver("issues.opened", repository__private=True)
        assert done.dead_letters == []
        assert done.requests_to("/repos/octo-org/tools/issues/1/comments", "POST")


def test_a_moved_status_example_names_the_repository_at_its_top_level_too() -> None:
    from actors.testing import _move_example

    data = example_payload("status")
    assert data["name"] == data["repository"]["full_name"]
    _move_example(data, "octo-org/tools")
    assert data["name"] == data["repository"]["full_name"] == "octo-org/tools"


def test_a_moved_example_names_the_repository_everywhere_it_named_the_old_one() -> None:
    from actors.testing import _move_example

    data = example_payload("pull_request.opened")
    _move_example(data, "octo-org/tools")
    repository, base = data["repository"], data["pull_request"]["base"]["repo"]
    for repo in (repository, base, data["pull_request"]["head"]["repo"]):
        assert (repo["full_name"], repo["name"], repo["owner"]["login"]) == (
            "octo-org/tools",
            "tools",
            "octo-org",
        )
    assert repository["url"] == "https://api.github.com/repos/octo-org/tools"
    assert repository["ssh_url"] == "git@github.com:octo-org/tools.git"
    assert data["pull_request"]["issue_url"].startswith(
        "https://api.github.com/repos/octo-org/tools/"
    )
    assert "Codertocat/Hello-World" not in json.dumps(data)
    assert data["sender"]["login"] == "Codertocat"  # who opened it is still who opened it


async def test_a_payload_of_another_repository_says_which_to_set() -> None:
    """A saved delivery of a repository the harness lacks, or an example whose
    repository the delivery set itself: the error says to set either."""
    async with BotHarness(Greeter, repository="octo-org/tools") as bot:
        saved = example_payload("issues.opened")
        with pytest.raises(UsageError) as error:
            await bot.deliver("issues", saved)
        said = str(error.value)
        assert "repository 'Codertocat/Hello-World'" in said
        assert "set the payload's repository (repository__full_name='octo-org/tools'" in said
        assert "or the harness's (BotHarness(Greeter, repository='Codertocat/Hello-World'))" in said


class Clocked(InstallationActor):
    """Records the time its handler sees, and the issue's age GitHub implies."""

    seen: list[float] = []

    @on("issues.opened")
    async def opened(self, event: Event) -> None:
        type(self).seen.append(self.now())


async def test_a_handler_reads_the_runtimes_clock_which_the_harness_moves() -> None:
    """A stale-issue bot tested with `advance(31 days)` compared GitHub's timestamps,
    on the harness's clock, with `time.time()`, which the harness does not move:
    handlers had no clock of the runtime's to read."""
    Clocked.seen = []
    async with BotHarness(Clocked) as bot:
        await bot.deliver("issues.opened", issue__number=1)
        await bot.advance(31 * 86400)
        await bot.deliver("issues.opened", issue__number=2)
        assert Clocked.seen[1] == bot.clock()
    assert Clocked.seen[1] - Clocked.seen[0] >= 31 * 86400
    assert abs(Clocked().now() - time.time()) < 60  # outside a runtime: time.time()


class Counted(msgspec.Struct):
    number: int


class BadFold(InstallationActor):
    """Emits a domain event its `evolve` cannot fold (a bug of the bot's own)."""

    domain_events = (Counted,)

    def evolve(self, state: Any, event: msgspec.Struct) -> Any:
        return {**state, "last": state["missing"]}  # KeyError

    def initial_state(self) -> Any:
        return {}

    @on("issues.opened")
    async def count(self, event: Event) -> None:
        self.emit(Counted(number=1))


async def test_an_evolve_that_raises_fails_the_delivery_in_the_harness() -> None:
    """It was neither raised nor a dead letter: the test passed, and a deployment would
    not activate the installation again (its deliveries pending, as below)."""
    async with BotHarness(BadFold) as bot:
        with pytest.raises(UsageError, match=r"BadFold\.evolve raised KeyError") as raised:
            await bot.deliver("issues.opened")
        assert isinstance(raised.value.__cause__, KeyError)
        # What the message says of a deployment: read again (after a passivation, a
        # restart), the installation is not activated and its next delivery waits;
        # the harness says so (it answered "accepted", nothing run).
        bot.shard.passivate(force_idle=True)
        with pytest.raises(UsageError, match="installation 1 could not be activated"):
            await bot.deliver("issues.opened")
        assert bot.installation_id not in bot.shard.hosts
        journal = bot.shard.appends.journal
        stream = stream_name(bot.installation_id)
        records = await journal.read(stream, shard=vshard_of(bot.installation_id, VSHARDS))
        assert [r.type for r in records][-1] == "DeliveryReceived"  # pending, not run


class Hourly(InstallationActor):
    @every("1h")
    async def sweep(self, event: Event) -> None:
        await self.github.request("POST", f"{HELLO}/issues", json={"title": "hourly"})


async def test_what_a_delivery_sent_is_seen_once_the_fake_lets_older_requests_go() -> None:
    """`Delivered.requests` sliced the fake's record at its length before the
    delivery: once the record was full (`max_recorded`, 100,000 by default) its
    length stayed put, and every later delivery's and run's requests were empty."""
    private_key, public = app_key_pair()
    clock = FakeClock()
    async with FakeGitHub(public_key_pem=public, clock=clock, max_recorded=2) as fake:
        fake.add_installation(1, "Codertocat", ["Hello-World"])
        async with BotHarness(Greeter, fake=fake, private_key=private_key) as bot:
            for number in (3, 4, 5):  # a token exchange, then one comment each
                done = await bot.deliver("issues.opened", issue__number=number)
                assert [r.path for r in done.requests] == [f"{HELLO}/issues/{number}/comments"]
            assert (fake.recorded, len(fake.requests)) == (4, 2)
        async with BotHarness(Hourly, fake=fake, private_key=private_key) as hourly:
            await hourly.deliver("installation.created")
            ran = await hourly.advance(3600)
            assert [(r.method, r.path) for r in ran.requests] == [("POST", f"{HELLO}/issues")]


class SubjectReader(InstallationActor):
    read: ClassVar[list[dict[str, Any]]] = []

    @on("pull_request.closed")
    async def read_pull(self, event: Event) -> None:
        params = event.pull_request()
        path = f"/repos/{params['owner']}/{params['repo']}/pulls/{params['pull_number']}"
        SubjectReader.read.append((await self.github.request("GET", path)).data)
        query = """query($o: String!, $r: String!, $n: Int!) {
          repository(owner: $o, name: $r) { pullRequest(number: $n) { state } } }"""
        number = params["pull_number"]
        found = await self.github.graphql(query, o=params["owner"], r=params["repo"], n=number)
        SubjectReader.read.append(found["repository"]["pullRequest"])

    @on("issues.labeled")
    async def read_issue(self, event: Event) -> None:
        params = event.issue()
        path = f"/repos/{params['owner']}/{params['repo']}/issues/{params['issue_number']}"
        SubjectReader.read.append((await self.github.request("GET", path)).data)


async def test_the_issue_or_pull_request_the_harness_creates_is_the_one_the_payload_describes() -> (
    None
):
    """The harness made a placeholder for a delivery's subject: open, unlabelled, head
    `"a" * 40`, titled `pull request N`. A handler of `pull_request.closed` that read
    the pull request found it open at another head; one of `issues.labeled` found
    no labels."""
    SubjectReader.read = []
    closed = example_payload("pull_request.closed", pull_request__merged=True)
    given = closed["pull_request"]
    async with BotHarness(SubjectReader) as bot:
        assert (await bot.deliver("pull_request", closed)).dead_letters == []
        labeled = await bot.deliver("issues.labeled", issue__number=5, issue__title="Typo")
        assert labeled.dead_letters == []
        [pull, graphed, issue] = SubjectReader.read
        assert (pull["number"], pull["state"], pull["merged"], pull["title"]) == (
            given["number"], "closed", True, given["title"]
        )  # fmt: skip
        # Merged, as GitHub shows it: `merged_at` (the harness clock's, as `closed_at`),
        # the payload's merge commit, and GraphQL's `MERGED` (not `CLOSED`).
        assert pull["merged_at"] == pull["closed_at"] is not None
        assert pull["merge_commit_sha"] == given["merge_commit_sha"]
        assert graphed == {"state": "MERGED"}
        assert pull["head"]["sha"] == given["head"]["sha"] != "a" * 40
        assert (pull["head"]["ref"], pull["base"]["ref"]) == ("changes", "master")
        assert pull["base"]["sha"] == given["base"]["sha"]
        assert [label["name"] for label in pull["labels"]] == ["bug"]
        assert pull["user"]["login"] == "Codertocat" and pull["closed_at"]
        assert (issue["number"], issue["title"], issue["state"]) == (5, "Typo", "open")
        assert [label["name"] for label in issue["labels"]] == ["bug"]
        assert issue["user"]["login"] == "Codertocat"
        assert [user["login"] for user in issue["assignees"]] == ["Codertocat"]
        # The placeholders below number 5 stay placeholders; the repository counts the
        # closed pull request as closed.
        repo = bot.fake.store.repo("Codertocat", "Hello-World")
        assert repo is not None and repo.issues[4]["title"] == "issue 4"
        assert repo.data["open_issues_count"] == 4


class StateReader(InstallationActor):
    read: ClassVar[list[tuple[str, str, str]]] = []

    @on("issues.closed", "issues.reopened", "issues.edited")
    async def read_issue(self, event: Event) -> None:
        params = event.issue()
        path = f"/repos/{params['owner']}/{params['repo']}/issues/{params['issue_number']}"
        found = (await self.github.request("GET", path)).data
        StateReader.read.append((event.action or "", found["state"], found["title"]))
        if event.action == "edited":  # the bot's own change, which a delivery leaves
            await self.github.request("PATCH", path, json={"title": "The bot's"})


async def test_a_later_delivery_updates_the_subject_the_harness_made() -> None:
    """The harness seeded an issue from a delivery only when it created it: after
    `issues.closed`, the `issues.reopened` handler read the issue closed. A
    placeholder below a delivery's number becomes what a later delivery for its
    number describes; an issue the bot changed keeps the bot's change."""
    StateReader.read = []
    async with BotHarness(StateReader) as bot:
        await bot.deliver("issues.closed", issue__number=3, issue__state="closed")
        await bot.deliver("issues.reopened", issue__number=3, issue__title="Again")
        await bot.deliver("issues.reopened", issue__number=2, issue__title="Was filler")
        await bot.deliver("issues.edited", issue__number=3, issue__title="Edited")
        await bot.deliver("issues.closed", issue__number=3, issue__state="closed")
        assert StateReader.read == [
            ("closed", "closed", "Spelling error in the README file"),
            ("reopened", "open", "Again"),
            ("reopened", "open", "Was filler"),
            ("edited", "open", "Edited"),
            ("closed", "open", "The bot's"),
        ]
