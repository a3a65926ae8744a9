"""`ghbot new NAME`: write a bot project whose own tests pass at once, without Ray.

The project: a typed bot class, a test of it through `actors.testing.BotHarness`, a
`pyproject.toml` depending on ghbot, `.env.example`, `.gitignore` and a README with the
next steps. Nothing is written over: an existing non-empty directory is refused.
"""

from __future__ import annotations

import importlib.metadata
import keyword
import re
import sys
from pathlib import Path
from typing import Final

from ghbot import __version__
from ghbot.errors import UsageError

__all__ = ["new_project", "package_name", "requirement"]

#: A PEP 508 project name that is also a package once `-` is `_`: `my-bot`, `bot2`.
_NAME: Final = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-_][A-Za-z0-9]+)*$")


def package_name(name: str) -> str:
    """Return the Python package for project `name` (`my-bot` is `my_bot`).

    Raises `UsageError` for a name that cannot be a project and a package.
    """
    if not _NAME.match(name):
        raise UsageError(
            f"{name!r} cannot name a project: use letters, digits, '-' and '_', "
            "starting with a letter (e.g. my-bot)"
        )
    package = name.replace("-", "_").lower()
    taken = {"ghbot", "actors", "tests", "test", *sys.stdlib_module_names}
    if keyword.iskeyword(package) or package in taken:
        raise UsageError(f"{name!r} would be the package {package!r}, which is taken")
    if package in importlib.metadata.packages_distributions():
        raise UsageError(
            f"{name!r} would be the package {package!r}, which is taken: an installed "
            "package (msgspec, ray, ...) imports by that name, and the project would hide it"
        )
    return package


def new_project(name: str, parent: Path) -> Path:
    """Write the project `name` under `parent`; return its directory.

    Raises `UsageError` when the name is not usable or the directory exists and is not
    empty.
    """
    package = package_name(name)
    root = parent / name
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise UsageError(f"{root} exists and is not empty; choose another name or place")
    cls = "".join(part.capitalize() for part in re.split(r"[-_]", name) if part)
    if cls in _TEMPLATE_NAMES:
        cls += "Bot"  # `ghbot new welcomed`: the bot class would hide the event's
    files = {
        "pyproject.toml": _PYPROJECT,
        "README.md": _README,
        ".env.example": _ENV,
        ".gitignore": _GITIGNORE,
        f"{package}/__init__.py": '"""{name}: a GitHub App built with ghbot."""\n',
        f"{package}/bot.py": _BOT,
        "tests/__init__.py": "",
        "tests/test_bot.py": _TEST,
    }
    for relative, template in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            template.replace("{name}", name)
            .replace("{package}", package)
            .replace("{cls}", cls)
            .replace("{requirement}", requirement(__version__))
        )
    return root


def requirement(version: str) -> str:
    """Return the project's requirement on ghbot `version`: this release series only.

    `ghbot>=0.1.0.dev0,<0.2` for 0.1.0.dev0 (`<2` for 1.x). The package named `ghbot`
    on PyPI is another project (its one release, 0.9.5); a requirement with no upper
    bound would let pip install it where this ghbot is not installed, and the bound
    makes pip refuse instead.
    """
    found = re.match(r"(\d+)\.(\d+)", version)
    if found is None:
        raise ValueError(f"{version!r} is not a release version")
    major, minor = int(found[1]), int(found[2])
    # Before 1.0 a minor release may break; from 1.0 only a major one (SemVer).
    below = f"{major}.{minor + 1}" if major == 0 else str(major + 1)
    return f"ghbot>={version},<{below}"


#: Names the generated modules define or import: a bot class so named would hide one.
_TEMPLATE_NAMES: Final = frozenset(
    {"Welcomed", "Event", "InstallationActor", "IssuesOpened", "BotHarness"}
)

_PYPROJECT = """\
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "{name}"
version = "0.1.0"
description = "A GitHub App built with ghbot."
requires-python = ">=3.11"
dependencies = ["{requirement}", "msgspec>=0.18"]

[project.optional-dependencies]
dev = ["pytest>=8", "pytest-asyncio>=0.24", "mypy>=1.10"]

[tool.setuptools.packages.find]
include = ["{package}*"]

[tool.pytest.ini_options]
testpaths = ["tests"]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "function"

[tool.mypy]
strict = true
files = ["{package}", "tests"]

# Libraries ghbot uses that ship no types (its PostgreSQL journal's driver, Ray).
[[tool.mypy.overrides]]
module = ["asyncpg.*", "ray.*"]
ignore_missing_imports = true
"""

_BOT = '''"""{cls}: welcomes new issues and counts them, per repository."""

from __future__ import annotations

import msgspec

from actors import InstallationActor, on
from ghbot.events import Event
from ghbot.models import IssuesOpened


class Welcomed(msgspec.Struct, frozen=True):
    """A domain event: the bot welcomed issue `number` of `repository`."""

    repository: str
    number: int


class {cls}(InstallationActor):
    """Thank whoever opens an issue; keep a count per repository in `self.state`."""

    permissions = {"issues": "write"}  # for `ghbot register`: it comments on issues
    domain_events = (Welcomed,)
    state_type = dict[str, int]

    def initial_state(self) -> dict[str, int]:
        return {}

    def evolve(self, state: dict[str, int], event: msgspec.Struct) -> dict[str, int]:
        if isinstance(event, Welcomed):
            return {**state, event.repository: state.get(event.repository, 0) + 1}
        return state

    @on("issues.opened")
    async def welcome(self, event: Event[IssuesOpened]) -> None:
        author = event.payload.sender.login
        await self.github.rest.issues.create_comment(
            **event.issue(), body=f"Thanks for opening this issue, @{author}!"
        )
        repository = event.payload.repository.full_name
        self.emit(Welcomed(repository=repository, number=event.payload.issue.number))
'''

_TEST = '''"""{cls}'s handlers, run in-process against a fake GitHub (no Ray)."""

from __future__ import annotations

from actors.testing import BotHarness
from {package}.bot import {cls}, Welcomed

ISSUES = "/repos/Codertocat/Hello-World/issues"


async def test_a_new_issue_is_welcomed_and_counted() -> None:
    async with BotHarness({cls}) as bot:
        done = await bot.deliver("issues.opened", issue__number=3)
        [comment] = done.requests_to(f"{ISSUES}/3/comments", "POST")
        assert comment.json["body"] == "Thanks for opening this issue, @Codertocat!"
        assert done.domain_events == [Welcomed(repository="Codertocat/Hello-World", number=3)]
        assert await bot.state() == {"Codertocat/Hello-World": 1}


async def test_other_events_are_left_alone() -> None:
    async with BotHarness({cls}) as bot:
        done = await bot.deliver("issues.edited")
        assert done.requests == [] and done.dead_letters == []  # not even a failed try
'''

_ENV = """\
# Copy to .env and fill in from your GitHub App's settings page. Never commit .env.
GITHUB_APP_ID=
# The private key you downloaded: a path to the .pem file (or its PEM text).
GITHUB_PRIVATE_KEY=./private-key.pem
GITHUB_WEBHOOK_SECRET=
"""

_GITIGNORE = """\
.env
*.pem
data/
__pycache__/
.venv/
*.egg-info/
.mypy_cache/
.pytest_cache/
"""

_README = """\
# {name}

A GitHub App built with ghbot.

## Next steps

1. Install it with its test tools into the environment that holds ghbot (installed
   from ghbot's repository: the package named `ghbot` on PyPI is another project,
   which `pyproject.toml`'s requirement excludes, so in a new environment pip stops
   with "No matching distribution found for ghbot"), and run its tests (in-process,
   no Ray, a fake GitHub; a few seconds), and type-check it (`mypy --strict`, on the
   package and its tests):

   ```sh
   pip install -e '.[dev]'
   pytest
   mypy
   ```

2. Try a delivery by hand: `ghbot receive issues.opened --bot {package}.bot:{cls}`
   prints what the bot asks of GitHub.
3. Edit `{package}/bot.py`: each `@on("event.action")` handler gets a typed event
   (`Event[IssuesOpened]`) and calls GitHub through `self.github.rest`.
4. Register its GitHub App: `ghbot register --bot {package}.bot:{cls} --name "{name}"
   --webhook-url https://smee.io/YOUR-CHANNEL` opens GitHub in the browser with the
   App's manifest (the events your handlers take, the permissions they need) and writes
   the App's ID, key and webhook secret to `.env`. (Or register it by hand on GitHub's
   settings page and fill in a copy of `.env.example`.)
5. Try it against real webhooks on this machine (a [smee.io](https://smee.io) channel
   as the App's webhook URL; `.env` is loaded, code changes restart it):
   `ghbot dev --bot {package}.bot:{cls} --proxy https://smee.io/YOUR-CHANNEL`
6. Deploy it, with the variables of `.env` in the environment:

   ```sh
   set -a && . ./.env && set +a
   serve run ghbot.deploy bot={package}.bot:{cls}
   ```
"""
