"""Typed handlers: `@on` checks annotations against names; unknown names and deliveries;
the context helpers on `Event`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from actors.bot import InstallationActor, UnknownEventWarning, on
from actors.schedule import every
from ghbot.errors import UnknownEventError, UsageError
from ghbot.events import Event, parse
from ghbot.models import (
    IssueCommentCreated,
    IssuesOpened,
    IssuesPayload,
    PullRequestOpened,
    UnknownPayload,
)
from ghbot.testing.payloads import EXAMPLES

ROOT = Path(__file__).resolve().parent.parent.parent
WEBHOOKS = EXAMPLES
TYPED_BOT = Path(__file__).with_name("typed_bot.py")


def body_of(stem: str, **changes: Any) -> bytes:
    data = json.loads((WEBHOOKS / f"{stem}.json").read_bytes())
    for path, value in changes.items():
        target = data
        *parents, leaf = path.split("__")
        for part in parents:
            target = target[part]
        target[leaf] = value
    return json.dumps(data).encode()


# --- annotations checked when the class is defined ---------------------------------------


def test_a_typed_handler_matching_its_names_is_accepted() -> None:
    class Bot(InstallationActor):
        @on("issues.opened")
        async def one(self, event: Event[IssuesOpened]) -> None: ...

        @on("issues")
        async def every_action(self, event: Event[IssuesPayload]) -> None: ...

        @on("issues.opened", "pull_request.opened")
        async def two(self, event: Event[IssuesOpened | PullRequestOpened]) -> None: ...

        @on("*")
        async def untyped(self, event: Event) -> None: ...

        @on("*")
        async def any_payload(self, event: Event[Any]) -> None: ...

    assert Bot.handlers_for("issues.opened", "issues") == (
        "one",
        "two",
        "every_action",
        "untyped",
        "any_payload",
    )


def test_a_handler_annotated_for_another_event_is_refused_at_class_definition() -> None:
    with pytest.raises(UsageError, match=r"Bot\.welcome: @on\('issues.opened'\) delivers "):
        # The message names what the name delivers and what the handler takes.
        class Bot(InstallationActor):
            @on("issues.opened")
            async def welcome(self, event: Event[PullRequestOpened]) -> None: ...


@pytest.mark.parametrize(
    ("name", "annotation", "missing"),
    [
        ("issues.opened", Event[PullRequestOpened], "IssuesOpened"),
        ("issues", Event[IssuesOpened], "IssuesClosed"),  # one action of many
        ("*", Event[IssuesOpened], "every payload"),  # everything comes to "*"
    ],
)
def test_the_refusal_names_what_is_missing(name: str, annotation: Any, missing: str) -> None:
    async def handler(self: Any, event: Any) -> None: ...

    handler.__annotations__ = {"event": annotation, "return": None}
    with pytest.raises(UsageError, match=missing):
        type("Bot", (InstallationActor,), {"handle": on(name)(handler)})


# --- names the models lack -------------------------------------------------------------------


def test_strict_false_registers_an_unknown_name_with_a_warning() -> None:
    with pytest.raises(UnknownEventError):
        on("brand_new_event")
    with pytest.warns(UnknownEventWarning, match="brand_new"):

        class Bot(InstallationActor):
            @on("brand_new_event", strict=False)
            async def new(self, event: Event[UnknownPayload]) -> None: ...

            @on("issues.brand_new_action", strict=False)
            async def new_action(self, event: Event) -> None: ...

    assert Bot.handlers_for("brand_new_event", "brand_new_event", known=False) == ("new",)
    assert Bot.handlers_for("issues.brand_new_action", "issues", known=False) == ("new_action",)


@pytest.mark.parametrize("name", ["issues.", "issues.brand.new", "brand_new_event.", ".opened"])
def test_strict_false_still_refuses_a_name_that_is_not_well_formed(name: str) -> None:
    """`strict=False` lets a new event or action through, not a name no delivery can have
    (an empty action, an action with a dot, no event)."""
    with pytest.raises(UnknownEventError):
        on(name, strict=False)


def test_strict_false_still_checks_the_annotation_and_known_names_do_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        on("issues.opened", strict=False)
    with pytest.warns(UnknownEventWarning), pytest.raises(UsageError):

        class Bot(InstallationActor):
            @on("brand_new_event", strict=False)
            async def new(self, event: Event[IssuesOpened]) -> None: ...


def test_an_unknown_event_reaches_star_handlers_untyped() -> None:
    class Bot(InstallationActor):
        @on("*")
        async def everything(self, event: Event) -> None: ...

        @on("issues")
        async def typed(self, event: Event[IssuesPayload]) -> None: ...

        @on("issues")
        async def untyped(self, event: Event) -> None: ...

    event = parse("projects_v3_item", body_of("issues.opened"))
    assert isinstance(event.payload, UnknownPayload) and not event.known
    assert event.qualified_name == "projects_v3_item.opened"
    assert event.repository is not None
    names = Bot.handlers_for(event.qualified_name, event.name, known=event.known)
    assert names == ("everything",)


def test_an_unknown_action_of_a_known_event_decodes_and_skips_typed_handlers() -> None:
    class Bot(InstallationActor):
        @on("*")
        async def everything(self, event: Event) -> None: ...

        @on("issues")
        async def typed(self, event: Event[IssuesPayload]) -> None: ...

        @on("issues")
        async def untyped(self, event: Event) -> None: ...

    event = parse("issues", body_of("issues.opened", action="prioritized"))
    assert isinstance(event.payload, UnknownPayload)
    assert (event.action, event.known) == ("prioritized", False)
    assert event.sender is not None and event.sender.login == "Codertocat"
    names = Bot.handlers_for(event.qualified_name, event.name, known=event.known)
    assert names == ("untyped", "everything")


# --- context helpers ----------------------------------------------------------------------


def test_repo_issue_and_pull_request_give_rest_parameters() -> None:
    issue = parse("issues", body_of("issues.opened"))
    assert issue.repo() == {"owner": "Codertocat", "repo": "Hello-World"}
    assert issue.issue() == {"owner": "Codertocat", "repo": "Hello-World", "issue_number": 1}
    with pytest.raises(UsageError, match="no pull request"):
        issue.pull_request()

    pull = parse("pull_request", body_of("pull_request.opened"))
    number = json.loads(pull.raw)["number"]
    expected = {"owner": "Codertocat", "repo": "Hello-World", "pull_number": number}
    assert pull.pull_request() == expected
    assert pull.issue()["issue_number"] == number  # a pull request is an issue to the REST API

    on_pull = body_of("issue_comment.created", issue__pull_request={"url": "https://x"})
    comment = parse("issue_comment", on_pull)
    assert comment.pull_request()["pull_number"] == comment.issue()["issue_number"]

    installation = parse("installation", body_of("installation.created"))
    with pytest.raises(UsageError, match="no repository"):
        installation.repo()
    with pytest.raises(UsageError, match="push delivery is about no issue"):
        parse("push", body_of("push")).issue()


def test_pull_request_number_falls_back_to_the_top_level_number() -> None:
    """A `pull_request` object without its number (an event the models lack): the
    payload's `number` beside it."""
    repository = json.loads(body_of("pull_request.opened"))["repository"]
    body = {"pull_request": {"url": "https://x"}, "number": 77, "repository": repository}
    event = parse("brand_new_event", json.dumps(body).encode())
    assert event.pull_request() == {"owner": "Codertocat", "repo": "Hello-World", "pull_number": 77}


def test_is_bot_reads_the_sender_type_or_login() -> None:
    assert not parse("issues", body_of("issues.opened")).is_bot
    assert parse("issues", body_of("issues.opened", sender__type="Bot")).is_bot
    assert parse("issues", body_of("issues.opened", sender__login="x[bot]")).is_bot


def own_comment(app_id: int, slug: str, sender: str) -> bytes:
    app = json.loads((WEBHOOKS / "check_run.completed.json").read_bytes())["check_run"]["app"]
    app |= {"id": app_id, "slug": slug}
    return body_of(
        "issue_comment.created",
        comment__performed_via_github_app=app,
        sender__login=sender,
        sender__type="Bot",
    )


def test_is_from_this_app_needs_the_app_id_and_a_matching_trace() -> None:
    mine = own_comment(42, "greeter", "greeter[bot]")
    assert parse("issue_comment", mine, app_id=42).is_from_this_app
    assert not parse("issue_comment", mine).is_from_this_app  # app unknown
    assert not parse("issue_comment", mine, app_id=7).is_from_this_app  # another app's comment
    theirs = own_comment(42, "greeter", "someone-else[bot]")
    assert not parse("issue_comment", theirs, app_id=42).is_from_this_app
    human = body_of("issue_comment.created")
    assert not parse("issue_comment", human, app_id=42).is_from_this_app


def test_is_from_this_app_reads_a_check_runs_app_too() -> None:
    """docs/architecture.md: the payload's own `app` (check_run, check_suite) counts."""
    app = json.loads((WEBHOOKS / "check_run.completed.json").read_bytes())["check_run"]["app"]
    run = body_of(
        "check_run.completed",
        check_run__app=app | {"id": 42, "slug": "greeter"},
        sender__login="greeter[bot]",
        sender__type="Bot",
    )
    assert parse("check_run", run, app_id=42).is_from_this_app
    assert not parse("check_run", run, app_id=7).is_from_this_app


def test_a_bare_event_annotation_means_any_payload() -> None:
    event: Event = parse("issues", body_of("issues.opened"))
    assert isinstance(event.payload, IssuesOpened)
    typed: Event[IssueCommentCreated] = parse("issue_comment", body_of("issue_comment.created"))
    assert typed.payload.comment.id


# --- what mypy says ----------------------------------------------------------------------------


def mypy(*paths: Path) -> list[str]:
    """Return mypy --strict's error lines about `paths` (others' files are not ours)."""
    binary = shutil.which("mypy", path=str(Path(sys.executable).parent)) or shutil.which("mypy")
    if binary is None:
        pytest.skip("mypy is not installed")
    argv = [binary, "--strict", "--no-error-summary", *map(str, paths)]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=False)
    names = tuple(p.name for p in paths)
    return [line for line in done.stdout.splitlines() if line.split(":")[0].endswith(names)]


def test_typed_handlers_type_check_strictly_without_getattr_or_cast() -> None:
    source = TYPED_BOT.read_text().split('"""', 2)[2]  # the code, not the docstring
    assert "getattr" not in source and "cast(" not in source
    assert mypy(TYPED_BOT) == []
    with pytest.warns(UnknownEventWarning):  # its one strict=False name
        import tests.unit.typed_bot  # noqa: F401  (@on checks every annotation)


def test_mypy_catches_a_field_the_subscribed_payload_lacks(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong_bot.py"
    wrong.write_text(
        "from ghbot.events import Event\n"
        "from ghbot.models import IssuesOpened, IssuesPayload\n\n\n"
        "def number(event: Event[IssuesOpened]) -> int:\n"
        "    return event.payload.pull_request.number\n\n\n"
        "def changes(event: Event[IssuesPayload]) -> object:\n"
        "    return event.payload.changes\n"
    )
    errors = "\n".join(mypy(wrong))
    assert 'wrong_bot.py:6: error: "IssuesOpened" has no attribute "pull_request"' in errors
    # Not every `issues` action has `changes`: the union must be narrowed first.
    assert 'wrong_bot.py:10: error: Item "IssuesAssigned" of' in errors
    assert 'has no attribute "changes"' in errors


# --- a bot class written wrong ---------------------------------------------------------------


def test_a_bare_on_or_a_list_of_names_is_a_usage_error() -> None:
    """A bare `@on` passes the handler as the name, a list passes the list: both were an
    `AttributeError` from deep inside the name check."""

    async def handler(self: Any, event: Event) -> None: ...

    with pytest.raises(UsageError, match="takes event names as strings"):
        on(handler)  # type: ignore[arg-type]  # what a bare @on does
    with pytest.raises(UsageError, match="takes event names as strings"):
        on(["issues.opened"])  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="at least one"):
        on()


def test_a_handler_that_is_not_async_is_refused_where_it_is_defined() -> None:
    """Awaited, a plain function's result fails after its body ran: the runtime retried
    it, repeating what it did (a comment, say), then dead-lettered it."""
    with pytest.raises(UsageError, match="handler opened must be an async def"):

        class Bot(InstallationActor):
            @on("issues.opened")  # type: ignore[type-var]
            def opened(self, event: Event) -> None: ...


def test_a_handler_that_cannot_take_self_and_event_is_refused_where_it_is_defined() -> None:
    """Defined, it failed with `TypeError` on every delivery, retried, dead-lettered."""
    with pytest.raises(UsageError, match=r"handler opened must take \(self, event\)"):

        class NoEvent(InstallationActor):
            @on("issues.opened")
            async def opened(self) -> None: ...

    with pytest.raises(UsageError, match=r"handler opened must take \(self, event\)"):

        class MoreThanAnEvent(InstallationActor):
            @on("issues.opened")
            async def opened(self, event: Event, extra: int) -> None: ...


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("pull_request.merged", "'pull_request.closed', with `pull_request.merged` true"),
        ("pull_request_review.approved", "'pull_request_review.submitted'"),
        ("issues.commented", "'issue_comment.created'"),
        ("pull_request.updated", "'pull_request.synchronize'"),
    ],
)
def test_a_name_github_never_sends_says_what_it_sends_instead(name: str, hint: str) -> None:
    with pytest.raises(UnknownEventError, match=re.escape(hint)):

        class Bot(InstallationActor):
            @on(name)
            async def handle(self, event: Event) -> None: ...


def test_an_every_handler_is_checked_as_an_on_handler_is() -> None:
    with pytest.raises(UsageError, match=r"@every.*handler sweep must be an async def"):

        class Plain(InstallationActor):
            @every("1h")
            def sweep(self, event: Event) -> None: ...

    with pytest.raises(UsageError, match=r"@every.*handler sweep must take \(self, event\)"):

        class NoEvent(InstallationActor):
            @every("1h")
            async def sweep(self) -> None: ...


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("ordering", "repositroy", "ordering='repositroy'"),  # was ordered per issue
        ("max_attempts", "3", "whole numbers"),  # was a TypeError
        ("max_concurrency", 2.5, "whole numbers"),
        ("max_attempts", 0, "whole numbers"),
    ],
)
def test_a_class_setting_out_of_its_values_is_refused(
    setting: str, value: Any, message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        type("Bot", (InstallationActor,), {setting: value})


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("state", "the runtime sets self.state on every instance"),
        ("github", "the runtime sets self.github on every instance"),
        ("quota", "the runtime sets self.quota on every instance"),
        ("installation_id", "the runtime sets self.installation_id on every instance"),
        ("config", "it would hide InstallationActor.config"),
        ("emit", "it would hide InstallationActor.emit"),
        ("on_error", "it would hide InstallationActor.on_error"),
        ("run_handler", "it would hide InstallationActor.run_handler"),
        ("ordering", "it would hide InstallationActor.ordering"),
    ],
)
def test_a_handler_named_as_what_the_runtime_uses_is_refused_where_it_is_defined(
    name: str, says: str
) -> None:
    """`@on(...) async def state(...)` was accepted: `__init__` set `self.state` over it
    and every delivery failed with `TypeError` and was dead-lettered; `github` was
    overwritten when the installation started; `config`, `emit` and the like silently
    replaced the base methods."""

    async def handler(self: Any, event: Event) -> None: ...

    for mark in (on("issues.opened"), every("1h")):
        with pytest.raises(UsageError, match=re.escape(f"Bot.{name}: a handler may not be")) as e:
            type("Bot", (InstallationActor,), {name: mark(handler)})
        assert says in str(e.value) and "rename it" in str(e.value)


def test_a_handler_of_another_name_overriding_a_bots_handler_is_still_accepted() -> None:
    class Base(InstallationActor):
        @on("issues.opened")
        async def welcome(self, event: Event) -> None: ...

    class Bot(Base):
        @on("issues.opened")
        async def welcome(self, event: Event) -> None: ...

    assert Bot.handlers_for("issues.opened", "issues") == ("welcome",)
