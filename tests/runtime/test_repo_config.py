"""`self.config(...)`: a repository's `.github/` file, the owner's defaults, `_extends`."""

from __future__ import annotations

import logging

import msgspec
import pytest

from actors import InstallationActor, on
from actors.testing import BotHarness
from ghbot.errors import UsageError
from ghbot.events import Event
from ghbot.models import IssuesOpened

HELLO = "Codertocat/Hello-World"
COMMENTS = f"/repos/{HELLO}/issues/1/comments"


class Greeting(msgspec.Struct, kw_only=True):
    greeting: str = "Hello"
    labels: list[str] = []
    limits: dict[str, int] = {}


class Configured(InstallationActor):
    seen: list[Greeting] = []

    @on("issues.opened")
    async def greet(self, event: Event[IssuesOpened]) -> None:
        config = await self.config("greeter.yml", schema=Greeting, default=Greeting())
        Configured.seen.append(config)
        await self.github.rest.issues.create_comment(**event.issue(), body=config.greeting)


async def said(bot: BotHarness) -> str:
    done = await bot.deliver("issues.opened", issue__number=1)
    assert done.dead_letters == [], done.dead_letters
    [comment] = done.requests_to(COMMENTS, "POST")
    return str(comment.json["body"])


async def test_the_default_then_the_repositorys_file_then_the_owners_defaults() -> None:
    async with BotHarness(Configured) as bot:
        assert await said(bot) == "Hello"  # no file anywhere: the default
        bot.fake.add_repository("Codertocat/.github", 1)
        bot.fake.add_file("Codertocat/.github", ".github/greeter.yml", "greeting: Org hi\n")
        assert await said(bot) == "Org hi"  # the owner's .github repository
        bot.fake.add_file(HELLO, ".github/greeter.yml", "greeting: Repo hi\nlabels: [a]\n")
        assert await said(bot) == "Repo hi"  # the repository's own wins
        assert Configured.seen[-1] == Greeting(greeting="Repo hi", labels=["a"])


async def test_extends_merges_the_other_file_under_this_one() -> None:
    async with BotHarness(Configured) as bot:
        bot.fake.add_repository("Codertocat/shared", 1)
        bot.fake.add_file(
            "Codertocat/shared",
            ".github/base.yml",
            "greeting: Base\nlabels: [x, y]\nlimits: {a: 1, b: 2}\n",
        )
        bot.fake.add_file(
            HELLO,
            ".github/greeter.yml",
            "_extends: shared:.github/base.yml\nlimits: {b: 3}\nlabels: [z]\n",
        )
        assert await said(bot) == "Base"
        assert Configured.seen[-1] == Greeting(
            greeting="Base", labels=["z"], limits={"a": 1, "b": 3}
        )


async def test_extends_by_owner_and_repo_follows_one_level_and_unknown_keys_are_ignored() -> None:
    async with BotHarness(Configured) as bot:
        bot.fake.add_repository("Codertocat/shared", 1)
        bot.fake.add_repository("Codertocat/deeper", 1)
        bot.fake.add_file("Codertocat/deeper", ".github/greeter.yml", "greeting: Deeper\n")
        bot.fake.add_file(  # its own _extends is not followed: one level
            "Codertocat/shared",
            ".github/greeter.yml",
            "_extends: deeper\nlabels: [x]\nunknown_to_the_schema: 1\n",
        )
        bot.fake.add_file(HELLO, ".github/greeter.yml", "_extends: Codertocat/shared\n")
        seen = len(bot.fake.requests)
        assert await said(bot) == "Hello"  # the schema's default: "Deeper" was not read
        assert Configured.seen[-1] == Greeting(labels=["x"])
        asked = [r.path for r in list(bot.fake.requests)[seen:] if "/contents/" in r.path]
        assert "/repos/Codertocat/deeper/contents/.github/greeter.yml" not in asked


async def test_a_reread_of_an_unchanged_file_is_a_conditional_request() -> None:
    async with BotHarness(Configured) as bot:
        bot.fake.add_file(HELLO, ".github/greeter.yml", "greeting: Hi\n")
        assert await said(bot) == "Hi"
        assert await said(bot) == "Hi"
        path = f"/repos/{HELLO}/contents/.github/greeter.yml"
        first, second = bot.fake.requests_to(path, "GET")
        assert "If-None-Match" not in first.headers and second.headers["If-None-Match"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("greeting: [unclosed\n", "is not YAML"),
        ("- a list\n", "is not a mapping of keys"),
        ("greeting: 7\n", "does not fit Greeting: Expected `str`, got `int` - at `$.greeting`"),
        ("_extends: nowhere\n", "_extends: nowhere has no .github/greeter.yml"),
    ],
)
async def test_a_broken_file_is_dead_lettered_at_once_with_its_reason(
    text: str, reason: str
) -> None:
    async with BotHarness(Configured) as bot:
        bot.fake.add_file(HELLO, ".github/greeter.yml", text)
        done = await bot.deliver("issues.opened", issue__number=1)
        [dead] = done.dead_letters
        assert (dead["attempts"], dead["error_type"]) == (1, "RepositoryConfigError")
        assert dead["error"].startswith(f"{HELLO}: .github/greeter.yml: ")
        assert reason in dead["error"]
        assert done.requests_to(COMMENTS, "POST") == []


async def test_a_broken_file_logs_a_warning_and_its_dead_letter_replays_once_fixed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """docs/handlers.md: "it dead-letters the handler at once, with the reason in the
    dead letter and a WARNING log line; replay the dead letter once the file is fixed"."""
    async with BotHarness(Configured) as bot:
        bot.fake.add_file(HELLO, ".github/greeter.yml", "greeting: 7\n")
        with caplog.at_level(logging.WARNING):
            done = await bot.deliver("issues.opened", issue__number=1)
        [dead] = done.dead_letters
        [line] = [r for r in caplog.records if "dead-lettered" in r.getMessage()]
        assert line.levelno == logging.WARNING
        assert "RepositoryConfigError" in line.getMessage()
        assert f"{HELLO}: .github/greeter.yml: does not fit Greeting" in line.getMessage()
        bot.fake.add_file(HELLO, ".github/greeter.yml", "greeting: Fixed\n")
        seen = len(bot.fake.requests)
        installation = bot.installation_id
        assert await bot.shard.replay(installation, dead["delivery_id"], "greet") == 1
        await bot.shard.wait_idle()
        [comment] = [r for r in list(bot.fake.requests)[seen:] if r.path == COMMENTS]
        assert comment.json["body"] == "Fixed"
        assert await bot.shard.dead_letters() == []


async def test_config_outside_a_handler_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="reads the repository of the delivery"):
        await Configured().config("greeter.yml", schema=Greeting)


@pytest.mark.parametrize(
    ("extends", "reason"),
    [
        ("someone-else/private:.github/greeter.yml", "another owner's; only Codertocat's"),
        ("shared:../../installation/repositories", "_extends must be [owner/]repo[:path]"),
        ("../x", "_extends must be [owner/]repo[:path]"),
        ("shared:a?b", "_extends must be [owner/]repo[:path]"),
    ],
)
async def test_extends_reads_only_the_same_owners_files_by_plain_paths(
    extends: str, reason: str
) -> None:
    async with BotHarness(Configured) as bot:
        bot.fake.add_file(HELLO, ".github/greeter.yml", f"_extends: '{extends}'\n")
        seen = len(bot.fake.requests)
        done = await bot.deliver("issues.opened", issue__number=1)
        [dead] = done.dead_letters
        assert reason in dead["error"]
        asked = [r.path for r in list(bot.fake.requests)[seen:] if "/contents/" in r.path]
        assert asked == [f"/repos/{HELLO}/contents/.github/greeter.yml"]  # nothing else read


async def test_a_file_nested_past_python_s_recursion_is_dead_lettered_at_once() -> None:
    """PyYAML builds nested values recursively: a RecursionError was retried as if the
    file might read better next time."""
    async with BotHarness(Configured) as bot:
        bot.fake.add_file(HELLO, ".github/greeter.yml", "key: " + "[" * 3000 + "]" * 3000)
        done = await bot.deliver("issues.opened", issue__number=1)
        [dead] = done.dead_letters
        assert "nests too deeply" in dead["error"] and dead["attempts"] == 1


async def test_a_yaml_error_names_the_place_not_the_text() -> None:
    async with BotHarness(Configured) as bot:
        bot.fake.add_file(HELLO, ".github/greeter.yml", "ok: 1\nkey: [unclosed: SECRET_abc\n")
        done = await bot.deliver("issues.opened", issue__number=1)
        [dead] = done.dead_letters
        assert "is not YAML" in dead["error"] and "line 3" in dead["error"]
        assert "SECRET_abc" not in dead["error"]
