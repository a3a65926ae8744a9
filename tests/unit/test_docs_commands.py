"""The README and docs name only `ghbot` commands, subcommands and options that exist.

Every `ghbot ...` command line in a code block or an inline code span of README.md and
docs/*.md (the runbooks among them) is looked up in the CLI's parser, its plugins'
commands loaded: the command, its subcommand where it has some, and each `--option`.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from ghbot import cli

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_BLOCK = re.compile(r"```[^\n]*\n(.*?)```", re.S)
_INLINE = re.compile(r"`([^`\n]+)`")
# A command starts a snippet, or follows a prompt or a shell operator.
_COMMAND = re.compile(r"(?:^|&&|;|\||\$)\s*ghbot\s+([a-z][a-z-]*)((?:[ \t]+[^\s#;&|]+)*)")


def command_lines() -> Iterator[tuple[str, str, list[str]]]:
    """Yield (document, command, its words) for every `ghbot` command line in the docs."""
    for doc in DOCS:
        text = doc.read_text()
        snippets = [line for block in _BLOCK.findall(text) for line in block.splitlines()]
        snippets += _INLINE.findall(_BLOCK.sub("", text))
        for snippet in snippets:
            for match in _COMMAND.finditer(snippet):
                yield doc.name, match.group(1), match.group(2).split()


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_the_docs_name_ghbot_commands() -> None:
    found = list(command_lines())
    names = {command for _, command, _ in found}
    # The runbooks' commands, at least: if this fails, the extraction broke.
    assert {"stop", "status", "redeliver", "dead-letters", "journal", "new", "dev"} <= names


@pytest.mark.parametrize(("doc", "command", "words"), list(command_lines()))
def test_each_documented_command_exists(doc: str, command: str, words: list[str]) -> None:
    commands = _subparsers(cli.build_parser())
    assert command in commands, f"{doc} names `ghbot {command}`, which does not exist"
    parser = commands[command]
    subcommands = _subparsers(parser)
    if subcommands and words and not words[0].startswith("-"):
        assert words[0] in subcommands, f"{doc}: `ghbot {command} {words[0]}` does not exist"
        parser = subcommands[words[0]]
    for word in words:
        if word.startswith("--"):
            option = word.split("=", 1)[0]
            assert option in parser._option_string_actions, (
                f"{doc}: `ghbot {command}` has no option {option}"
            )


def test_a_made_up_command_or_option_would_be_caught() -> None:
    commands = _subparsers(cli.build_parser())
    assert "restart" not in commands
    assert "--to" in _subparsers(commands["journal"])["reshard"]._option_string_actions
    assert "--nope" not in commands["stop"]._option_string_actions
