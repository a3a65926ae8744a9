"""`ghbot receive`: one delivery through a bot in-process, the requests it made printed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from actors import InstallationActor, on
from ghbot import cli
from ghbot.events import Event
from ghbot.models import IssuesClosed
from ghbot.testing import example_payload


class SaysItsInstallation(InstallationActor):
    @on("issues.opened")
    async def say(self, event: Event) -> None:
        await self.github.request(
            "POST",
            f"/repos/{event.repository.full_name}/issues/1/comments",  # type: ignore[union-attr]
            json={"body": f"installation {self.installation_id}"},
        )


def test_an_example_delivery_prints_its_requests_and_domain_events(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["receive", "issues.opened", "--bot", "examples.greeter:Greeter"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("delivery ") and out[0].endswith("(issues.opened): accepted")
    assert out[1] == (
        "  POST /repos/Codertocat/Hello-World/issues/1/comments"
        ' {"body": "Thanks for opening this issue, @Codertocat!"}'
    )
    assert out[2] == "  domain event Greeted(repository='Codertocat/Hello-World', number=1)"


def test_a_payload_file_brings_its_own_repository_and_installation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = example_payload("pull_request.opened", installation=42, number=6)
    data["pull_request"]["number"] = 6
    data["repository"].update(full_name="me/bot-test", name="bot-test")
    data["repository"]["owner"]["login"] = "me"
    file = tmp_path / "pr.json"
    file.write_text(json.dumps(data))
    argv = ["receive", "pull_request", str(file), "--bot", "examples.greeter:Greeter"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert '  POST /repos/me/bot-test/issues/6/labels {"labels": ["needs-review"]}' in out


def test_a_payload_file_without_an_installation_gets_the_one_asked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # As repository webhooks' examples: no `installation`; `--installation` adds one.
    data = example_payload("issues.opened")
    del data["installation"]
    file = tmp_path / "issue.json"
    file.write_text(json.dumps(data))
    bot = "tests.runtime.test_receive:SaysItsInstallation"
    assert cli.main(["receive", "issues", str(file), "--bot", bot, "--installation", "7"]) == 0
    out = capsys.readouterr().out
    said = '{"body": "installation 7"}'
    assert f"  POST /repos/Codertocat/Hello-World/issues/1/comments {said}" in out


class SaysClosed(InstallationActor):
    @on("issues.closed")
    async def say(self, event: Event[IssuesClosed]) -> None:
        number, state = event.payload.issue.number, event.payload.issue.state
        path = f"/repos/Codertocat/Hello-World/issues/{number}/comments"
        await self.github.request("POST", path, json={"body": f"closed, state {state}"})


def test_an_action_without_an_example_gets_its_siblings_and_says_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No example of `issues.closed` ships (62 of GitHub's 261 events and actions
    have one): it stopped with "no example payload 'issues.closed'"."""
    bot = "tests.runtime.test_receive:SaysClosed"
    assert cli.main(["receive", "issues.closed", "--bot", bot]) == 0
    out, err = capsys.readouterr()
    said = '{"body": "closed, state open"}'  # the action replaced, nothing else
    assert f"  POST /repos/Codertocat/Hello-World/issues/1/comments {said}" in out
    assert (
        err
        == "ghbot: no example payload of issues.closed: issues.assigned's, with action 'closed'\n"
    )


def test_a_dead_letter_is_printed_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["receive", "issues.opened", "--bot", "tests.runtime.test_harness:Flaky"]
    assert cli.main(argv) == 1
    out = capsys.readouterr().out
    assert "  no request to GitHub" in out
    assert "  dead letter: fail after 4 attempts: RuntimeError: always" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["receive", "issues.opened"], "which bot? pass --bot"),
        (["receive", "issues.opened", "--bot", "nowhere:Bot"], "cannot import 'nowhere'"),
        (["receive", "issues.opend", "--bot", "examples.greeter:Greeter"], "no example payload"),
    ],
)
def test_mistakes_are_one_line_and_exit_2(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GHBOT_BOT", raising=False)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("ghbot: error: ") and message in err and err.count("\n") == 1


NAME_ERROR = """from actors import InstallationActor


LABELS = [labl for labl in ("bug",)]
print(LABELS, lable)
"""

MISTYPED_EVENT = """from actors import InstallationActor, on
from ghbot.events import Event


class Bot(InstallationActor):
    @on("issues.opend")
    async def welcome(self, event: Event) -> None:
        pass
"""


LIBRARY_ERROR = """import json

from actors import InstallationActor

DEFAULTS = json.loads("{")
"""

IMPORT_ERROR = """from actors import InstallationActor

from os import nothing_of_that_name
"""


@pytest.mark.parametrize(
    ("source", "line", "error"),
    [
        (NAME_ERROR, 5, "NameError"),
        (MISTYPED_EVENT, 6, "UnknownEventError"),  # raised in ghbot, from the bot's line 6
        (LIBRARY_ERROR, 5, "JSONDecodeError"),  # raised in the standard library, from line 5
    ],
)
def test_an_error_importing_the_bot_names_its_file_and_line(
    source: str,
    line: int,
    error: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """It said `importing 'brokenbot' raised NameError: name 'lable' is not defined`:
    which file, which line?"""
    err = _receive_with_bot(source, tmp_path, monkeypatch, capsys)
    assert f"raised {error} at {tmp_path / 'brokenbot.py'}:{line}: " in err


def test_an_import_error_inside_the_bot_names_its_line_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _receive_with_bot(IMPORT_ERROR, tmp_path, monkeypatch, capsys)
    assert f"cannot import 'brokenbot' at {tmp_path / 'brokenbot.py'}:3 (" in err


def _receive_with_bot(
    source: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> str:
    """Run `ghbot receive` with `source` as the bot's module, which fails to import;
    return its one line of error, checked to be one line without a traceback."""
    (tmp_path / "brokenbot.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the command puts the directory in
    monkeypatch.delitem(sys.modules, "brokenbot", raising=False)
    assert cli.main(["receive", "issues.opened", "--bot", "brokenbot:Bot"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def test_a_file_that_is_not_json_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "broken.json"
    file.write_text("{not json")
    assert cli.main(["receive", "issues", str(file), "--bot", "examples.greeter:Greeter"]) == 2
    assert "is not JSON" in capsys.readouterr().err
