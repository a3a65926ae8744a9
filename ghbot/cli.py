"""The `ghbot` command line: one subcommand per registered `Command`.

Add a subcommand by registering a `Command` (a name, a help line, a function that adds
its arguments and one that runs it and returns the exit code). Errors ghbot raises
(`GhBotError`) and OS errors (a port in use, a missing file) print their message (one
line; a `ConfigError` of several problems, a line each), without a traceback, and exit
with code 2.

This module holds the SDK's own commands: `new` (a bot project) and `fake-github` (a
fake GitHub API for development). Other packages plug theirs in through the
`ghbot.cli` entry point group: a module named there registers its commands when it is
imported. ghbot's actor framework plugs in two: `actors.cli` (`register`, `dev`,
`receive`: a bot of the current directory, without Ray) and `actors.ray.cli`
(`status`, `dead-letters`, `redeliver`, `stop`, `journal`: a deployment, over Ray;
`serve-env`: the Serve settings to start Ray with). Loading them imports no Ray; a
cluster command imports it when it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ghbot import __version__
from ghbot.digits import whole_number
from ghbot.errors import ConfigError, GhBotError, UsageError

__all__ = ["PLUGINS", "Command", "build_parser", "main", "register"]


@dataclass(frozen=True, slots=True)
class Command:
    """A subcommand: `configure` adds its arguments, `run` does the work."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


_COMMANDS: dict[str, Command] = {}


def register(command: Command) -> Command:
    """Add `command` to the CLI; raise `UsageError` when the name is taken."""
    if command.name in _COMMANDS:
        raise UsageError(f"a ghbot command named {command.name!r} exists already")
    _COMMANDS[command.name] = command
    return command


#: The entry point group of the packages that add commands (see the module's docstring).
PLUGINS = "ghbot.cli"
_loaded = False


def _load_plugins() -> None:
    """Import every module of the `ghbot.cli` entry point group, once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    from importlib.metadata import entry_points

    for entry in entry_points(group=PLUGINS):
        try:
            entry.load()
        except Exception as exc:  # a broken plugin must not take `ghbot` down with it
            print(f"ghbot: warning: commands of {entry.value} not loaded: {exc}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    """Return the parser with every registered subcommand, plugins' included."""
    _load_plugins()
    parser = argparse.ArgumentParser(prog="ghbot", description="A framework for GitHub Apps.")
    parser.add_argument("--version", action="version", version=f"ghbot {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in _COMMANDS.values():
        sub = subparsers.add_parser(command.name, help=command.help, description=command.help)
        command.configure(sub)
        sub.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (2 for a usage or setup error)."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except (GhBotError, OSError) as exc:
        print(f"ghbot: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return code


# --- ghbot fake-github ----------------------------------------------------------------


def _fake_github_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    add("--port", type=port, default=9900, help="port to listen on; 0 picks a free one")
    add("--app-id", type=int, help="the app's ID (default: GITHUB_APP_ID, else 1)")
    add("--client-id", default=os.environ.get("GITHUB_CLIENT_ID") or None)
    add(
        "--public-key",
        type=Path,
        help="the app's public key, or its private key, as a PEM file; "
        "without one, JWT signatures are not checked",
    )
    add(
        "--installation",
        action="append",
        default=[],
        metavar="ID=OWNER/REPO[,REPO…]",
        help="install the app (repeatable), e.g. 1=octo-org/hello-world",
    )
    add("--rate-limit", type=int, default=5000, help="hourly core limit per installation")
    add("--max-concurrent", type=int, default=100, help="concurrent requests before 403")
    add("--webhook-url", help="where redeliveries are sent")
    add("--webhook-secret", default=os.environ.get("GITHUB_WEBHOOK_SECRET") or None)
    add("--print-tokens", action="store_true", help="print a token for each installation")
    add(
        "--token-lifetime",
        type=positive_seconds,
        default=3600.0,
        metavar="SECONDS",
        help="how long installation tokens last (GitHub's: 3600)",
    )
    add(
        "--latency",
        type=_not_negative,
        default=0.0,
        metavar="SECONDS",
        help="answer every request this much later (default 0)",
    )


def _run_fake_github(args: argparse.Namespace) -> int:
    from ghbot.testing import FakeGitHub

    installations = [_installation(spec) for spec in args.installation]
    fake = FakeGitHub(
        app_id=args.app_id or _app_id_from_env(),
        client_id=args.client_id,
        public_key_pem=_public_key(args.public_key) if args.public_key else None,
        host=args.host,
        port=args.port,
        rate_limit=args.rate_limit,
        max_concurrent=args.max_concurrent or None,
        webhook_url=args.webhook_url,
        webhook_secret=args.webhook_secret,
        token_lifetime=args.token_lifetime,
    )
    for installation_id, owner, repos in installations:
        fake.add_installation(installation_id, owner, repos)
    if args.latency:
        fake.faults.add(".", "slow", count=None, delay=args.latency)

    async def serve() -> None:
        async with fake:
            print(f"fake GitHub listening on {fake.url}", flush=True)
            if args.public_key is None:
                print("warning: no --public-key: JWT signatures are not checked", flush=True)
            for installation_id, owner, _ in installations:
                token = fake.create_token(installation_id) if args.print_tokens else "-"
                print(f"installation {installation_id} ({owner}) token {token}", flush=True)
            await asyncio.Event().wait()

    asyncio.run(serve())
    return 0


def positive_seconds(text: str) -> float:
    """An argparse type: a positive, finite number of seconds."""
    value = _not_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def port(text: str) -> int:
    """An argparse type: a TCP port, 0 to 65535 (0: any free one)."""
    number = whole_number(text)
    if number is None or number > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0 to 65535)")
    return number


def _not_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds")
    return value


def _app_id_from_env() -> int:
    raw = os.environ.get("GITHUB_APP_ID", "").strip() or "1"
    if (app_id := whole_number(raw)) is None:
        raise ConfigError(f"GITHUB_APP_ID={raw!r} is not a number; pass --app-id")
    return app_id


def _installation(spec: str) -> tuple[int, str, list[str]]:
    ident, _, repos = spec.partition("=")
    names = [r.strip() for r in repos.split(",") if r.strip()]
    ident = ident.strip()
    installation_id = whole_number(ident)
    if installation_id is None or not names or "/" not in names[0]:
        raise ConfigError(f"--installation {spec!r}: expected ID=OWNER/REPO[,REPO…]")
    owner = names[0].split("/", 1)[0]
    return installation_id, owner, [n if "/" in n else f"{owner}/{n}" for n in names]


def _public_key(path: Path) -> bytes:
    """Read a public key PEM, or derive it from a private key PEM."""
    from cryptography.hazmat.primitives import serialization

    from ghbot.auth import load_private_key

    pem = path.read_bytes()
    if b"PRIVATE KEY" in pem:
        return (
            load_private_key(pem)
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    try:
        serialization.load_pem_public_key(pem)
    except ValueError:
        raise ConfigError(f"{path} is not a PEM public or private key") from None
    return pem


register(
    Command(
        "fake-github",
        "Run a fake GitHub API (REST, GraphQL, app auth, deliveries) for local development.",
        _fake_github_arguments,
        _run_fake_github,
    )
)


# --- ghbot new --------------------------------------------------------------------------


def _new_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the project's name, e.g. my-bot (package my_bot)")
    parser.add_argument(
        "--dir", type=Path, default=Path("."), help="where to create it (default: here)"
    )


def _run_new(args: argparse.Namespace) -> int:
    from ghbot.scaffold import new_project, package_name

    root = new_project(args.name, args.dir)
    package = package_name(args.name)
    print(f"created {root}: {package}/bot.py, tests/test_bot.py, pyproject.toml, README.md")
    # Into this environment, which holds ghbot: a new one would look for ghbot on PyPI,
    # where a package of that name is another project (the requirement refuses it).
    python = shlex.quote(sys.executable)
    print("next, in this environment (it holds ghbot):")
    print(f"  cd {shlex.quote(str(root))}")
    print(f"  {python} -m pip install -e '.[dev]' && {python} -m pytest")
    return 0


register(
    Command(
        "new",
        "Create a bot project (a bot, its tests, pyproject.toml) whose tests pass at once.",
        _new_arguments,
        _run_new,
    )
)


if __name__ == "__main__":
    # `python -m ghbot.cli`: run the imported module, where plugins register their commands.
    from ghbot.cli import main as imported_main

    sys.exit(imported_main())
